"""`kes topics migrate`: move an aggregate to a new topic set with another partition count.

The new set is the old one's topics under another prefix (`AggregateTopics.prefix`), created
with N partitions. Every entity's events are copied with their keys, values and headers
unchanged (plus a `kes-migrated-from` header), in revision order, to murmur2(entity) % N of the
new events topic; the snapshot changelog's latest snapshots and outcomes follow their entity,
rewritten where they name an offset of the old topics (streams.migration); each new partition
gets a fresh checkpoint (next command offset 0, the owning group), so a worker started on the new
set recovers those snapshots and takes commands from the first one. Commands are not copied
(every command of the old set is applied before the migration may run), nor are replies (read
within seconds) or dead letters (they name records of the old commands topic: redrive or read
them on the old set).

Restartable: the writes are Kafka transactions of a producer whose transactional id belongs to
the target, so a re-run fences an earlier run and aborts what it left open, reads what it
committed, and copies only the rest; no event key is committed twice. See `migrate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from schemas.codec import parse_event_key
from schemas.errors import MigrationError
from streams.batch import CHECKPOINT_KEY, OutRecord, encode_checkpoint
from streams.migration import (
    MIGRATED_FROM_HEADER,
    SourceState,
    TargetProgress,
    outcome_entity,
    rewrite_outcome,
    rewrite_snapshot,
)
from streams.transaction import produce_waiting
from streams.verify import read_records
from streams.watermarks import watermarks
from topology.admin import admin_result, apply, plan
from topology.layout import AggregateTopics
from topology.partitioning import partition_for

__all__ = ["Migration", "MigrationReport", "migrate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """What to migrate: the old set (its actual partition count) to the new one."""

    source: AggregateTopics
    target: AggregateTopics
    owner: str = ""
    """The consumer group (app id) of the workers on the new set; "" : the group the old set's
    checkpoints name."""
    chunk: int = 10_000
    """Records per transaction."""
    wait: float = 30.0
    """Seconds to wait for the old workers' group to empty and their transactions to close (a
    stopped static member stays in the group for its session timeout)."""
    timeout: float = 60.0

    @property
    def transactional_id(self) -> str:
        """Stable per target: a re-run fences the run before it."""
        return f"kes-migrate-{self.target.events}"


@dataclass
class MigrationReport:
    """What a migration found and wrote."""

    owner: str = ""
    entities: int = 0
    events: int = 0
    copied: int = 0
    """Events this run wrote; `events - copied` were committed by an earlier, interrupted run."""
    snapshots: int = 0
    outcomes: int = 0
    already_done: bool = False
    """The new set held its checkpoints already: nothing was written."""
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for a person."""
        if self.already_done:
            return "the migration was completed before: nothing to do"
        earlier = self.events - self.copied
        resumed = f" ({earlier} copied by an earlier run)" if earlier else ""
        return (
            f"{self.entities} entities: {self.events} events{resumed}, {self.snapshots} "
            f"snapshots, {self.outcomes} outcomes in {self.seconds:.1f}s; checkpoints name group "
            f"{self.owner!r}"
        )


