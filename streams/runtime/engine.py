"""The worker's Kafka side: one consumer, one transactional producer, and the cycle between them.

Kafka Streams' exactly_once_v2 (KIP-447) in Python. Per worker process:
- ONE confluent-kafka consumer of every commands topic (read_committed, so an aborted command
  is never read; no auto commit; cooperative-sticky assignment; a stable group.instance.id);
- ONE transactional producer whose transactional id is stable per worker instance (persisted in
  the data dir), so a restarted worker fences its predecessor and aborts what it left open;
- ONE thread that makes every call on both (librdkafka's rebalance callbacks run on it, inside
  `poll`, and only between transactions: a rebalance never meets an open transaction).

A cycle:
 1. poll what has arrived (waits only when nothing has; batches grow with load);
 2. apply the rebalance the poll reported: revoked partitions close, assigned ones start
    recovering (paused until recovered, then resumed at their checkpoint);
 3. hand each ready partition's slice to its actor (kes.streams.runtime.actors), which decides it;
 4. write every partition's records and offsets in ONE transaction
 (kes.streams.runtime.transaction);
 5. committed: each partition's local store and cache move forward; aborted (a stale
    generation, a broker failover): each partition forgets its decisions and is rewound to the
    first offset of the cycle, so the same commands are decided again.
Fatal errors (fenced, unclassified) end the process with exit code 70, as a SIGKILL would; a
cycle that outlives the transaction timeout (librdkafka can hang in a transactional call) is
ended the same way by a watchdog.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from faust.types import TP

from kes.schemas.errors import (
    CommandGapError,
    CommandsDeletedError,
    CommandsTruncatedError,
    ConfigurationError,
    DurableStateError,
    GapUnreadError,
    KeyUnavailableError,
    OwnershipError,
    SchemaVersionError,
    TopologyError,
)
from kes.schemas.personal import has_personal
from kes.stores.snapshots import Checkpoint, RocksDBSnapshotStore
from kes.streams.config.durablestate import layout_of
from kes.streams.config.instance import instance_id
from kes.streams.config.settings import Guarantee, Settings
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.behavior import Behavior
from kes.streams.core.keyring import DataKeys
from kes.streams.cycle.idempotency import OutcomePolicy
from kes.streams.cycle.records import CommandRecord
from kes.streams.cycle.result import BatchResult
from kes.streams.cycle.snapshotpolicy import TailIndex, interval_for
from kes.streams.kafka.config import confluent_config
from kes.streams.kafka.keyreader import keyring_for
from kes.streams.runtime.actors import PartitionActors
from kes.streams.runtime.gaps import GapReader
from kes.streams.runtime.processor import PartitionProcessor
from kes.streams.runtime.rebuild import needs_rebuild, rebuild_partition
from kes.streams.runtime.recovery import RecoveryRequest, recover
from kes.streams.runtime.tailfold import fold_tail
from kes.streams.runtime.transaction import (
    CycleAbortedError,
    FatalKafkaError,
    PartitionWork,
    TransactionalWriter,
)
from kes.streams.telemetry.tracing import transaction_span
from kes.topology.layout import AggregateTopics

__all__ = ["EXIT_BATCH_FAILED", "EXIT_CONFIGURATION", "CycleStats", "Engine"]

log = logging.getLogger(__name__)

T = TypeVar("T")

EXIT_BATCH_FAILED = 70
"""Exit code of a worker that stopped because a cycle could not be committed (EX_SOFTWARE)."""

EXIT_CONFIGURATION = 78
"""Exit code of a worker that refused to run as configured (EX_CONFIG): see the log's reason."""

_EMPTY_READY_SECONDS = 3.0
"""How long an empty assignment must last before a worker without partitions calls itself ready."""

_POLL_SECONDS = 0.1
"""How long one poll waits when nothing has arrived (how soon a recovered partition resumes)."""

_SEEK_WARN_SECONDS = 30.0
"""How long a recovered partition may wait to be sought before each warning."""

_IDLE_SECONDS = 1.0
"""How long the Kafka thread polls on its own before the cycle looks around (watchdog, stop)."""


def stop_now(message: str, exc: BaseException | None, code: int = EXIT_BATCH_FAILED) -> NoReturn:
    """End the process at once, as a SIGKILL would: the next owner redoes the open cycle."""
    log.critical("%s; stopping the worker (exit %d)", message, code, exc_info=exc)
    logging.shutdown()
    os._exit(code)


