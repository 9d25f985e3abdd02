"""The process runner: one process manager as a consumer group, exactly once per cycle.

Per runner process: ONE consumer in the group `<prefix><name>` subscribed to the process's
sources (the events topics of its aggregates, the replies topics of the aggregates it commands)
and to its inbox `<prefix><name>.inbox`; ONE transactional producer (id stable per instance,
kept in the data dir, as the worker's). Two jobs share each cycle:

- routing: an event or a rejection for a process goes to the inbox partition of its process
  id (murmur2), so every input of one process meets on one partition, whoever owns the source;
- driving: per inbox partition it owns, the runner keeps each process's record (RocksDB, a cache
  of the compacted changelog `<prefix><name>.state`, exactly as a worker keeps snapshots:
  kes.streams.runtime.recovery restores it on assignment) and runs `advance` per input and per due
  timer.

A cycle:
 1. poll a batch (waits only when nothing has arrived);
 2. route source records into inbox records; advance each inbox record's process;
 3. if the poll drained every assigned partition up to the end its fetches have seen, fire the
    timers due by the clock (a timer is an input like an event, and fires only after the
    answers that have already arrived, from this runner's sources at least);
 4. write in ONE transaction (see `ProcessWriter.write_cycle`): inbox records, commands, process
    records with a checkpoint per inbox partition, and every consumed offset with the group's
    metadata (a zombie is fenced there, as a worker is);
 5. committed: the local stores and caches move forward; aborted: rewind to the cycle's first
    offsets and forget its work, so the same inputs are handled again.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from kes.schemas.codec import REPLY_PARTITION_HEADER, encode_command, new_command
from kes.schemas.errors import SchemaVersionError, TopologyError
from kes.schemas.kes.v1.processes_pb2 import RUNNING, ProcessInput, ProcessRecord
from kes.stores.snapshots import Checkpoint, PartitionSnapshots, RocksDBSnapshotStore
from kes.streams.config.instance import instance_id
from kes.streams.config.settings import Settings
from kes.streams.core.adapters import EventAdapters
from kes.streams.cycle.records import CHECKPOINT_KEY, OutRecord, encode_checkpoint
from kes.streams.kafka.config import confluent_config
from kes.streams.processes.advance import Advanced, Fired, advance, route_event, route_reply
from kes.streams.processes.process import (
    PROCESS_ID_KEY,
    PROCESS_KEY,
    STEP_KEY,
    ProcessManager,
    command_id,
)
from kes.streams.processes.topics import ProcessTopics
from kes.streams.processes.writer import ProcessWriter
from kes.streams.runtime.recovery import RecoveryRequest, recover
from kes.streams.runtime.transaction import CycleAbortedError
from kes.topology.admin import apply
from kes.topology.partitioning import partition_for

__all__ = ["ProcessRunner", "RunnerStats", "wall_clock_ms"]

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """The runner's default clock: milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass
class RunnerStats:
    """Counts since the runner started."""

    cycles: int = 0
    routed: int = 0
    """Events and rejections put in the inbox."""
    inputs: int = 0
    """Inbox records and timers handled."""
    timers: int = 0
    commands: int = 0
    aborted: int = 0
    ignored: int = 0


@dataclass
class _Partition:
    """One inbox partition this runner drives: its store, committed records and due timers."""

    number: int
    store: PartitionSnapshots
    next_offset: int
    cache: dict[str, ProcessRecord] = field(default_factory=dict)
    timers: list[tuple[int, str, str]] = field(default_factory=list)
    """A heap of (due ms, process id, timer name); entries no longer pending are skipped."""

    def load(self, process_id: str) -> ProcessRecord | None:
        found = self.cache.get(process_id)
        if found is None:
            raw = self.store.get(process_id)
            if raw is not None:
                found = self.cache[process_id] = ProcessRecord.FromString(raw)
        return found

    def schedule(self, record: ProcessRecord) -> None:
        if record.status == RUNNING:
            for timer in record.timers:
                heapq.heappush(self.timers, (timer.due_ms, record.process_id, timer.name))