def migrate(
    migration: Migration,
    client_config: Mapping[str, Any],
    progress: Callable[[str], None] = log.info,
) -> MigrationReport:
    """Move every entity's history and state from `migration.source` to `migration.target`.

    1. Check the layouts: the old set's commands, events and snapshots exist with one partition
       count; the new names differ from the old.
    2. If the new changelog holds a checkpoint on every partition, an earlier run completed
       (checkpoints are its last transaction): return, writing nothing.
    3. Refuse unless the old set is idle: the workers' group (every group its checkpoints name,
       and the new owner) has no members, no transaction is open on its topics, and every
       command on the old commands topic is applied.
    4. Create the new set (topology.admin.apply): N partitions per topic; an existing topic
       with another count is refused.
    5. Open the transactional producer: init_transactions fences an earlier run of this
       migration and aborts its open transaction, so the new set holds committed data only.
    6. Read the old changelog (latest record per key) and the old events (each entity's
       revisions 1, 2, 3, ... in log order); refuse if a snapshot does not match its events.
    7. Read the new events topic: what an earlier run committed (for each entity a prefix of
       its revisions, each transaction having written the entity's events in order).
    8. Copy the events not there yet, in the old partitions' offset order, to each entity's new
       partition, `chunk` records per transaction; each delivery report gives the event's new
       offset (first events and those outcomes name).
    9. Write each entity's snapshot and each outcome, rewritten for the new offsets, to the
       entity's new changelog partition, in transactions (a re-run writes them again, equal).
    10. Last, one transaction: a checkpoint record on every new changelog partition, next
        command offset 0 and the owning group. From here a worker may run on the new set.
    """
    began = time.monotonic()
    source, target = migration.source, migration.target
    config = dict(client_config)
    _check_layouts(source, target, config, migration.timeout)
    report = MigrationReport()
    if _completed(target, config):
        report.already_done = True
        return report
    owners = _old_owners(source, config)
    owner = migration.owner or _most_common(owners.values())
    if not owner:
        raise MigrationError(
            f"{source.snapshots} names no owning group (no checkpoint): say which with --app-id"
        )
    report.owner = owner
    _require_idle(migration, {*owners.values(), owner}, config, progress)
    progress(f"creating {target.prefix}{target.name}.* with {target.partitions} partitions")
    created = apply(target, config, timeout=migration.timeout)
    if created.problems:
        raise MigrationError("the new topic set is not usable: " + "; ".join(created.problems))
    writer = _Writer(migration, config)
    state = _read_source(source, config, progress)
    problems = state.problems()
    if problems and state.unsnapshotted():
        raise MigrationError(f"{problems[0]} (e.g. " + "; ".join(problems[1:4]) + ")")
    if problems:
        raise MigrationError(
            f"the old set's snapshots do not match its events ({len(problems)} entities, e.g. "
            + "; ".join(problems[:5])
            + "): run `kes verify`, and `kes snapshots rebuild` if the events are right"
        )
    done = TargetProgress(state.wanted())
    for record in read_records(target.events, target.partitions, config):
        entity_id, revision = parse_event_key(record.key or b"")
        done.landed(entity_id, revision, record.offset, f"{target.events}[{record.partition}]")
    if done.events:
        progress(f"{done.events} events were copied by an earlier run; going on from there")
    report.copied = _copy_events(migration, writer, done, config, progress)
    report.snapshots, report.outcomes = _write_state(migration, writer, state, done)
    for partition in range(target.partitions):
        value = encode_checkpoint(0, owner)
        writer.send(OutRecord(target.snapshots, partition, CHECKPOINT_KEY, value, []))
    writer.commit()
    report.entities, report.events = len(state.revisions), done.events
    report.seconds = time.monotonic() - began
    return report


def _check_layouts(
    source: AggregateTopics, target: AggregateTopics, config: dict[str, Any], timeout: float
) -> None:
    if {s.name for s in source.specs()} & {s.name for s in target.specs()}:
        raise MigrationError(
            f"the new topic set's names equal the old ones ({target.events}): give another prefix"
        )
    found = plan(source, config, timeout=timeout)
    counts = {c.spec.name: c.actual.partitions for c in found.checks if c.actual is not None}
    keyed = [source.commands, source.events, source.snapshots]
    missing = [name for name in keyed if name not in counts]
    if missing:
        raise MigrationError(f"the old set has no {', '.join(missing)}: check --topic-prefix")
    wrong = [f"{name} has {counts[name]}" for name in keyed if counts[name] != source.partitions]
    if wrong:
        raise MigrationError(
            f"the old set is not co-partitioned at {source.partitions}: " + ", ".join(wrong)
        )


def _completed(target: AggregateTopics, config: dict[str, Any]) -> bool:
    """True when the new changelog holds a checkpoint on every partition (raises if on some)."""
    exists = plan(target, config)
    if any(c.spec.name == target.snapshots and c.actual is None for c in exists.checks):
        return False
    marked = {
        r.partition
        for r in read_records(target.snapshots, target.partitions, config)
        if r.key == CHECKPOINT_KEY
    }
    if marked and len(marked) < target.partitions:
        raise MigrationError(
            f"{target.snapshots} holds checkpoints on partitions {sorted(marked)} only: a worker "
            "ran on the new set before the migration finished; delete the new set and migrate "
            "again"
        )
    return bool(marked)


def _old_owners(source: AggregateTopics, config: dict[str, Any]) -> dict[int, str]:
    owners = SourceState()
    for record in read_records(source.snapshots, source.partitions, config):
        if record.key == CHECKPOINT_KEY:
            owners.changelog(record.partition, record.key, record.value)
    return {p: o for p, o in owners.owners.items() if o}


