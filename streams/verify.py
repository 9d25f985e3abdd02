"""`kes verify`: check an aggregate's invariants from the data itself.

Reads the events topic and the snapshot changelog (read_committed, up to the end offsets taken at
start) and checks, per entity: revisions 1..n with no gap and no repeat; no command applied twice
(a command's events form one contiguous run); the snapshot equals the fold of the log. With a
snapshot interval (streams.snapshotpolicy) a snapshot may hold the fold of the entity's first r
events only, when the events after them lie at or after the low-water named by its partition's
last checkpoint record (what recovery folds from); with none named, every snapshot must be the
latest.

An erased entity (`kes erase`) is checked for what erasure leaves: its events 1..n each have a
tombstone after them (or are compacted away), its last event is EntityErased at n + 1, and its
snapshot is the erasure marker, whatever the low-water (an erasure is snapshotted at once: its
tombstoned events cannot be folded on recovery). With a keyring, sealed personal fields are
opened first (without one, the public parts are folded and compared). Old event shapes are folded
through the app's event adapters and snapshots of an older state version are migrated
(streams.statemigration) before the comparison, as the worker would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, TopicPartition
from google.protobuf.message import Message

from schemas.codec import decode_event, decode_snapshot, parse_event_key, unpack
from schemas.errors import DecodeError
from schemas.kes.v1.envelopes_pb2 import EventEnvelope, Snapshot
from streams.adapters import EventAdapters
from streams.batch import CHECKPOINT_KEY, ERASED_EVENT_TYPE
from streams.behavior import Behavior
from streams.idempotency import OUTCOME_PREFIX
from streams.keyring import Keyring
from streams.snapshotpolicy import events_from_header
from streams.watermarks import watermarks
from topology.layout import AggregateTopics

__all__ = ["TopicRecord", "Verification", "read_records", "read_topic", "verify"]


@dataclass
class Verification:
    """The outcome of `verify`: counts, the folded states, and every violation found."""

    entities: int = 0
    events: int = 0
    snapshots: int = 0
    erased: int = 0
    """Entities erased (their EntityErased event found)."""
    violations: list[str] = field(default_factory=list)
    states: dict[str, Message] = field(default_factory=dict)
    revisions: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no invariant is violated."""
        return not self.violations

    def summary(self) -> str:
        """A few lines for a person."""
        erased = f", {self.erased} erased" if self.erased else ""
        head = (
            f"{self.entities} entities, {self.events} events, {self.snapshots} snapshots{erased}: "
            + ("OK" if self.ok else f"{len(self.violations)} VIOLATIONS")
        )
        return "\n".join([head, *(f"  - {v}" for v in self.violations[:50])])