@dataclass
class _Work:
    """What one cycle writes."""

    records: list[OutRecord] = field(default_factory=list)
    changed: dict[int, dict[str, ProcessRecord]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    first: dict[tuple[str, int], int] = field(default_factory=dict)
    fired: list[tuple[int, tuple[int, str, str]]] = field(default_factory=list)
    """Timers taken off the heaps this cycle: put back if the transaction aborts."""


class ProcessRunner:
    """Runs one process manager in this process: `start`, then `poll` (or `run`), then `close`.

    `clock` is the time (ms since the epoch) timers are checked against and handlers see.
    """

    def __init__(
        self,
        process: ProcessManager[Any],
        settings: Settings,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        max_batch: int = 2_000,
        adapters: EventAdapters | None = None,
        versions: Mapping[str, int] | None = None,
    ) -> None:
        self.process = process
        self.adapters = adapters
        """The app's event adapters: old event types are routed and handled as current ones."""
        self.versions = versions
        """The declared event versions: a newer event stops the runner (SchemaVersionError)."""
        self.topics = ProcessTopics.of(process, settings)
        self.settings = replace(settings, app_id=self.topics.group)
        """Settings under the process's group: recovery reads its offsets and checkpoints."""
        self.clock = clock
        self.stats = RunnerStats()
        self._max_batch = max_batch
        self._sources = self.topics.sources()
        self._store = RocksDBSnapshotStore(settings.data_dir / "processes" / self.topics.group)
        self._owned: dict[int, _Partition] = {}
        self._at_end: set[tuple[str, int]] = set()
        """Assigned partitions whose last event was the end of the partition (read to its end;
        nothing delivered since)."""
        self._consumer: Any = None
        self._writer: ProcessWriter | None = None

    def start(self) -> None:
        """Create the inbox and state topics if missing, fence older instances, join the group."""
        result = apply(self.topics.specs(), confluent_config(self.settings))
        if result.problems:
            raise TopologyError(result.problems)
        settings = self.settings
        transactional_id = f"{self.topics.group}-{instance_id(settings.data_dir)}"
        self._writer = ProcessWriter(settings, transactional_id)
        self._writer.start()
        self._consumer = Consumer(
            confluent_config(
                settings,
                **{
                    "group.id": self.topics.group,
                    "group.instance.id": transactional_id,
                    "client.id": transactional_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,  # see _caught_up
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": settings.session_timeout_ms,
                    "heartbeat.interval.ms": max(100, settings.session_timeout_ms // 5),
                },
            )
        )
        topics = [*self._sources, self.topics.inbox]
        self._consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked)

    # -- assignment ------------------------------------------------------------------------

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Recover the assigned inbox partitions' records from the changelog, then start each
        at its checkpoint; source partitions start at the group's committed offsets."""
        mine = [tp.partition for tp in partitions if tp.topic == self.topics.inbox]
        requests = [
            RecoveryRequest(
                self.topics.inbox,
                self.topics.state,
                p,
                self._store.partition(self.topics.state, p),
            )
            for p in mine
        ]
        timeout = self.settings.transaction_timeout_ms / 1000
        asyncio.run(recover(self.settings, requests, timeout))
        for request in requests:
            checkpoint = request.checkpoint or Checkpoint()
            start = checkpoint.next_command_offset
            if start < 0:
                start = request.committed
            part = _Partition(request.partition, request.store, start)
            for _, value in request.store.items():
                part.schedule(ProcessRecord.FromString(value))
            self._owned[request.partition] = part
        self._at_end -= {(tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:
            if tp.topic == self.topics.inbox:
                offset = self._owned[tp.partition].next_offset
                tp.offset = offset if offset >= 0 else OFFSET_BEGINNING
        consumer.assign(partitions)
        log.info("%s: assigned %s", self.topics.group, [(t.topic, t.partition) for t in partitions])

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._at_end.clear()  # every partition is unassigned below
        for tp in partitions:
            if tp.topic == self.topics.inbox and self._owned.pop(tp.partition, None) is not None:
                self._store.release(self.topics.state, tp.partition)
        consumer.unassign()

    # -- the cycle -------------------------------------------------------------------------

    def poll(self, timeout: float = 0.2) -> int:
        """Run one cycle; returns the records and timers it handled."""
        consumer = self._consumer
        assert consumer is not None and self._writer is not None, "start the runner first"
        messages = []
        first = consumer.poll(timeout)
        if first is not None:
            messages = [first, *consumer.consume(self._max_batch - 1, 0)]
        now = self.clock()
        work = _Work()
        handled = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add((message.topic(), message.partition()))
                else:
                    log.warning("%s: %s", self.topics.group, error.str())
                continue
            handled += 1
            where = (message.topic(), message.partition())
            self._at_end.discard(where)
            if message.topic() == self.topics.inbox:
                if message.partition() not in self._owned:
                    continue
                item = ProcessInput.FromString(message.value() or b"")
                self._advance(work, message.partition(), item, now)
            else:
                try:
                    self._route(work, message.topic(), message.value())
                except SchemaVersionError as exc:  # nothing of this cycle is written
                    at = f"{message.topic()}[{message.partition()}]@{message.offset()}"
                    raise SchemaVersionError(f"{at}: {exc}") from None
            work.first.setdefault(where, message.offset())
            work.offsets[where] = message.offset() + 1
        if len(messages) < self._max_batch and self._timers_due(now) and self._caught_up():
            self._fire_timers(work, now)
        if work.offsets or work.changed:
            self._write(work)
        self.stats.cycles += 1
        return handled

    def _route(self, work: _Work, topic: str, value: bytes | None) -> None:
        kind, aggregate = self._sources[topic]
        if kind == "event":
            item = route_event(self.process, value, self.adapters, self.versions)
        else:
            item = route_reply(self.process, aggregate, value)
        if item is None:
            return
        partition = partition_for(item.process_id, self.topics.partitions)
        key = item.process_id.encode()
        work.records.append(
            OutRecord(self.topics.inbox, partition, key, item.SerializeToString(), [])
        )
        self.stats.routed += 1

    def _current(self, work: _Work, partition: int, process_id: str) -> ProcessRecord | None:
        changed = work.changed.get(partition, {})
        if process_id in changed:
            return changed[process_id]
        return self._owned[partition].load(process_id)

    def _advance(
        self, work: _Work, partition: int, item: ProcessInput | Fired, now: int, pid: str = ""
    ) -> Advanced:
        process_id = pid or (item.process_id if isinstance(item, ProcessInput) else "")
        done = advance(self.process, self._current(work, partition, process_id), item, now)
        self.stats.inputs += 1
        if done.record is None:
            self.stats.ignored += 1
            log.debug("%s %s: input ignored: %s", self.process.name, process_id, done.note)
            return done
        if done.note == "failed":
            log.error("%s %s failed: %s", self.process.name, process_id, done.record.error)
        work.changed.setdefault(partition, {})[process_id] = done.record
        for send in done.sends:
            work.records.append(self._command(process_id, send))
        return done

    def _command(self, process_id: str, send: Any) -> OutRecord:
        """The command record of one step, to its entity's partition, asking for its reply on
        the replies partition of the process id (the runner reads every replies partition)."""
        topics = self.settings.topics(send.aggregate)
        env = new_command(
            send.entity_id,
            send.command,
            aggregate=send.aggregate,
            command_id=command_id(self.process.name, process_id, send.step),
            reply_wanted=True,
            correlation_id=process_id,
            metadata={
                PROCESS_KEY: self.process.name,
                PROCESS_ID_KEY: process_id,
                STEP_KEY: send.step,
            },
        )
        value, headers = encode_command(env)
        reply_to = partition_for(process_id, topics.partitions)
        headers.append((REPLY_PARTITION_HEADER, str(reply_to).encode()))
        partition = partition_for(send.entity_id, topics.partitions)
        self.stats.commands += 1
        return OutRecord(topics.commands, partition, send.entity_id.encode(), value, headers)

    def _timers_due(self, now: int) -> bool:
        return any(p.timers and p.timers[0][0] <= now for p in self._owned.values())

    def _caught_up(self) -> bool:
        """Whether this runner has read every partition it is assigned (sources and inbox) up
        to the end its fetches have seen: a timer must not fire before an answer that has
        already arrived (read_committed: an open transaction holds it back, and so the timer).

        A partition is read to its end when the consumer said so (its end-of-partition event,
        with nothing delivered since) or its position has reached the end. The event is needed:
        after an assignment the position stays unknown until a record is delivered, so a
        partition whose committed offset is already its end (no trailing commit marker, as
        at-least-once workers write their events) would never count as read, and no timer
        would fire until a new record came on every such partition."""
        consumer = self._consumer
        for tp in consumer.position(consumer.assignment()):
            if (tp.topic, tp.partition) in self._at_end:
                continue
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            read = tp.offset >= 0 and 0 <= high <= tp.offset
            empty = tp.offset < 0 and high == low >= 0
            if not (read or empty):
                return False
        return True

    def _fire_timers(self, work: _Work, now: int) -> None:
        """Every pending timer due by `now`, once: a heap entry no longer pending (cancelled,
        moved, already fired) is dropped when it comes up."""
        for number, part in self._owned.items():
            while part.timers and part.timers[0][0] <= now:
                entry = heapq.heappop(part.timers)
                work.fired.append((number, entry))
                due, process_id, name = entry
                record = self._current(work, number, process_id)
                if record is None or record.status != RUNNING:
                    continue
                if not any(t.name == name and t.due_ms == due for t in record.timers):
                    continue
                self._advance(work, number, Fired(name), now, process_id)
                self.stats.timers += 1
                work.offsets.setdefault((self.topics.inbox, number), part.next_offset)

    def _write(self, work: _Work) -> None:
        """One transaction for the cycle; then the local stores, or a rewind if it aborted."""
        assert self._writer is not None
        group = self.topics.group
        records = list(work.records)
        checkpoints = []
        touched = sorted(
            {p for (t, p) in work.offsets if t == self.topics.inbox} | set(work.changed)
        )
        for number in touched:
            part = self._owned[number]
            for process_id, record in work.changed.get(number, {}).items():
                value = record.SerializeToString()
                records.append(OutRecord(self.topics.state, number, process_id.encode(), value, []))
            next_offset = work.offsets.get((self.topics.inbox, number), part.next_offset)
            value = encode_checkpoint(next_offset, group)
            checkpoints.append(OutRecord(self.topics.state, number, CHECKPOINT_KEY, value, []))
        offsets = [TopicPartition(t, p, o) for (t, p), o in work.offsets.items() if o >= 0]
        try:
            written = self._writer.write_cycle(
                records, checkpoints, offsets, self._consumer.consumer_group_metadata
            )
        except CycleAbortedError as exc:
            log.warning("%s; rewinding", exc)
            self.stats.aborted += 1
            for number, entry in work.fired:
                if number in self._owned:
                    heapq.heappush(self._owned[number].timers, entry)
            for (topic, partition), offset in work.first.items():
                self._at_end.discard((topic, partition))
                try:
                    self._consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException as error:  # no longer assigned: its next owner reads it
                    log.info("%s[%d]: not rewound: %s", topic, partition, error)
            return
        for number, changelog_offset in zip(touched, written, strict=True):
            owned = self._owned.get(number)
            if owned is None:
                continue
            part = owned
            changed = work.changed.get(number, {})
            part.next_offset = work.offsets.get((self.topics.inbox, number), part.next_offset)
            part.store.write(
                {pid: r.SerializeToString() for pid, r in changed.items()},
                Checkpoint(changelog_offset, part.next_offset, group),
            )
            for record in changed.values():
                part.cache[record.process_id] = record
                part.schedule(record)

    # -- views (read from another thread: never the consumer, never a cache write) ---------

    @property
    def started(self) -> bool:
        """Whether the runner has joined its group (and not closed since)."""
        return self._consumer is not None

    def partitions(self) -> list[int]:
        """The inbox partitions this runner drives now."""
        return sorted(self._owned)

    def records(self) -> Iterator[ProcessRecord]:
        """The committed record of every process on the inbox partitions driven here."""
        for part in list(self._owned.values()):
            for _, value in part.store.items():
                yield ProcessRecord.FromString(value)

    def record(self, process_id: str) -> ProcessRecord | None:
        """The committed record of `process_id`, if its inbox partition is driven here."""
        part = self._owned.get(partition_for(process_id, self.topics.partitions))
        if part is None:
            return None
        found = part.cache.get(process_id)
        if found is not None:
            return found
        raw = part.store.get(process_id)
        return None if raw is None else ProcessRecord.FromString(raw)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Start, then run cycles until `stop` is set (forever without one); then close."""
        stop = stop or threading.Event()
        self.start()
        try:
            while not stop.is_set():
                self.poll()
        finally:
            self.close()

    def close(self) -> None:
        """Leave the group, abort an open transaction, close the stores."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._store.close()
