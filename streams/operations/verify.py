"""`kes verify`: check an aggregate's invariants from the data itself.

Reads the events topic and the snapshot changelog (read_committed, up to the end offsets taken at
start) and checks, per entity: revisions 1..n with no gap and no repeat; no command applied twice
(a command's events form one contiguous run); the snapshot equals the fold of the log. With a
snapshot interval (kes.streams.cycle.snapshotpolicy) a snapshot may hold the fold of the entity's
first r events only, when the events after them lie at or after the low-water named by its
partition's last checkpoint record (what recovery folds from); with none named, every snapshot must
be the latest.

An erased entity (`kes erase`) is checked for what erasure leaves: its events 1..n each have a
tombstone after them (or are compacted away), its last event is EntityErased at n + 1, and its
snapshot is the erasure marker, whatever the low-water (an erasure is snapshotted at once: its
tombstoned events cannot be folded on recovery). With a keyring, sealed personal fields are
opened first (without one, the public parts are folded and compared). Old event shapes are folded
through the app's event adapters and snapshots of an older state version are migrated
(kes.streams.core.statemigration) before the comparison, as the worker would. What this code
cannot read is a violation, not an exception: a state migration missing from the chain, a
snapshot newer than the code, an event whose schema version is above the one the behavior
declares for its type (kes.streams.core.eventversions; that entity is not folded).

A durable-state aggregate (kes.streams.config.durablestate) is not folded: its snapshot is the state
of record and its change records expire. Each entity's retained changes must be contiguous
revisions, no command applied twice, and the latest of them must equal its snapshot, revision
and state; an entity whose changes have all expired is known by its snapshot alone.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from kes.schemas.codec import decode_event, decode_snapshot, parse_event_key, unpack
from kes.schemas.errors import ConfigurationError, DecodeError, KesError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Snapshot
from kes.streams.config.durablestate import is_durable_state
from kes.streams.core.adapters import UNVERSIONED, VERSION_KEY, EventAdapters
from kes.streams.core.behavior import Behavior
from kes.streams.core.eventversions import declared_version, newer_event
from kes.streams.core.keyring import Keyring
from kes.streams.cycle.idempotency import OUTCOME_PREFIX
from kes.streams.cycle.records import CHECKPOINT_KEY, ERASED_EVENT_TYPE
from kes.streams.cycle.snapshotpolicy import events_from_header
from kes.streams.kafka.readback import read_records
from kes.topology.layout import AggregateTopics

__all__ = ["Verification", "verify"]


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
    try:
        behavior.check_state_migrations()
    except ConfigurationError as exc:
        result.violations.append(str(exc))
    offsets: dict[tuple[str, int], tuple[int, int]] = {}
    """(entity, revision) -> (partition, offset) of the event."""
    durable = is_durable_state(behavior)
    newer: dict[str, str] = {}
    """Entity -> why its first event newer than this code is: its fold would drop what it
    does not know, so it is reported, not folded."""
    # A durable-state change record is a state: it is compared with the snapshot through the
    # state migrations (both at the code's version), not through the event adapters.
    events = _read_events(
        topics, client_config, None if durable else adapters, keys, offsets, (behavior, newer)
    )
    result.events = sum(len(h) for h in events.values())
    low_water: dict[int, int] = {}
    """Partition -> the events low-water of its last checkpoint record (-1: none)."""
    snapshots = _read_snapshots(topics, client_config, keys, low_water)
    result.snapshots = len(snapshots)
    if durable:
        result.violations.extend(f"{entity_id}: {why}" for entity_id, why in sorted(newer.items()))
        _check_durable(behavior, events, snapshots, result)
        return result
    result.entities = len(events)
    result.violations.extend(f"{entity_id}: {why}" for entity_id, why in sorted(newer.items()))
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
        if entity_id in newer:
            continue
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


def _read_snapshots(
    topics: AggregateTopics,
    client_config: Mapping[str, Any],
    keys: Keyring | None,
    low_water: dict[int, int],
) -> dict[str, Snapshot]:
    """Each entity's latest snapshot on the changelog; `low_water` gets each partition's events
    low-water from its last checkpoint record."""
    snapshots: dict[str, Snapshot] = {}
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
    return snapshots


def _check_durable(
    behavior: Behavior[Any],
    events: Mapping[str, list[EventEnvelope]],
    snapshots: Mapping[str, Snapshot],
    result: Verification,
) -> None:
    """A durable-state aggregate: the snapshot is the state, each retained change is checked
    against it (see the module docstring); nothing is folded. The latest change and the
    snapshot are equal when their bytes are, else once both are loaded at the code's state
    version (a change written before an upgrade against a snapshot migrated since)."""
    result.entities = len(events.keys() | snapshots.keys())
    for entity_id in sorted(events.keys() | snapshots.keys()):
        history = sorted(events.get(entity_id, []), key=lambda e: e.revision)
        stored = snapshots.get(entity_id)
        if any(e.event_type == ERASED_EVENT_TYPE for e in history):
            result.erased += 1
            _check_erased(entity_id, history, stored, result)
            continue
        if stored is not None and stored.erased:
            result.erased += 1  # its EntityErased expired with its other changes
            continue
        revisions = [e.revision for e in history]
        if revisions and revisions != list(range(revisions[0], revisions[0] + len(history))):
            result.violations.append(
                f"{entity_id}: retained change revisions are not contiguous: {_gaps(revisions)}"
            )
        applied = Counter(e.command_id for e in history)
        for command_id in sorted(c for c, n in applied.items() if n > 1):
            result.violations.append(f"{entity_id}: command {command_id} applied twice")
        if stored is None:
            result.violations.append(f"{entity_id}: no snapshot for {len(history)} changes")
            continue
        state = _stored_state(behavior, stored, result)
        if state is None:
            continue  # reported: it does not load (newer than this code, a failing migration)
        result.states[entity_id] = state
        result.revisions[entity_id] = stored.revision
        if not history:
            continue  # every change expired: the snapshot is all there is
        latest = history[-1]
        if stored.revision != latest.revision or not _same_change(behavior, latest, stored, state):
            result.violations.append(
                f"{entity_id}: snapshot (revision {stored.revision}) is not its latest change "
                f"(revision {latest.revision})"
            )


def _same_change(
    behavior: Behavior[Any], change: EventEnvelope, stored: Snapshot, state: Message
) -> bool:
    """Whether a durable-state change record holds the snapshot's (loaded) `state`."""
    if change.payload == stored.state:
        return True
    version = change.metadata.get(VERSION_KEY, UNVERSIONED)
    try:
        loaded = behavior.load_state(change.payload, int(version), change.entity_id)
    except (ValueError, KesError):
        return False
    return bool(loaded == state)


def _read_events(
    topics: AggregateTopics,
    client_config: Mapping[str, Any],
    adapters: EventAdapters | None,
    keys: Keyring | None,
    offsets: dict[tuple[str, int], tuple[int, int]],
    versions: tuple[Behavior[Any], dict[str, str]] | None = None,
) -> dict[str, list[EventEnvelope]]:
    """Each entity's events, less those a later tombstone removed (an erasure's); `offsets`
    gets each kept event's (partition, offset), the first of a repeated revision's. With
    `versions`, an entity's first event newer than the behavior declares (after the adapters)
    is described in its dict (kes.streams.core.eventversions)."""
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
        if versions is not None and env.entity_id not in versions[1]:
            behavior, newer = versions
            kind = env.event_type or env.payload.TypeName()
            why = newer_event(env, declared_version(behavior, kind))
            if why is not None:
                where = f"{topics.events}[{record.partition}]@{record.offset}"
                newer[env.entity_id] = f"the event at {where} (revision {env.revision}): {why}"
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
