"""`kes topics migrate`: move an aggregate to a new topic set with another partition count.

The new set is the old one's topics under another prefix (`AggregateTopics.prefix`), created
with N partitions. Every entity's events are copied with their keys, values and headers
unchanged (plus a `kes-migrated-from` header), in revision order, to murmur2(entity) % N of the
new events topic; the snapshot changelog's latest snapshots and outcomes follow their entity,
rewritten where they name an offset of the old topics (kes.streams.operations.migration); each
entity's record on the keys topic (its wrapped data key, personal data) follows it too, unchanged,
so its sealed fields read on the new set as they did (same master key); an erased entity moves as
erasure left it, EntityErased and markers only (kes.streams.operations.migration); each new
partition gets a fresh checkpoint (next command offset 0, the owning group), so a worker started on
the new set recovers those snapshots and takes commands from the first one. Commands are not copied
(every command of the old set is applied before the migration may run), nor are replies (read
within seconds) or dead letters (they name records of the old commands topic: redrive or read
them on the old set). A durable-state aggregate's events are its retained change records,
copied the same way; its snapshots are its state of record (see `migrate`).

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

from confluent_kafka import KafkaError, Message, Producer

from kes.schemas.codec import decode_event, parse_event_key
from kes.schemas.errors import MigrationError
from kes.streams.cycle.records import CHECKPOINT_KEY, OutRecord, encode_checkpoint
from kes.streams.kafka.readback import read_records
from kes.streams.operations.migration import (
    MIGRATED_FROM_HEADER,
    SourceState,
    TargetProgress,
    outcome_entity,
    rewrite_outcome,
    rewrite_snapshot,
)
from kes.streams.operations.migration_idle import require_idle
from kes.streams.runtime.transaction import produce_waiting
from kes.topology.admin import apply, plan
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for

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
    keys: int = 0
    """Records written to the new keys topic (data keys and erasure markers)."""
    erased: int = 0
    """Erased entities, moved as their EntityErased and markers."""
    left_behind: int = 0
    """Erased entities' old events and tombstones not copied."""
    already_done: bool = False
    """The new set held its checkpoints already: nothing was written."""
    seconds: float = 0.0
    durable: bool = False
    """A durable-state aggregate: its events are change records, `events` those retained."""

    def summary(self) -> str:
        """One line for a person."""
        if self.already_done:
            return "the migration was completed before: nothing to do"
        earlier = self.events - self.copied
        resumed = f" ({earlier} copied by an earlier run)" if earlier else ""
        keys = f", {self.keys} data keys" if self.keys else ""
        what = "retained changes" if self.durable else "events"
        erased = (
            f" ({self.erased} erased: {self.left_behind} records of their erased events left "
            "behind)"
            if self.erased
            else ""
        )
        return (
            f"{self.entities} entities{erased}: {self.events} {what}{resumed}, {self.snapshots} "
            f"snapshots, {self.outcomes} outcomes{keys} in {self.seconds:.1f}s; checkpoints name "
            f"group {self.owner!r}"
        )