def _refusal(tp: TP, exc: BaseException) -> str:
    """Why a partition cannot run with this code (a stored state it cannot load)."""
    return f"refusing to run {tp.topic}[{tp.partition}]: {exc}"


@dataclass
class CycleStats:
    """Counters of the worker's cycles since it started."""

    cycles: int = 0
    transactions: int = 0
    aborted: int = 0


class Engine:
    """Runs the cycle for a worker's aggregates; `processors` shows each owned partition."""

    def __init__(
        self,
        settings: Settings,
        behaviors: dict[str, Behavior[Any]],
        actors: PartitionActors,
        store: RocksDBSnapshotStore,
        client_id: str,
        adapters: EventAdapters | None = None,
    ) -> None:
        self.settings = settings
        self.adapters = adapters
        """The app's event adapters: a rebuild from the events folds old shapes through them."""
        layouts = {n: layout_of(settings, b) for n, b in behaviors.items()}
        self._by_topic = {layouts[n].commands: (b, layouts[n]) for n, b in behaviors.items()}
        self.actors = actors
        self.store = store
        master = settings.master()
        self.keys = DataKeys(master) if master is not None else None
        """Entities' data keys, for aggregates with personal fields (one bounded cache)."""
        for behavior in behaviors.values():  # refuse now, not at the first partition
            behavior.check_state_migrations()  # not at the first old snapshot either
            if self.keys is None and has_personal([behavior.state_type, *behavior.event_types]):
                raise KeyUnavailableError(
                    f"aggregate {behavior.name!r} has personal fields and no master key is "
                    "configured: set KES_MASTER_KEY or KES_MASTER_KEY_FILE (docs/security.md)"
                )
            every = interval_for(behavior, settings.snapshot_every)
            if every > 1 and settings.guarantee is not Guarantee.EXACTLY_ONCE:
                raise ConfigurationError(
                    f"aggregate {behavior.name!r} snapshots every {every} events, which needs the "
                    "exactly_once guarantee (recovery folds events only up to the checkpoint "
                    "written in the same transaction)"
                )
        self.instance = instance_id(settings.data_dir)
        self.transactional_id = f"{settings.group_id}-{self.instance}"
        self._span_name = f"transaction {settings.group_id}"
        self.client_id = client_id
        self.processors: dict[TP, asyncio.Future[PartitionProcessor]] = {}
        """Each owned partition; its future resolves once the partition has recovered."""
        self._ready: dict[TP, PartitionProcessor] = {}
        self._rebalances: list[tuple[str, list[TP]]] = []
        """Filled by the rebalance callbacks on the Kafka thread, drained by the cycle."""
        self._resume: list[TopicPartition] = []
        """Recovered partitions to seek and resume, on the Kafka thread before its next poll."""
        self._resume_lock = threading.Lock()
        self._seek_waits: dict[tuple[str, int], float] = {}
        self._recovering = 0
        self._rebalanced_at = 0.0
        self._tasks: set[asyncio.Future[None]] = set()
        self.assigned_once = False
        self.stats = CycleStats()
        self.on_committed: list[Callable[[Sequence[PartitionWork], float], None]] = []
        """Called after each committed cycle with its work and the time its records arrived."""
        self.gaps = GapReader(settings)
        """One kept reader for the partitions' gap checks (kes.streams.runtime.gaps)."""
        self._kafka = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kes-kafka")
        self._consumer: Consumer | None = None
        self._writer: TransactionalWriter | None = None
        self._busy_since = 0.0
        self._running = False
        self._done: asyncio.Future[None] | None = None

    # -- the Kafka thread ------------------------------------------------------------------

    async def _on_kafka(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._kafka, fn, *args)

    def _open(self) -> None:
        settings = self.settings
        self._writer = TransactionalWriter(settings, self.transactional_id)
        self._writer.start()
        self._consumer = Consumer(dict(self.consumer_config()))
        self._consumer.subscribe(
            sorted(self._by_topic),
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._revoked,
        )

    def consumer_config(self) -> dict[str, Any]:
        """The command consumer's configuration: the group, read_committed, and its protocol.

        `classic`: cooperative-sticky with static membership (`group.instance.id`), so a
        restarted worker takes its predecessor's place and partitions at once. `consumer`
        (KIP-848): the broker assigns (incrementally) and owns the session timeout and heartbeat,
        which librdkafka refuses client-side, as it refuses an assignment strategy. librdkafka
        2.16 accepts `group.instance.id` there, but the broker then refuses a restarted member
        its own id (UNRELEASED_INSTANCE_ID, fatal) until the old one's broker-side session
        (45 s by default) has expired, and holds a cleanly stopped member's partitions as long:
        without it, a stopped worker's partitions move at once and a restart joins at once.
        """
        settings = self.settings
        group: dict[str, Any] = {"group.protocol": "consumer"}
        if settings.group_protocol == "classic":
            group = {
                "group.instance.id": self.transactional_id,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(100, min(3000, settings.session_timeout_ms // 3)),
            }
        return confluent_config(
            settings,
            **{
                "group.id": settings.group_id,
                "client.id": self.client_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                **group,
                "fetch.wait.max.ms": 100,
                "error_cb": self._client_error,
            },
        )

    def _client_error(self, error: KafkaError) -> None:
        """librdkafka's errors, from its error callback or as poll's error events (Kafka thread).

        A fatal one (the static member was fenced by another instance with its id, say after a
        coordinator failover outlasted the session) leaves a consumer that never fetches again:
        stop, as a kill would, so a supervisor restarts the worker. Others are logged.
        """
        if error.fatal() or error.code() == KafkaError._FATAL:
            stop_now(f"the consumer cannot go on: {error}", None)
        log.warning("consumer: %s", error)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        if partitions:
            consumer.pause(partitions)
        self._rebalances.append(("assign", [TP(p.topic, p.partition) for p in partitions]))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalances.append(("revoke", [TP(p.topic, p.partition) for p in partitions]))

    def _poll(self) -> list[Message]:
        """What has arrived; while nothing does, wait here (not on the event loop) for up to
        `_IDLE_SECONDS`, returning early for a rebalance or a stop."""
        consumer = self._consumer
        assert consumer is not None
        idle_until = time.monotonic() + _IDLE_SECONDS
        while True:
            self._resume_recovered(consumer)
            first = consumer.poll(_POLL_SECONDS)
            if first is not None:
                break
            if self._rebalances or not self._running or time.monotonic() > idle_until:
                return []
        limit = self.settings.batch_max_commands
        messages = [first]
        if limit > 1:
            messages.extend(consumer.consume(limit - 1, 0))
        linger = self.settings.batch_max_ms / 1000
        if linger and len(messages) < limit:
            messages.extend(consumer.consume(limit - len(messages), linger))
        return messages

    def _resume_recovered(self, consumer: Consumer) -> None:
        """Seek each recovered partition to its checkpoint, then resume it.

        A seek fails ("erroneous state") while the consumer still waits for the partition's
        committed offset, which read_committed holds back while a predecessor's transaction
        has offsets pending: such a partition stays paused and is tried again at the next poll.
        One no longer assigned is dropped (its revocation is on its way).
        """
        if not self._resume:
            return
        with self._resume_lock:
            pending, self._resume = self._resume, []
        waiting: list[TopicPartition] = []
        assigned: set[tuple[str, int]] | None = None
        for tp in pending:
            try:
                consumer.seek(tp)
            except KafkaException as exc:
                if assigned is None:
                    assigned = {(a.topic, a.partition) for a in consumer.assignment()}
                if (tp.topic, tp.partition) in assigned:
                    waiting.append(tp)
                    self._note_waiting(tp, exc)
                else:
                    log.info("%s[%d]: not resumed, no longer assigned", tp.topic, tp.partition)
                continue
            consumer.resume([TopicPartition(tp.topic, tp.partition)])
            self._seek_waits.pop((tp.topic, tp.partition), None)
        if waiting:
            with self._resume_lock:
                self._resume.extend(waiting)

    def _note_waiting(self, tp: TopicPartition, exc: KafkaException) -> None:
        key = (tp.topic, tp.partition)
        first = self._seek_waits.setdefault(key, time.monotonic())
        if time.monotonic() - first > _SEEK_WARN_SECONDS:
            log.warning("%s[%d]: still cannot seek to %d: %s", *key, tp.offset, exc.args[0])
            self._seek_waits[key] = time.monotonic()

    def _rewind(self, offsets: list[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp in offsets:
            try:
                consumer.seek(tp)
            except Exception as exc:  # no longer assigned: its next owner reads it
                log.info("%s[%d]: not rewound: %s", tp.topic, tp.partition, exc)

    def _commit_offsets(self, offsets: list[TopicPartition]) -> None:
        assert self._consumer is not None
        self._consumer.commit(offsets=offsets, asynchronous=False)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._consumer is not None:
            self._consumer.close()

    # -- the event loop ---------------------------------------------------------------------

    def clients(self) -> dict[str, int]:
        """The Kafka clients this worker holds now, by role."""
        return {
            "consumer": int(self._consumer is not None),
            "producer": int(self._writer is not None),
            "recovery": self._recovering,
        }

    def ready(self) -> bool:
        """True once the first assignment came and every owned partition has recovered.

        A worker given no partitions is ready only once its assignment has stayed empty for
        `_EMPTY_READY_SECONDS`: a cooperative rebalance gives a joining worker nothing in its
        first round and its partitions in a second one, moments later.
        """
        if not self.assigned_once:
            return False
        if not self.processors:
            return time.monotonic() - self._rebalanced_at > _EMPTY_READY_SECONDS
        return all(
            f.done() and not f.cancelled() and f.exception() is None
            for f in self.processors.values()
        )

    def topics_of(self, tp: TP) -> AggregateTopics:
        """The layout of the aggregate whose commands topic `tp` belongs to."""
        return self._by_topic[tp.topic][1]

    async def run(self) -> None:
        """Open the clients, then run cycles until `stop`; any unexpected failure exits 70."""
        self._running = True
        self._done = asyncio.get_running_loop().create_future()
        watchdog = asyncio.ensure_future(self._watchdog())
        try:
            await self._on_kafka(self._open)
            self.actors.resume()
            while self._running:
                await self._cycle()
        except Exception as exc:
            stop_now(f"the worker's cycle failed: {exc!r}", exc)
        finally:
            watchdog.cancel()
            if not self._done.done():
                self._done.set_result(None)

    async def stop(self) -> None:
        """Finish the current cycle, then close the clients (an open transaction is aborted)."""
        self._running = False
        if self._done is not None:
            await self._done
        for tp in list(self.processors):
            self._drop(tp)
        await self.gaps.close()
        await self._on_kafka(self._close)
        self._kafka.shutdown(wait=False)

    async def _watchdog(self) -> None:
        limit = self.settings.transaction_timeout_ms / 1000 + 10
        while True:
            await asyncio.sleep(1.0)
            busy = self._busy_since
            if busy and time.monotonic() - busy > limit:
                stop_now(f"a cycle's Kafka calls have not returned in {limit:.0f}s", None)

    async def _cycle(self) -> None:
        messages = await self._on_kafka(self._poll)
        arrived = time.monotonic()
        if self._rebalances:
            await self._rebalance()
        if not messages:
            return
        by_key: dict[tuple[Any, Any], list[CommandRecord]] = {}
        ready = self._ready  # keyed by TP, a named tuple: a plain (topic, partition) finds it
        for message in messages:
            error = message.error()
            if error is not None:
                self._message_error(error)
                continue
            key = (message.topic(), message.partition())
            if key in ready:  # else paused and recovering: it is re-read from its checkpoint
                records = by_key.get(key)
                if records is None:
                    records = by_key[key] = []
                records.append(
                    CommandRecord(
                        message.offset(),  # type: ignore[arg-type]
                        message.key(),
                        message.value(),
                        message.headers() or [],  # type: ignore[arg-type]
                        message.timestamp()[1],
                    )
                )
        if not by_key:
            return
        slices = {TP(*key): records for key, records in by_key.items()}
        self.stats.cycles += 1
        work = await self._decide(slices)
        if work:
            await self._write(work, slices, arrived)

    def _message_error(self, error: KafkaError) -> None:
        if error.code() != KafkaError._PARTITION_EOF:
            self._client_error(error)

    async def _decide(self, slices: dict[TP, list[CommandRecord]]) -> list[PartitionWork]:
        """Each partition's actor decides its slice; all run before anything is written."""
        futures = {
            tp: self.actors.submit(tp, partial(self._ready[tp].handle, records))
            for tp, records in slices.items()
        }
        work = []
        again = []
        for tp, future in futures.items():
            try:
                result: BatchResult | None = await future
            except GapUnreadError as exc:  # nothing decided: this slice is read again
                log.warning("%s", exc)
                again.append(TopicPartition(tp.topic, tp.partition, slices[tp][0].offset))
                continue
            except CommandGapError as exc:
                stop_now(str(exc), exc)
            except CommandsDeletedError as exc:  # an operator decides: kes skip-deleted
                stop_now(str(exc), None, EXIT_CONFIGURATION)
            except (SchemaVersionError, ConfigurationError) as exc:  # a snapshot this code
                stop_now(_refusal(tp, exc), None, EXIT_CONFIGURATION)  # cannot read: no retry
            if result is not None:
                processor = self._ready[tp]
                work.append(PartitionWork(processor.topics, tp.partition, result))
        if again:
            await self._on_kafka(self._rewind, again)
        return work

    async def _write(
        self, work: list[PartitionWork], slices: dict[TP, list[CommandRecord]], arrived: float
    ) -> None:
        assert self._consumer is not None and self._writer is not None
        consumer = self._consumer
        self._busy_since = time.monotonic()
        traced = [headers for item in work for headers in item.result.traces]
        try:
            with transaction_span(self._span_name, traced):
                await self._on_kafka(self._writer.write, work, consumer.consumer_group_metadata)
        except CycleAbortedError as exc:
            log.warning("%s; rewinding %d partitions", exc, len(slices))
            self.stats.aborted += 1
            for tp in slices:
                if tp in self._ready:
                    self._ready[tp].aborted()
            rewind = [
                TopicPartition(tp.topic, tp.partition, r[0].offset) for tp, r in slices.items()
            ]
            await self._on_kafka(self._rewind, rewind)
            return
        except FatalKafkaError as exc:
            stop_now(str(exc), exc)
        finally:
            self._busy_since = 0.0
        for item in work:
            tp = TP(item.topics.commands, item.partition)
            self._ready[tp].committed(item.result, item.snapshots, item.changelog_offset)
        self.stats.transactions += 1
        if self.settings.guarantee is Guarantee.AT_LEAST_ONCE:
            await self._on_kafka(self._commit_offsets, [i.next_offset for i in work])
        for hook in self.on_committed:
            hook(work, arrived)

    # -- rebalances -------------------------------------------------------------------------

    async def _rebalance(self) -> None:
        """Apply what the poll's rebalance callbacks reported, in order."""
        events, self._rebalances = self._rebalances, []
        self._rebalanced_at = time.monotonic()
        for kind, tps in events:
            if kind == "revoke":
                for tp in tps:
                    self._drop(tp)
                await self.actors.revoke([tp for tp in tps if tp.topic in self._by_topic])
            else:
                self.assigned_once = True
                mine = [
                    tp for tp in tps if tp.topic in self._by_topic and tp not in self.processors
                ]
                if mine:
                    await self.actors.assign(mine)
                    task = asyncio.ensure_future(self._recover(mine))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    def _drop(self, tp: TP) -> None:
        future = self.processors.pop(tp, None)
        processor = self._ready.pop(tp, None)
        if processor is not None:
            processor.close()
            self.store.release(self.topics_of(tp).snapshots, tp.partition)
        elif future is not None and not future.done():
            future.cancel()  # still recovering: its reader releases the store when it ends

    async def _rebuild(self, tp: TP, request: RecoveryRequest) -> None:
        """The changelog is behind the group's offset: rebuild the partition from its events."""
        behavior, topics = self._by_topic[tp.topic]
        settings = self.settings
        try:
            request.checkpoint = await asyncio.to_thread(
                rebuild_partition,
                behavior,
                topics,
                tp.partition,
                request.store,
                request.committed,
                group=settings.group_id,
                client_config=confluent_config(settings),
                adapters=self.adapters,
                recent_command_ids=settings.recent_command_ids,
                outcomes=OutcomePolicy(settings.outcome_horizon_s * 1000, settings.max_outcomes),
                keys=keyring_for(topics, confluent_config(settings), settings.master()),
            )
        except DurableStateError as exc:
            behind = f"{tp}: its changelog is behind the group's offset"
            stop_now(f"{behind}: {exc}", None, EXIT_CONFIGURATION)
        except (SchemaVersionError, ConfigurationError) as exc:  # an event this code cannot read
            stop_now(_refusal(tp, exc), None, EXIT_CONFIGURATION)
        except Exception as exc:
            stop_now(f"rebuilding {tp} from its events failed: {exc!r}", exc)

    async def _fold_tail(self, tp: TP, request: RecoveryRequest) -> TailIndex:
        """Fold the events the changelog's snapshots do not hold (kes.streams.runtime.tailfold); a
        read that fails (a broker restarting) is done again, as the fold is idempotent, for as long
        as recovery waits for committed offsets; a broken invariant (KesError) stops at once."""
        checkpoint = request.checkpoint or Checkpoint()
        if checkpoint.events_from < 0:
            return TailIndex()
        behavior, topics = self._by_topic[tp.topic]
        settings = self.settings
        deadline = time.monotonic() + 2 * settings.transaction_timeout_ms / 1000 + 60
        while True:
            try:
                return await asyncio.to_thread(
                    fold_tail,
                    behavior,
                    topics,
                    tp.partition,
                    request.store,
                    checkpoint,
                    confluent_config(settings),
                    adapters=self.adapters,
                    recent_command_ids=settings.recent_command_ids,
                    strict=settings.guarantee is Guarantee.EXACTLY_ONCE,
                    keys=self.keys,
                )
            except (KafkaException, TimeoutError, RuntimeError, TopologyError) as exc:
                if time.monotonic() > deadline:
                    stop_now(f"folding the events of {tp} failed: {exc!r}", exc)
                log.warning("%s: folding its events failed (%s); trying again", tp, exc)
                await asyncio.sleep(1.0)
            except (DurableStateError, SchemaVersionError, ConfigurationError) as exc:
                stop_now(_refusal(tp, exc), None, EXIT_CONFIGURATION)
            except Exception as exc:
                stop_now(f"folding the events of {tp} after its snapshots failed: {exc!r}", exc)

    async def _recover(self, tps: list[TP]) -> None:
        """Recover newly assigned partitions beside the cycle, then resume them at their
        checkpoints."""
        loop = asyncio.get_running_loop()
        began = time.monotonic()
        requests = []
        for tp in tps:
            self.processors[tp] = loop.create_future()
            topics = self.topics_of(tp)
            store = self.store.partition(topics.snapshots, tp.partition)
            requests.append(RecoveryRequest(tp.topic, topics.snapshots, tp.partition, store))
        self._recovering += 1
        try:
            await recover(self.settings, requests, self.settings.transaction_timeout_ms / 1000)
        except (OwnershipError, CommandsTruncatedError) as exc:
            stop_now(str(exc), None, EXIT_CONFIGURATION)
        except Exception as exc:
            stop_now(f"recovery of {tps} failed: {exc!r}", exc)
        finally:
            self._recovering -= 1
        folds = {}
        for tp, request in zip(tps, requests, strict=True):
            if needs_rebuild(request.checkpoint or Checkpoint(), request.committed):
                await self._rebuild(tp, request)
            else:
                folds[tp] = self._fold_tail(tp, request)
        tails = dict(zip(folds, await asyncio.gather(*folds.values()), strict=True))
        seconds = time.monotonic() - began
        for tp, request in zip(tps, requests, strict=True):
            future = self.processors.get(tp)
            if future is None or future.done():  # revoked while recovering
                if tp not in self.processors:
                    self.store.release(request.snapshots, tp.partition)
                continue
            behavior, topics = self._by_topic[tp.topic]
            processor = PartitionProcessor(
                behavior, topics, tp.partition, self.settings, request.store, self.keys, self.gaps
            )
            processor.recovered(request.checkpoint or Checkpoint(), seconds, tails.get(tp))
            self._ready[tp] = processor
            future.set_result(processor)
            start = processor.next_offset if processor.next_offset >= 0 else request.committed
            with self._resume_lock:
                self._resume.append(
                    TopicPartition(
                        tp.topic, tp.partition, start if start >= 0 else OFFSET_BEGINNING
                    )
                )
            log.info("%s: ready after %.2fs (next command offset %d)", tp, seconds, start)