class TopicRecord(NamedTuple):
    """One committed record as read back: where it is, and what it holds."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def read_records(
    topic: str,
    partitions: int,
    client_config: Mapping[str, Any],
    *,
    timeout: float = 10.0,
    only: Iterable[int] | None = None,
    start: Mapping[int, int] | None = None,
) -> Iterator[TopicRecord]:
    """Each committed record of a topic, up to its end at call time (no group, no commit);
    `start` gives the first offset to read of some partitions (else their beginning)."""
    consumer = Consumer(
        {
            **client_config,
            "group.id": "kes-verify",
            "auto.offset.reset": "earliest",  # from the log start once retention deleted some
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        wanted = list(range(partitions) if only is None else only)
        # with retries: a topic just created may not have its leaders yet
        marks = watermarks(consumer, topic, max(wanted) + 1 if wanted else 0, max(timeout, 30))
        ends = {p: marks[p][1] for p in wanted}
        first = {p: max(0, (start or {}).get(p, 0)) for p in wanted}
        todo = {p for p, high in ends.items() if high > first[p]}
        consumer.assign([TopicPartition(topic, p, first[p]) for p in todo])
        while todo:
            msg = consumer.poll(timeout)
            if msg is None:
                raise TimeoutError(f"no progress reading {topic} (partitions {sorted(todo)} left)")
            partition, offset, error = msg.partition() or 0, msg.offset() or 0, msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    todo.discard(partition)
                    continue
                raise RuntimeError(str(error))
            if offset >= ends[partition] - 1:
                todo.discard(partition)
            if offset < ends[partition]:
                raw: Any = msg.headers() or []
                headers = [(str(k), _header_bytes(v)) for k, v in raw]
                yield TopicRecord(partition, offset, msg.key(), msg.value(), headers)
    finally:
        consumer.close()


def _header_bytes(value: bytes | str | None) -> bytes:
    return value if isinstance(value, bytes) else (value or "").encode()


def read_topic(
    topic: str,
    partitions: int,
    client_config: Mapping[str, Any],
    *,
    timeout: float = 10.0,
    only: Iterable[int] | None = None,
) -> Iterator[tuple[int, bytes | None, bytes | None]]:
    """Each committed record (partition, key, value) of a topic, up to its end at call time.

    `only` limits the read to some partitions.
    """
    for record in read_records(topic, partitions, client_config, timeout=timeout, only=only):
        yield record.partition, record.key, record.value


_OUTCOME = OUTCOME_PREFIX.encode()


def verify(
    behavior: Behavior[Any],
    topics: AggregateTopics,
    client_config: Mapping[str, Any],
    adapters: EventAdapters | None = None,
    keys: Keyring | None = None,
) -> Verification:
    """Check the invariants of one aggregate on a cluster; see the module docstring."""
    result = Verification()
    offsets: dict[tuple[str, int], tuple[int, int]] = {}
    """(entity, revision) -> (partition, offset) of the event."""
    events = _read_events(topics, client_config, adapters, keys, offsets)
    result.events = sum(len(h) for h in events.values())
    snapshots: dict[str, Snapshot] = {}
    low_water: dict[int, int] = {}
    """Partition -> the events low-water of its last checkpoint record (-1: none)."""
    for record in read_records(topics.snapshots, topics.partitions, client_config):
        key, value = record.key, record.value
        if key == CHECKPOINT_KEY and value:
            low_water[record.partition] = events_from_header(record.headers)
        if key is None or key == CHECKPOINT_KEY or value is None or key.startswith(_OUTCOME):
            continue  # the checkpoint, removed outcomes, outcomes
        snap = decode_snapshot(value)
        if keys is not None:
            keys.open_snapshot(snap)
        snapshots[snap.entity_id] = snap
    result.snapshots = len(snapshots)
    result.entities = len(events)
    for entity_id, history in events.items():
        history.sort(key=lambda e: e.revision)
        if any(e.event_type == ERASED_EVENT_TYPE for e in history):
            result.erased += 1
            _check_erased(entity_id, history, snapshots.get(entity_id), result)
            continue
        revisions = [e.revision for e in history]
        if revisions != list(range(1, len(history) + 1)):
            result.violations.append(f"{entity_id}: revisions are not 1..n: {_gaps(revisions)}")
        seen: set[str] = set()
        previous = None
        for env in history:
            if env.command_id != previous and env.command_id in seen:
                result.violations.append(f"{entity_id}: command {env.command_id} applied twice")
            seen.add(env.command_id)
            previous = env.command_id
        unique = {e.revision: e for e in history}
        state = behavior.fold(
            behavior.initial_state(entity_id), (unpack(unique[r].payload) for r in sorted(unique))
        )
        result.states[entity_id] = state
        result.revisions[entity_id] = max(unique)
        stored = snapshots.get(entity_id)
        if _behind(entity_id, stored, max(unique), offsets, low_water):
            stored_revision = 0 if stored is None else stored.revision
            prefix = behavior.fold(
                behavior.initial_state(entity_id),
                (unpack(unique[r].payload) for r in sorted(unique) if r <= stored_revision),
            )
            if stored is not None and _stored_state(behavior, stored, result) != prefix:
                result.violations.append(
                    f"{entity_id}: snapshot (revision {stored.revision}) differs from the fold "
                    f"of its first {stored.revision} events"
                )
        elif stored is None:
            result.violations.append(f"{entity_id}: no snapshot for {len(history)} events")
        elif stored.revision != max(unique) or _stored_state(behavior, stored, result) != state:
            result.violations.append(
                f"{entity_id}: snapshot (revision {stored.revision}) differs from the fold of the "
                f"log (revision {max(unique)})"
            )
    return result


def _read_events(
    topics: AggregateTopics,
    client_config: Mapping[str, Any],
    adapters: EventAdapters | None,
    keys: Keyring | None,
    offsets: dict[tuple[str, int], tuple[int, int]],
) -> dict[str, list[EventEnvelope]]:
    """Each entity's events, less those a later tombstone removed (an erasure's); `offsets`
    gets each kept event's (partition, offset), the first of a repeated revision's."""
    found: dict[str, list[tuple[int, int, EventEnvelope]]] = defaultdict(list)
    removed: dict[tuple[str, int], int] = {}
    for record in read_records(topics.events, topics.partitions, client_config):
        if record.value is None:
            with suppress(DecodeError):  # not a kes event key: nothing of an entity's removed
                removed[parse_event_key(record.key or b"")] = record.offset
            continue
        env = decode_event(record.value)
        if keys is not None:
            keys.open_event(env)
        if adapters is not None:  # old event shapes are folded as their current ones
            env = adapters.adapt(env)
        found[env.entity_id].append((record.partition, record.offset, env))
    kept: dict[str, list[EventEnvelope]] = {}
    for entity_id, history in found.items():
        for partition, offset, env in history:
            if removed.get((entity_id, env.revision), -1) < offset:
                kept.setdefault(entity_id, []).append(env)
                offsets.setdefault((entity_id, env.revision), (partition, offset))
    return kept


def _stored_state(behavior: Behavior[Any], snap: Snapshot, result: Verification) -> Message | None:
    """The snapshot's state migrated to the behavior's state version; None (and a violation)
    when it cannot be (newer than this code, or a migration missing or failing)."""
    try:
        state: Message = behavior.load_state(snap.state, snap.state_version, snap.entity_id)
    except Exception as exc:
        result.violations.append(f"{snap.entity_id}: its snapshot's state does not load: {exc}")
        return None
    return state


def _check_erased(
    entity_id: str, history: list[EventEnvelope], snapshot: Snapshot | None, result: Verification
) -> None:
    """What an erasure leaves: only EntityErased at n + 1, and the erasure marker snapshot."""
    last = history[-1]
    if last.event_type != ERASED_EVENT_TYPE:
        result.violations.append(f"{entity_id}: events after its erasure")
        return
    if len(history) > 1:
        left = [e.revision for e in history[:-1]]
        result.violations.append(f"{entity_id}: erased, but revisions {_gaps(left)} remain")
    if snapshot is None or not snapshot.erased or snapshot.revision != last.revision:
        result.violations.append(f"{entity_id}: erased, but its snapshot is not the marker")


def _behind(
    entity_id: str,
    stored: Snapshot | None,
    latest: int,
    offsets: Mapping[tuple[str, int], tuple[int, int]],
    low_water: Mapping[int, int],
) -> bool:
    """True when the snapshot is older than the log as the snapshot policy allows: the first
    event after it lies at or after its partition's low-water."""
    revision = 0 if stored is None else stored.revision
    if revision >= latest or (entity_id, revision + 1) not in offsets:
        return False
    partition, offset = offsets[(entity_id, revision + 1)]
    low = low_water.get(partition, -1)
    return 0 <= low <= offset


def _gaps(revisions: list[int]) -> str:
    text = ",".join(map(str, revisions[:20]))
    return text + (",..." if len(revisions) > 20 else "")
