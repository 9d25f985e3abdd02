"""The worker's one transactional producer: every partition's batch of a cycle in one transaction.

Kafka Streams' exactly_once_v2 (KIP-447): one producer per worker process, its transactional id
stable per worker instance (a restart fences its predecessor and aborts what it left open at
once), and the commands' offsets sent with the consumer's group metadata, so a zombie (a worker
that lost its partitions while paused) is fenced by the group generation: its offsets are
refused and its transaction aborts. Everything here runs on the worker's Kafka thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from kes.schemas.errors import KesError
from kes.streams.config.settings import Guarantee, Settings
from kes.streams.cycle.entity import Entity
from kes.streams.cycle.records import CHECKPOINT_KEY, OutRecord, encode_checkpoint
from kes.streams.cycle.result import BatchResult, outcome_records, reply_records
from kes.streams.cycle.snapshotpolicy import EVENTS_FROM_HEADER
from kes.streams.kafka.config import confluent_config
from kes.topology.layout import AggregateTopics

__all__ = [
    "CycleAbortedError",
    "FatalKafkaError",
    "PartitionWork",
    "TransactionalWriter",
    "produce_waiting",
]

log = logging.getLogger(__name__)


class CycleAbortedError(KesError):
    """The cycle's transaction was aborted (a stale generation, a broker failover): rewind, redo."""


class FatalKafkaError(KesError):
    """The producer cannot go on (fenced by a newer instance, or an error with no recovery)."""


@dataclass
class PartitionWork:
    """One partition's decided batch, and what writing it produced for the local store."""

    topics: AggregateTopics
    partition: int
    result: BatchResult
    snapshots: dict[str, bytes | None] = field(default_factory=dict)
    """Changelog records written (snapshots, outcomes; None: a removed outcome), for the local
    store after the commit."""
    changelog_offset: int = -1
    """The changelog offset of the batch's checkpoint record, once delivered."""

    @property
    def next_offset(self) -> TopicPartition:
        """The group's offset to commit for this partition: its next command."""
        return TopicPartition(self.topics.commands, self.partition, self.result.next_command_offset)