def migrate(
    migration: Migration,
    client_config: Mapping[str, Any],
    progress: Callable[[str], None] = log.info,
) -> MigrationReport:
    """Move every entity's history and state from `migration.source` to `migration.target`.

    1. Check the layouts: the old set's commands, events and snapshots (and its keys topic,
       where there is one) exist with one partition count; the new names differ from the old.
    2. If the new changelog holds a checkpoint on every partition, an earlier run completed
       (checkpoints are its last transaction): return, writing nothing.
    3. Refuse unless the old set is idle: the workers' group (every group its checkpoints name,
       and the new owner) has no members, no transaction is open on its topics, and every
       command on the old commands topic is applied.
    4. Create the new set (kes.topology.admin.apply): every topic of the layout, keys included, N
       partitions each; an existing topic with another count is refused.
    5. Open the transactional producer: init_transactions fences an earlier run of this
       migration and aborts its open transaction, so the new set holds committed data only.
    6. Read the old changelog (latest record per key), the old keys topic (latest record per
       entity) and the old events (each entity's revisions 1, 2, 3, ... in log order; an erased
       entity's only its EntityErased); refuse if a snapshot does not match its events, or a
       sealed snapshot its data key.
    7. Read the new events topic: what an earlier run committed (for each entity a prefix of
       its revisions, each transaction having written the entity's events in order).
    8. Copy the events not there yet, in the old partitions' offset order, to each entity's new
       partition, `chunk` records per transaction; each delivery report gives the event's new
       offset (first events and those outcomes name). Erased events and tombstones stay behind.
    9. Write each entity's key record to its new keys partition, and its snapshot and each
       outcome, rewritten for the new offsets, to its new changelog partition, in transactions
       (a re-run writes them again, equal).
    10. Last, one transaction: a checkpoint record on every new changelog partition, next
        command offset 0 and the owning group. From here a worker may run on the new set.
    A durable-state aggregate (kes.streams.config.durablestate) moves the same way, its
    snapshots being its state of record and its events the change records retention left: in
    step 6 an entity's retained changes are r, r + 1, ... from any first r and the latest is its
    snapshot (revision and state), and an entity whose changes all expired is its snapshot
    alone; in step 8 the retained changes are copied (each key once, in revision order), an
    outcome whose change expired is copied naming no offsets; the new events topic is created
    with the old one's kind (delete, `KES_STATE_CHANGES_RETENTION_MS`: `target.durable_state`).
    """
    began = time.monotonic()
    source, target = migration.source, migration.target
    if source.durable_state != target.durable_state:
        raise MigrationError(
            f"aggregate {source.name!r}: the old and new topic sets differ in durable_state"
        )
    config = dict(client_config)
    has_keys = _check_layouts(source, target, config, migration.timeout)
    report = MigrationReport(durable=source.durable_state)
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
    wait, timeout = migration.wait, migration.timeout
    groups = {*owners.values(), owner}
    require_idle(source, groups, config, progress, keys=has_keys, wait=wait, timeout=timeout)
    progress(f"creating {target.prefix}{target.name}.* with {target.partitions} partitions")
    created = apply(target, config, timeout=migration.timeout)
    if created.problems:
        raise MigrationError("the new topic set is not usable: " + "; ".join(created.problems))
    writer = _Writer(migration, config)
    state = _read_source(source, config, progress, has_keys)
    problems = state.problems()
    if problems and state.unsnapshotted():
        raise MigrationError(f"{problems[0]} (e.g. " + "; ".join(problems[1:4]) + ")")
    if problems:
        fix = "run `kes verify`" + (
            "" if source.durable_state else ", and `kes snapshots rebuild` if the events are right"
        )
        raise MigrationError(
            f"the old set's snapshots do not match its events ({len(problems)} entities, e.g. "
            + "; ".join(problems[:5])
            + f"): {fix}"
        )
    done = TargetProgress(state.wanted(), start=state.starts(), durable=source.durable_state)
    for record in read_records(target.events, target.partitions, config):
        entity_id, revision = parse_event_key(record.key or b"")
        done.landed(entity_id, revision, record.offset, f"{target.events}[{record.partition}]")
    stale = state.resume_problems(done.present)
    if stale:
        raise MigrationError(
            f"the new set cannot be completed ({len(stale)} entities, e.g. "
            + "; ".join(stale[:3])
            + "): delete the new topic set (or choose another prefix) and migrate again"
        )
    if done.events:
        progress(f"{done.events} events were copied by an earlier run; going on from there")
    report.copied = _copy_events(migration, writer, state, done, config, progress)
    report.keys = _write_keys(migration, writer, state)
    report.snapshots, report.outcomes = _write_state(migration, writer, state, done)
    for partition in range(target.partitions):
        value = encode_checkpoint(0, owner)
        writer.send(OutRecord(target.snapshots, partition, CHECKPOINT_KEY, value, []))
    writer.commit()
    report.entities = len(state.revisions.keys() | state.snapshots.keys())
    report.events = done.events
    report.erased, report.left_behind = len(state.erased()), state.left_behind
    report.seconds = time.monotonic() - began
    return report


def _check_layouts(
    source: AggregateTopics, target: AggregateTopics, config: dict[str, Any], timeout: float
) -> bool:
    """Step 1; True when the old set has a keys topic (a set made before personal data may
    have none: then no snapshot may be sealed, `SourceState.problems`)."""
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
    has_keys = source.keys in counts
    if has_keys:  # read partition by partition like the others (kes.streams.kafka.keyreader)
        keyed.append(source.keys)
    wrong = [f"{name} has {counts[name]}" for name in keyed if counts[name] != source.partitions]
    if wrong:
        raise MigrationError(
            f"the old set is not co-partitioned at {source.partitions}: " + ", ".join(wrong)
        )
    return has_keys


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