def _most_common(names: Iterable[str]) -> str:
    counted: dict[str, int] = {}
    for name in names:
        counted[name] = counted.get(name, 0) + 1
    return max(counted, key=lambda n: counted[n], default="")


def _require_idle(
    migration: Migration, groups: set[str], config: dict[str, Any], progress: Callable[[str], None]
) -> None:
    """Step 3: no members, no open transaction, no unapplied command (waits up to `wait`)."""
    source = migration.source
    deadline = time.monotonic() + migration.wait
    admin = AdminClient({**config})
    while True:
        busy = _members(admin, sorted(groups), migration.timeout)
        busy += _open_transactions(source, config)
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(1)
    if busy:
        raise MigrationError(
            "the old set is not idle: " + "; ".join(busy) + ". Stop the producers, let the "
            "workers apply what is queued (`kes lag` shows 0), stop every worker, and migrate"
        )
    lag = _unapplied(source, sorted(groups), config)
    if lag:
        waiting = ", ".join(f"partition {p}: {n}" for p, n in sorted(lag.items()))
        raise MigrationError(
            f"{source.commands} holds commands no worker has applied ({waiting}): start the "
            "workers on the old set until `kes lag` shows 0, stop them, and migrate"
        )
    progress(f"{source.name}: the old set is idle (groups {', '.join(sorted(groups))})")


def _members(admin: AdminClient, groups: list[str], timeout: float) -> list[str]:
    busy = []
    for group, future in admin.describe_consumer_groups(groups, request_timeout=timeout).items():
        description = admin_result(future, f"describe group {group}", timeout)
        if description.members:  # a group no one joined is described as DEAD, no members
            busy.append(f"group {group!r} has {len(description.members)} member(s)")
    return busy


def _open_transactions(source: AggregateTopics, config: dict[str, Any]) -> list[str]:
    """Partitions whose last stable offset is below their high watermark (a transaction open)."""
    found = []
    stable = Consumer({**config, "group.id": "kes-migrate", "isolation.level": "read_committed"})
    raw = Consumer({**config, "group.id": "kes-migrate", "isolation.level": "read_uncommitted"})
    try:
        for topic in (source.commands, source.events, source.snapshots):
            committed = watermarks(stable, topic, source.partitions)
            written = watermarks(raw, topic, source.partitions)
            open_ = [p for p in committed if committed[p][1] < written[p][1]]
            if open_:
                found.append(f"a transaction is open on {topic} partitions {open_}")
    finally:
        stable.close()
        raw.close()
    return found