def produce_waiting(producer: Producer, record: OutRecord, **options: Any) -> None:
    """Send one record, waiting while the producer's queue is full; `options` go to `produce`
    (`on_delivery`, and `value=None` for a tombstone)."""
    kwargs = {"value": record.value, "headers": cast(Any, record.headers) or None, **options}
    while True:
        try:
            producer.produce(record.topic, key=record.key, partition=record.partition, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def _events_from(offset: int) -> list[tuple[str, bytes]]:
    """A checkpoint record's headers: the events low-water, when there is one."""
    return [(EVENTS_FROM_HEADER, str(offset).encode())] if offset >= 0 else []


class _Delivery:
    """Delivery reports of one cycle: the first error, and the offsets asked for."""

    def __init__(self) -> None:
        self.error: KafkaError | None = None
        self.pending = 0

    def track(self, slot: list[int] | None = None, index: int = 0) -> Callable[..., None]:
        """A delivery callback for one record; with `slot`, it stores the record's offset."""
        self.pending += 1

        def done(error: KafkaError | None, message: Message) -> None:
            self.pending -= 1
            if error is not None:
                self.error = self.error or error
            elif slot is not None:
                slot[index] = cast(int, message.offset())

        return done


def _raise_failed(delivery: _Delivery) -> None:
    """Raise the first failed delivery, or a time-out for reports still missing."""
    if delivery.error is not None or delivery.pending:
        raise KafkaException(delivery.error or KafkaError(KafkaError._TIMED_OUT))


class TransactionalWriter:
    """Writes a cycle's records: events, snapshots and checkpoints, replies, dead letters, forwards.

    With exactly-once, also the commands' next offsets, in the same transaction. With
    at-least-once there is no transaction: records are written in an order where a crash only
    repeats work (see `write`), and the engine commits the offsets after the local store.
    """

    def __init__(self, settings: Settings, transactional_id: str) -> None:
        self.settings = settings
        self.exactly_once = settings.guarantee is Guarantee.EXACTLY_ONCE
        self.timeout = settings.transaction_timeout_ms / 1000
        config: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
            "batch.size": 1024 * 1024,
            # Records are checked against settings.max_record_bytes before they get here.
            "message.max.bytes": max(1_048_576, settings.max_record_bytes + 65_536),
            "client.id": transactional_id,
        }
        if self.exactly_once:
            config["transactional.id"] = transactional_id
            config["transaction.timeout.ms"] = settings.transaction_timeout_ms
        self.producer = Producer(confluent_config(settings, **config))
        self._beside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kes-offsets")

    def start(self) -> None:
        """Fence an older instance of this worker and abort what it left open."""
        if self.exactly_once:
            self._call(self.producer.init_transactions, self.timeout)

    def write(self, work: Sequence[PartitionWork], group_metadata: Callable[[], Any]) -> None:
        """Write one cycle; on return it is committed (each work's changelog offset is set).

        1. begin the transaction;
        2. send every partition's events, dead letters, forwarded commands, new data keys and
           erasure markers (keys topic), then the tombstones of erased entities' events (after
           every event of the partition's batch) and of its expired or erased outcomes, and the
           snapshots of entities that existed before the batch (those the snapshot policy
           leaves unlogged go to the local store only; an erasure marker never does);
           exactly-once: add every partition's next
           command offset to the transaction with the consumer's group metadata (fetched now:
           a zombie's stale generation is refused there), on a second thread, so those round
           trips to the coordinators overlap the records' delivery;
        3. only if a batch needs the events' offsets (a new entity's snapshot records its first
           event's offset; replies and kept outcomes carry them; the snapshot policy's tails
           start at them), wait for them, then send those snapshots, the replies and the
           outcomes;
        4. send each partition's checkpoint record (next command offset, owning group, and the
           events low-water as a header when some entity has unsnapshotted events: see
           kes.streams.cycle.snapshotpolicy), its batch's last changelog record;
        5. exactly-once: once the offsets are in, commit: all of it becomes visible to
           read_committed readers at once;
           at-least-once: wait until every record is written (the engine commits the offsets
           after the local store, so a crash only repeats).
        Raises CycleAbortedError when the transaction was aborted (nothing of it is visible),
        FatalKafkaError when this producer must not go on.
        """
        producer = self.producer
        delivery = _Delivery()

        # Exactly-once: a failed delivery fails the commit, so only the records whose offsets
        # are needed get a delivery callback. At-least-once: every record does.
        def every() -> Callable[..., None] | None:
            return None if self.exactly_once else delivery.track()

        offsets_sent: Future[Any] | None = None
        try:
            if self.exactly_once:
                producer.begin_transaction()
            offsets_needed = False
            event_offsets: list[list[int]] = []
            for item in work:
                result = item.result
                needs = result.needs_offsets
                offsets_needed |= needs
                slots = [-1] * len(result.events) if needs else []
                event_offsets.append(slots)
                for i, record in enumerate(result.events):
                    self._produce(record, delivery.track(slots, i) if needs else every())
                for record in (*result.dead_letters, *result.forwards, *result.keys):
                    self._produce(record, every())
                for record in result.tombstones:
                    self._produce(record, every(), tombstone=True)
                for key in result.expired:
                    item.snapshots[key] = None
                    tombstone = OutRecord(
                        item.topics.snapshots, item.partition, key.encode(), b"", []
                    )
                    self._produce(tombstone, every(), tombstone=True)
                for entity_id, entity in result.changed.items():
                    if entity_id not in result.first_events:
                        self._snapshot(item, entity_id, entity, every)
            if self.exactly_once:  # two round trips to the coordinators, beside the records'
                offsets_sent = self._beside.submit(
                    self._call,
                    producer.send_offsets_to_transaction,
                    [i.next_offset for i in work],
                    group_metadata(),
                    self.timeout,
                )
            if offsets_needed:
                self._flush(delivery)
                for item, offsets in zip(work, event_offsets, strict=True):
                    result = item.result
                    for entity_id, index in result.first_events.items():
                        entity = result.changed[entity_id]
                        entity.first_event_offset = offsets[index]
                        self._snapshot(item, entity_id, entity, every)
                    topics = item.topics
                    for reply in reply_records(result, offsets, topics.replies, item.partition):
                        self._produce(reply, every())
                    for outcome in outcome_records(result, topics.snapshots, item.partition):
                        item.snapshots[outcome.key.decode()] = outcome.value
                        self._produce(outcome, every())
            checkpoints = [-1] * len(work)
            for i, item in enumerate(work):
                result = item.result
                result.settle(event_offsets[i])
                value = encode_checkpoint(result.next_command_offset, self.settings.group_id)
                headers = _events_from(result.events_from)
                record = OutRecord(
                    item.topics.snapshots, item.partition, CHECKPOINT_KEY, value, headers
                )
                self._produce(record, delivery.track(checkpoints, i))
            if offsets_sent is not None:
                offsets_sent.result()
                self._call(producer.commit_transaction, self.timeout)
                producer.poll(0)  # the checkpoints' delivery reports
                _raise_failed(delivery)
            else:
                self._flush(delivery)
        except KafkaException as exc:
            if offsets_sent is not None:
                wait([offsets_sent])  # no transactional call may still run when aborting
            self._failed(exc)
        for item, offset in zip(work, checkpoints, strict=True):
            item.changelog_offset = offset

    def _failed(self, exc: KafkaException) -> None:
        """Abort on any error that is not fatal: aborting is always safe, and an abort that
        fails means the producer is unusable (fatal)."""
        error: KafkaError = exc.args[0]
        if error.fatal():
            raise FatalKafkaError(f"the producer cannot go on: {error}") from exc
        if self.exactly_once:
            self.abort()
        raise CycleAbortedError(f"the cycle's transaction was aborted: {error}") from exc

    def abort(self) -> None:
        """Abort the open transaction, if any (errors here mean the producer is unusable)."""
        try:
            self.producer.abort_transaction(self.timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError._STATE:  # no transaction was open
                return
            raise FatalKafkaError(f"could not abort the transaction: {error}") from exc

    def _snapshot(
        self,
        item: PartitionWork,
        entity_id: str,
        entity: Entity,
        every: Callable[[], Callable[..., None] | None],
    ) -> None:
        """An entity's snapshot: kept for the local store, and sent to the changelog unless the
        snapshot policy leaves it unlogged this batch."""
        value = item.snapshots[entity_id] = entity.snapshot().SerializeToString()
        if entity_id not in item.result.unlogged:
            record = OutRecord(item.topics.snapshots, item.partition, entity_id.encode(), value, [])
            self._produce(record, every())

    def _produce(
        self,
        record: OutRecord,
        on_delivery: Callable[..., None] | None,
        *,
        tombstone: bool = False,
    ) -> None:
        """Send one record (a tombstone: no value at all), waiting while the queue is full."""
        if tombstone:
            produce_waiting(self.producer, record, value=None, on_delivery=on_delivery)
        else:
            produce_waiting(self.producer, record, on_delivery=on_delivery)

    def _flush(self, delivery: _Delivery) -> None:
        deadline = time.monotonic() + self.timeout
        while delivery.pending and time.monotonic() < deadline:
            self.producer.flush(min(1.0, self.timeout))
        _raise_failed(delivery)

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call a transactional API, retrying what librdkafka calls retriable."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return method(*args)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if not error.retriable() or time.monotonic() > deadline:
                    raise
                log.warning("%s: %s; retrying", getattr(method, "__name__", method), error)
                time.sleep(0.1)

    def close(self) -> None:
        """Abort an open transaction and flush: the worker stops writing."""
        if self.exactly_once:
            try:
                self.abort()
            except FatalKafkaError as exc:
                log.warning("abort on close: %s", exc)
        self.producer.flush(5)