def _read_source(
    source: AggregateTopics,
    config: dict[str, Any],
    progress: Callable[[str], None],
    has_keys: bool,
) -> SourceState:
    """Step 6: the old changelog's and keys topic's latest records, then each entity's
    revisions checked (the snapshots first: they say which entities are erased)."""
    state = SourceState(durable=source.durable_state)
    for record in read_records(source.snapshots, source.partitions, config):
        state.changelog(record.partition, record.key, record.value, record.headers)
    if has_keys:
        for record in read_records(source.keys, source.partitions, config):
            state.key(record.key, record.value)
    for record in read_records(source.events, source.partitions, config):
        entity_id, revision = parse_event_key(record.key or b"")
        where = f"{source.events}[{record.partition}]@{record.offset}"
        event_type = _header(record.headers, "event-type")
        state.event(entity_id, revision, where, event_type, tombstone=record.value is None)
        if state.durable and record.value is not None and entity_id not in state.erased():
            state.change(entity_id, decode_event(record.value).payload.SerializeToString())
    erased = len(state.erased())
    progress(
        f"old set: {len(state.revisions)} entities ({erased} erased), {state.events} events to "
        f"copy, {len(state.snapshots)} snapshots, {len(state.outcomes)} outcomes, "
        f"{len(state.keys)} key records"
    )
    return state


def _header(headers: list[tuple[str, bytes]], name: str) -> str:
    return next((v.decode("utf-8", "replace") for k, v in headers if k == name), "")


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
    state: SourceState,
    done: TargetProgress,
    config: dict[str, Any],
    progress: Callable[[str], None],
) -> int:
    """Step 8: the events the new set lacks, each entity's in revision order (an erased
    entity's: its EntityErased only)."""
    source, target = migration.source, migration.target
    there = dict(done.present)
    copied = 0
    for record in read_records(source.events, source.partitions, config):
        entity_id, revision = parse_event_key(record.key or b"")
        if revision <= there.get(entity_id, 0):
            continue
        if not state.copies(entity_id, revision, tombstone=record.value is None):
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


def _write_keys(migration: Migration, writer: _Writer, state: SourceState) -> int:
    """Step 9, first: each entity's key record (data key or erasure marker) on its new keys
    partition, keyed by entity id like the worker writes it (kes.streams.kafka.keyreader finds it
    there)."""
    target = migration.target
    records = state.key_records()
    for entity_id, value in records.items():
        partition = partition_for(entity_id, target.partitions)
        writer.send(OutRecord(target.keys, partition, entity_id.encode(), value, []))
    writer.commit()
    return len(records)


def _write_state(
    migration: Migration, writer: _Writer, state: SourceState, done: TargetProgress
) -> tuple[int, int]:
    """Step 9: snapshots and outcomes on their entities' new changelog partitions."""
    target = migration.target

    def offset_of(entity_id: str, revision: int) -> int | None:
        if state.durable and revision < done.first_revision.get(entity_id, revision + 1):
            return None  # a change deleted by retention: the outcome names no offsets
        try:
            return done.offsets[(entity_id, revision)]
        except KeyError:
            raise MigrationError(
                f"an outcome of {entity_id!r} names revision {revision}, not on the new events "
                "topic"
            ) from None

    for entity_id, value in state.snapshots.items():
        first = done.first.get(entity_id, -1)  # only durable state's may have none left
        partition = partition_for(entity_id, target.partitions)
        record_value = rewrite_snapshot(value, first)
        writer.send(OutRecord(target.snapshots, partition, entity_id.encode(), record_value, []))
    outcomes = state.copied_outcomes()
    for key, value in outcomes.items():
        partition = partition_for(outcome_entity(key), target.partitions)
        record_value = rewrite_outcome(key, value, partition, offset_of)
        writer.send(OutRecord(target.snapshots, partition, key.encode(), record_value, []))
    writer.commit()
    return len(state.snapshots), len(outcomes)