def _unapplied(
    source: AggregateTopics, groups: list[str], config: dict[str, Any]
) -> dict[int, int]:
    """Commands at or past the applied offset (the later of the checkpoint's and the groups'
    committed ones), per commands partition that has any."""
    state = SourceState()
    for record in read_records(source.snapshots, source.partitions, config):
        if record.key == CHECKPOINT_KEY:
            state.changelog(record.partition, record.key, record.value, record.headers)
    applied = dict(state.next_commands)
    for group in groups:
        reader = Consumer({**config, "group.id": group, "isolation.level": "read_committed"})
        try:
            asked = [TopicPartition(source.commands, p) for p in range(source.partitions)]
            for tp in reader.committed(asked, timeout=30):
                applied[tp.partition] = max(applied.get(tp.partition, -1), tp.offset)
        finally:
            reader.close()
    lag: dict[int, int] = {}
    reader = Consumer(
        {
            **config,
            "group.id": "kes-migrate",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends = watermarks(reader, source.commands, source.partitions)
        todo = {p for p, (_, high) in ends.items() if high > max(applied.get(p, 0), 0)}
        deleted = sorted(p for p in todo if max(applied.get(p, 0), 0) < ends[p][0])
        if deleted:
            raise MigrationError(
                f"{source.commands} partitions {deleted}: retention deleted commands no worker "
                "applied; decide with `kes skip-deleted` on the old set first"
            )
        reader.assign([TopicPartition(source.commands, p, max(applied.get(p, 0), 0)) for p in todo])
        while todo:
            msg = reader.poll(10)
            if msg is None:
                raise MigrationError(f"no progress reading {source.commands}")
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                todo.discard(msg.partition() or 0)
            elif error is not None:
                raise MigrationError(f"reading {source.commands}: {error}")
            else:
                lag[msg.partition() or 0] = lag.get(msg.partition() or 0, 0) + 1
    finally:
        reader.close()
    return lag


def _read_source(
    source: AggregateTopics, config: dict[str, Any], progress: Callable[[str], None]
) -> SourceState:
    """Step 6: the old changelog's latest records, and each entity's revisions checked."""
    state = SourceState()
    for record in read_records(source.snapshots, source.partitions, config):
        state.changelog(record.partition, record.key, record.value, record.headers)
    for record in read_records(source.events, source.partitions, config):
        entity_id, revision = parse_event_key(record.key or b"")
        state.event(entity_id, revision, f"{source.events}[{record.partition}]@{record.offset}")
    progress(
        f"old set: {len(state.revisions)} entities, {state.events} events, "
        f"{len(state.snapshots)} snapshots, {len(state.outcomes)} outcomes"
    )
    return state


class _Writer:
    """The transactional producer: records in transactions of `chunk`, delivery reports served."""

    def __init__(self, migration: Migration, config: dict[str, Any]) -> None:
        self.chunk = migration.chunk
        self.timeout = migration.timeout
        self.producer = Producer(
            {
                **config,
                "transactional.id": migration.transactional_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "transaction.timeout.ms": int(migration.timeout * 1000),
            }
        )
        self.producer.init_transactions(self.timeout)
        self.open = 0
        self.failed: list[str] = []

    def send(self, record: OutRecord, landed: Callable[[int], None] | None = None) -> None:
        """Write one record in the open transaction (begun here if none); commit every `chunk`."""
        if not self.open:
            self.producer.begin_transaction()
        self.open += 1

        def done(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self.failed.append(f"{message.topic()}[{message.partition()}]: {error}")
            elif landed is not None:
                landed(int(message.offset() or 0))

        produce_waiting(self.producer, record, on_delivery=done)
        if self.open >= self.chunk:
            self.commit()

    def commit(self) -> None:
        """Serve every delivery report, then commit (abort and raise on any failure)."""
        if not self.open:
            return
        left = self.producer.flush(self.timeout)
        if left or self.failed:
            self.producer.abort_transaction(self.timeout)
            raise MigrationError(
                f"writing the new set failed ({self.failed[0] if self.failed else f'{left} '}"
                "records unsent): nothing of this transaction is kept; run the migration again"
            )
        self.producer.commit_transaction(self.timeout)
        self.open = 0


def _copy_events(
    migration: Migration,
    writer: _Writer,
    done: TargetProgress,
    config: dict[str, Any],
    progress: Callable[[str], None],
) -> int:
    """Step 8: the events the new set lacks, each entity's in revision order."""
    source, target = migration.source, migration.target
    there = dict(done.present)
    copied = 0
    for record in read_records(source.events, source.partitions, config):
        entity_id, revision = parse_event_key(record.key or b"")
        if revision <= there.get(entity_id, 0):
            continue
        partition = partition_for(entity_id, target.partitions)
        where = f"{source.events}[{record.partition}]@{record.offset}"
        headers = [*record.headers, (MIGRATED_FROM_HEADER, where.encode())]
        out = OutRecord(target.events, partition, record.key or b"", record.value or b"", headers)

        def landed(offset: int, e: str = entity_id, r: int = revision, p: int = partition) -> None:
            done.landed(e, r, offset, f"{target.events}[{p}]")

        writer.send(out, landed)
        copied += 1
        if copied % 50_000 == 0:
            progress(f"{copied} events copied")
    writer.commit()
    return copied


def _write_state(
    migration: Migration, writer: _Writer, state: SourceState, done: TargetProgress
) -> tuple[int, int]:
    """Step 9: snapshots and outcomes on their entities' new changelog partitions."""
    target = migration.target

    def offset_of(entity_id: str, revision: int) -> int:
        try:
            return done.offsets[(entity_id, revision)]
        except KeyError:
            raise MigrationError(
                f"an outcome of {entity_id!r} names revision {revision}, not on the new events "
                "topic"
            ) from None

    for entity_id, value in state.snapshots.items():
        first = done.first[entity_id]  # every snapshot has its events (state.problems)
        partition = partition_for(entity_id, target.partitions)
        record_value = rewrite_snapshot(value, first)
        writer.send(OutRecord(target.snapshots, partition, entity_id.encode(), record_value, []))
    for key, value in state.outcomes.items():
        partition = partition_for(outcome_entity(key), target.partitions)
        record_value = rewrite_outcome(key, value, partition, offset_of)
        writer.send(OutRecord(target.snapshots, partition, key.encode(), record_value, []))
    writer.commit()
    return len(state.snapshots), len(state.outcomes)
