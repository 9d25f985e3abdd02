"""The projector: runs a projection or reactor as a member of its consumer group (confluent-kafka).

One consumer per process in the group `<prefix><name>`, reading the aggregates' events topics
with `isolation.level=read_committed`; start more processes to share the partitions. The read
model's store (kes.stores.readmodels) is the truth about progress: on assignment each partition is
sought to the offset stored *with the rows*, never to the group's committed offset, and the
group's offsets are committed to Kafka only after the local write, so lag tools see progress.

By default each process keeps its own store (`<data dir>/projections/<group>`), holding the
rows of the partitions it has applied: rows must derive from one partition's events (keyed by
entity), as the bank's balances are. A partition that moves to a process without its rows is
replayed there from the offset that process stored for it, or from the beginning. A PostgreSQL
read model (kes.streams.projections.readmodels) is shared: a partition that moves resumes where the
database says, and a process that lost a partition unawares cannot store over its successor's
progress.

Each poll is one batch and one atomic write: the store's `RowTransaction`, or a SQL
projection's database transaction, opened before the handlers run and committed with the
offsets.

A reactor is different: its effects are in the world, not in the store, so a process with no
local offsets (a fresh volume, another host) resumes from the group's committed offset in Kafka
(the later of the two when both exist), never from the beginning: at least once, not all again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)

from kes.schemas.codec import encode_dead_letter
from kes.schemas.errors import (
    BatchRedoError,
    ConfigurationError,
    KesError,
    ProjectionTimeoutError,
    TopologyError,
)
from kes.schemas.kes.v1.envelopes_pb2 import Reply
from kes.stores.sqlmodel import SqlReadModel
from kes.streams.config.settings import Settings
from kes.streams.core.adapters import EventAdapters
from kes.streams.kafka.config import confluent_config
from kes.streams.kafka.keyreader import keyring_for
from kes.streams.projections.projection import (
    AnyProjection,
    EventRecord,
    Reactor,
    StepResult,
    pending,
    project,
    targets,
)
from kes.streams.projections.readmodels import (
    AnyReadModel,
    check_read_model,
    open_read_model,
    store_path,
)
from kes.streams.projections.rows import BatchTransaction, RowTransaction
from kes.topology.admin import apply
from kes.topology.layout import TopicSpec

__all__ = ["Projector", "ProjectorStats", "store_path"]

log = logging.getLogger(__name__)

_DLQ_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
_FLUSH_SECONDS = 30.0


@dataclass
class ProjectorStats:
    """Counts since the projector started."""

    records: int = 0
    """Event records read (including skipped ones)."""
    applied: int = 0
    """Events a handler ran for successfully."""
    dead_letters: int = 0
    """Events sent to the dead-letter topic."""
    writes: int = 0
    """Atomic writes to the store."""
    batches: int = 0
    """Batches read and applied (`poll` calls that read events)."""
    batch_seconds: float = 0.0
    """Time spent applying and storing those batches, in all."""


class Projector:
    """Runs one projection in this process: `start`, then `poll` (or `run`), then `close`.

    `store` defaults to the read model the settings choose (kes.streams.projections.readmodels:
    RocksDB at `store_path(projection, settings)` unless PostgreSQL is configured), closed by
    `close`; a store passed in stays open. `adapters` upgrade old events before the handlers see
    them; `versions` (event type -> the schema version the app's behaviors declare,
    kes.streams.config.apps.event_versions) dead-letter the events newer than that.
    """

    def __init__(
        self,
        projection: AnyProjection,
        settings: Settings,
        *,
        store: AnyReadModel | None = None,
        adapters: EventAdapters | None = None,
        versions: Mapping[str, int] | None = None,
        max_batch: int = 5_000,
    ) -> None:
        self.projection = projection
        self.settings = settings
        self.group_id = projection.group_id(settings.topic_prefix)
        self.dlq_topic = projection.dlq_topic(settings.topic_prefix)
        self.topics = {a: settings.topics(a).events for a in projection.aggregates}
        self._keys = {  # per events topic: opens sealed personal fields for the handlers
            settings.topics(a).events: keyring_for(
                settings.topics(a), confluent_config(settings), settings.master()
            )
            for a in projection.aggregates
        }
        self.stats = ProjectorStats()
        self._owns_store = store is None
        self.store: AnyReadModel = store or open_read_model(projection, settings)
        check_read_model(projection, self.store)
        self._adapters = adapters
        self._versions = versions
        self._max_batch = max_batch
        self._changed = threading.Condition()
        self._offsets = self.store.offsets()
        self._lag: dict[tuple[str, int], int] = {}
        self._lag_due = 0.0
        self._consumer: Any = None
        self._producer: Any = None

    @property
    def started(self) -> bool:
        """Whether the projector has joined its group (and not closed since)."""
        return self._consumer is not None

    def start(self) -> None:
        """Create the dead-letter topic if it is missing, then join the consumer group."""
        dlq = TopicSpec(self.dlq_topic, 1, 1, _DLQ_CONFIG)
        result = apply([dlq], confluent_config(self.settings))
        if result.problems:
            raise TopologyError(result.problems)
        self._producer = Producer(confluent_config(self.settings, **{"enable.idempotence": True}))
        self._consumer = Consumer(
            confluent_config(
                self.settings,
                **{
                    "group.id": self.group_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": self.settings.session_timeout_ms,
                    "heartbeat.interval.ms": max(100, self.settings.session_timeout_ms // 5),
                    "on_commit": _on_commit,
                },
            )
        )
        self._consumer.subscribe(list(self.topics.values()), on_assign=self._on_assign)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Start each partition at the offset stored with the rows (the beginning if none); a
        reactor at the later of that and the group's committed offset. The offsets are read
        from the store again: a shared one may hold another process's progress."""
        stored = self.store.offsets()
        with self._changed:
            self._offsets = dict(stored)
        if isinstance(self.projection, Reactor) and partitions:
            for tp in consumer.committed(partitions, timeout=_FLUSH_SECONDS):
                where = (tp.topic, tp.partition)
                if tp.offset >= 0 and tp.offset > stored.get(where, -1):
                    stored[where] = tp.offset
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info(
            "%s: assigned %s",
            self.group_id,
            ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions) or "nothing",
        )

    def poll(self, timeout: float = 0.5) -> int:
        """Read one batch, apply and store it; returns the events read.

        The worker's cycle discipline: wait up to `timeout` seconds only when nothing has
        arrived, then take whatever else is already fetched (up to the batch limit), so
        batches grow with load and an idle projection adds no latency.
        """
        if self._consumer is None:
            raise ConfigurationError("start the projector before polling")
        try:
            return self._apply(self._consumer.poll(timeout))
        finally:
            self._measure_lag()

    def _apply(self, first: Any) -> int:
        records: list[EventRecord] = []
        ends: dict[tuple[str, int], int] = {}
        if first is None:
            return 0
        batch = [first]
        if self._max_batch > 1:
            batch += self._consumer.consume(self._max_batch - 1, 0)
        for record in batch:
            error = record.error()
            where = (record.topic(), record.partition())
            if error is None:
                records.append(
                    EventRecord(*where, record.offset(), record.key(), record.value(),
                                record.headers() or ())
                )  # fmt: skip
            elif error.code() == KafkaError._PARTITION_EOF:
                ends[where] = record.offset()  # the end (last stable offset): nothing below it left
            elif error.fatal():
                raise KesError(f"projection {self.group_id}: consumer failed: {error.str()}")
            else:
                log.warning("%s: %s", self.group_id, error.str())
        if not records and not ends:
            return 0
        began = time.monotonic()
        with self._changed:
            stored = dict(self._offsets)
        step = partial(
            project,
            self.projection,
            records,
            stored=stored,
            adapters=self._adapters,
            keys=self._keys,
            versions=self._versions,
        )
        transaction = self._begin()
        try:
            try:
                result = step(transaction)
            except BatchRedoError:  # a handler failed after writing: again, each event undoable
                transaction.close()
                transaction = self._begin(undoable=True)
                result = step(transaction)
            for where, end in ends.items():
                result.offsets[where] = max(end, result.offsets.get(where, 0))
            advanced = {w: o for w, o in result.offsets.items() if o > stored.get(w, -1)}
            self.stats.records += len(records)
            if advanced:
                self._write(result, transaction, advanced)
        finally:
            transaction.close()
        self.stats.batches += 1
        self.stats.batch_seconds += time.monotonic() - began
        return len(records)

    def _begin(self, *, undoable: bool = False) -> BatchTransaction:
        """The batch the handlers write through: a SQL transaction, or rows over the store."""
        if isinstance(self.store, SqlReadModel):
            return self.store.begin(undoable=undoable)
        return RowTransaction(self.store, strict=undoable)

    def _write(
        self,
        result: StepResult,
        transaction: BatchTransaction,
        offsets: dict[tuple[str, int], int],
    ) -> None:
        """Store one batch; a crash between any two steps loses nothing.

        1. Send the dead letters and wait until Kafka has them (a crash after this step sends
           them again on restart: at least once, never lost).
        2. Commit the batch: its writes and the offsets in one atomic write (a RocksDB write
           batch, or the database transaction the handlers ran in): the batch is applied.
        3. Tell `wait_for` callers about the new offsets.
        4. Commit the offsets to the group in Kafka, asynchronously: only for lag tools and
           `kes projection status`; a lost commit is repaired by the next one.
        """
        for key, letter in result.dead_letters:
            self._producer.produce(self.dlq_topic, encode_dead_letter(letter), key)
            log.warning(
                "%s: %s[%d]@%d dead-lettered (%s): %s",
                self.group_id, letter.topic, letter.partition, letter.offset, letter.reason,
                letter.error,
            )  # fmt: skip
        if result.dead_letters and self._producer.flush(_FLUSH_SECONDS) > 0:
            raise KesError(f"projection {self.group_id}: dead letters not delivered to Kafka")
        transaction.commit(offsets)
        self.stats.applied += result.applied
        self.stats.dead_letters += len(result.dead_letters)
        self.stats.writes += 1
        with self._changed:
            self._offsets.update(offsets)
            self._changed.notify_all()
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True
        )

    def run(self, stop: threading.Event | None = None) -> None:
        """Start, then apply batches until `stop` is set (forever without one); then close."""
        stop = stop or threading.Event()
        self.start()
        try:
            while not stop.is_set():
                self.poll()
        finally:
            self.close()

    def offsets(self) -> dict[tuple[str, int], int]:
        """The offsets applied and stored so far."""
        with self._changed:
            return dict(self._offsets)

    def lag(self) -> dict[tuple[str, int], int]:
        """Per partition assigned here: events in the log not applied yet, as of the last
        `poll` (at most a second old; the end of the log is what the last fetch saw)."""
        with self._changed:
            return dict(self._lag)

    def _measure_lag(self) -> None:
        """Refresh `lag()`, at most once a second, from the consumer's own thread (a call such
        as `assignment()` from another thread blocks while this one polls)."""
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + 1.0
        consumer = self._consumer
        ends = {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, cached=True)[1]
            for tp in consumer.assignment()
        }
        with self._changed:
            self._lag = {
                where: max(0, end - self._offsets.get(where, 0))
                for where, end in ends.items()
                if end >= 0
            }

    def wait_for(
        self,
        written: Mapping[int, int] | Reply,
        timeout: float = 30.0,
        *,
        aggregate: str | None = None,
    ) -> None:
        """Return once the projection has applied `written` (read-your-writes).

        `written` is a Reply (its accepted events) or `{partition: event offset}` of the events
        topic of `aggregate`, which may be left out when the projection reads one aggregate.
        Raises ProjectionTimeoutError after `timeout` seconds. Waits on this process's store,
        so call it where the projector runs (the partitions must be assigned here).
        """
        if aggregate is None and len(self.topics) != 1:
            raise ConfigurationError(
                f"projection {self.projection.name!r} reads {sorted(self.topics)}: "
                "pass aggregate= to wait_for"
            )
        if aggregate is not None and aggregate not in self.topics:
            raise ConfigurationError(
                f"projection {self.projection.name!r} does not read aggregate {aggregate!r}"
            )
        topic = (
            self.topics[aggregate] if aggregate is not None else next(iter(self.topics.values()))
        )
        wanted = targets(written, topic)
        deadline = time.monotonic() + timeout
        with self._changed:
            while left := pending(self._offsets, wanted):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProjectionTimeoutError(self.projection.name, left, timeout)
                self._changed.wait(remaining)

    def close(self) -> None:
        """Leave the group, flush the dead-letter producer, close the store if it is ours."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(_FLUSH_SECONDS)
            self._producer = None
        if self._owns_store:
            self.store.close()


def _on_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
    if error is not None and error.code() != KafkaError._NO_OFFSET:
        log.info("committing projection offsets to Kafka failed (the next commit repairs it): %s",
                 error.str())  # fmt: skip
