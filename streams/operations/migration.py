"""Moving an aggregate to a new topic set with another partition count: the pure part.

An entity's partition is murmur2(entity id) % partitions, so a new partition count moves most
entities. `kes.streams.operations.migrator` copies every entity's history and state into a new topic
set; this module holds the rules it follows, without I/O:

- what the old set holds (`SourceState`): the snapshot changelog's latest record per key
  (entity snapshots, command outcomes; the checkpoints name the owning group), the keys
  topic's latest record per entity (personal data: wrapped data keys, erasure markers) and
  each entity's last event revision, checked to be 1, 2, 3, ... in log order and to match its
  snapshot. With a snapshot interval (KES_SNAPSHOT_EVERY > 1, kes.streams.cycle.snapshotpolicy) a
  snapshot may lag its events: the migration copies snapshots, it does not fold events, so it
  refuses such a set and says to snapshot every entity first (`kes snapshots rebuild`, workers
  stopped); the new set's checkpoints then carry no events low-water, which the policy reads
  as "every snapshot is the latest", true of what was copied;
- what the new set already holds (`TargetProgress`): per entity, the revisions copied so far
  (always a run from its first copied revision: each entity's events are copied in revision
  order to one partition, in transactions), and the new offsets of the events that snapshots
  and outcomes name;
- how snapshots and outcomes are rewritten for the new set (`rewrite_snapshot`,
  `rewrite_outcome`): every field that names an offset of the old topics is recomputed.

An erased entity (`kes erase`) is known by its snapshot, an erasure marker at revision m: of
its events only EntityErased (revision m) is copied, never its erased events 1..m-1 nor their
tombstones, whether or not compaction removed them from the old log yet; its key record is
copied as an erasure marker; its outcomes that name erased events are left behind. So the new
set holds exactly what an erasure followed by compaction leaves, and nothing of the entity's
personal data, sealed or not.

A durable-state aggregate (kes.streams.config.durablestate) has no history to check snapshots
against: its events are change records deleted by time. Its snapshots are its state of record,
moved as they are; of its changes those retained are copied, each entity's a run r, r + 1, ...
whose last must be its snapshot, revision and state (`same_state`), as `kes verify` checks;
an entity whose changes all expired moves as its snapshot alone (`first_event_offset` -1), and
an outcome whose change expired names no offsets on the new set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import any_pb2

from kes.schemas.codec import decode_snapshot, encode_snapshot, unpack
from kes.schemas.errors import DecodeError, MigrationError
from kes.schemas.kes.v1.personal_pb2 import DataKey
from kes.streams.cycle.idempotency import (
    OUTCOME_PREFIX,
    decode_outcome,
    encode_outcome,
    is_outcome_key,
)
from kes.streams.cycle.records import CHECKPOINT_KEY, ERASED_EVENT_TYPE, decode_checkpoint
from kes.streams.cycle.snapshotpolicy import events_from_header

__all__ = [
    "MIGRATED_FROM_HEADER",
    "SourceState",
    "TargetProgress",
    "outcome_entity",
    "rewrite_outcome",
    "rewrite_snapshot",
    "same_state",
]

MIGRATED_FROM_HEADER = "kes-migrated-from"
"""Header added to each copied event: where it was on the old set, `<topic>[<p>]@<offset>`.
Its key, value and other headers are the original's."""


def outcome_entity(key: str) -> str:
    """The entity id in an outcome key (`NUL entity NUL command-id`)."""
    return key[len(OUTCOME_PREFIX) :].split(OUTCOME_PREFIX, 1)[0]


@dataclass
class SourceState:
    """The old set as read: latest changelog and key record per key, last event revision per
    entity. Read the changelog before the events: an entity's snapshot says if it is erased."""

    snapshots: dict[str, bytes] = field(default_factory=dict)
    """Entity id -> its latest snapshot (encoded)."""
    outcomes: dict[str, bytes] = field(default_factory=dict)
    """Outcome key -> its latest value (tombstoned outcomes are left out)."""
    owners: dict[int, str] = field(default_factory=dict)
    """Changelog partition -> the group its last checkpoint names."""
    next_commands: dict[int, int] = field(default_factory=dict)
    """Changelog partition -> the next command offset of its last checkpoint."""
    keys: dict[str, bytes] = field(default_factory=dict)
    """Entity id -> its latest record on the keys topic (a `kes.v1.DataKey`)."""
    revisions: dict[str, int] = field(default_factory=dict)
    """Entity id -> the last event revision seen on the events topic (for an erased entity:
    its EntityErased event's, the only one copied)."""
    low_water: dict[int, int] = field(default_factory=dict)
    """Changelog partition -> the events low-water of its last checkpoint (-1: none), set when
    the workers ran with a snapshot interval and left events newer than some snapshots."""
    events: int = 0
    """Events to copy."""
    left_behind: int = 0
    """Records of erased entities' events not copied: erased events and their tombstones."""
    durable: bool = False
    """A durable-state aggregate's set (kes.streams.config.durablestate): its events are change
    records deleted by time, so an entity's retained revisions may start past 1, or be gone."""
    firsts: dict[str, int] = field(default_factory=dict)
    """Durable state: entity id -> its first retained change revision (where not erased)."""
    latest: dict[str, bytes] = field(default_factory=dict)
    """Durable state: entity id -> its latest retained change's payload (an encoded `Any`)."""
    _erased: dict[str, int] | None = field(default=None, repr=False)

    def changelog(
        self,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | str | None]] = (),
    ) -> None:
        """Take one snapshot-changelog record, read in offset order."""
        if key is None:
            return
        if key == CHECKPOINT_KEY:
            if value:
                self.next_commands[partition], self.owners[partition] = decode_checkpoint(value)
                self.low_water[partition] = events_from_header(headers)
            return
        name = key.decode()
        outcome = is_outcome_key(name)
        into = self.outcomes if outcome else self.snapshots
        if not outcome:
            self._erased = None
        if value:
            into[name] = value
        else:
            into.pop(name, None)  # a tombstone: the record is gone

    def key(self, key: bytes | None, value: bytes | None) -> None:
        """Take one keys-topic record, read in offset order (a tombstone removes the entity's)."""
        if not key:
            return
        if value:
            self.keys[key.decode()] = value
        else:
            self.keys.pop(key.decode(), None)

    def erased(self) -> dict[str, int]:
        """Entity id -> the revision of its erasure marker, for every erased entity."""
        if self._erased is None:
            self._erased = {}
            for entity_id, raw in self.snapshots.items():
                snapshot = decode_snapshot(raw)
                if snapshot.erased:
                    self._erased[entity_id] = snapshot.revision
        return self._erased

    def copies(self, entity_id: str, revision: int, tombstone: bool) -> bool:
        """Whether an old events-topic record goes to the new set: every event of a live entity,
        and of an erased one only its EntityErased (never a tombstone)."""
        if tombstone:
            return False
        at = self.erased().get(entity_id)
        return at is None or revision == at

    def event(
        self,
        entity_id: str,
        revision: int,
        where: str,
        event_type: str = "",
        tombstone: bool = False,
    ) -> None:
        """Take one event (from its key; `event_type` from its header; a tombstone has no
        value), read in its partition's offset order; raises MigrationError when a live
        entity's revisions on the log are not 1, 2, 3, ... (durable state: r, r + 1, ... from
        its first retained r), when one of its events has a tombstone, or when an erased
        entity's last event is not its EntityErased."""
        at = self.erased().get(entity_id)
        if at is not None:
            if revision > at or (revision == at and (tombstone or event_type != ERASED_EVENT_TYPE)):
                what = "a tombstone" if tombstone else f"a {event_type or 'record'}"
                raise MigrationError(
                    f"{where}: {entity_id!r} was erased at revision {at} (its snapshot) and "
                    f"the events topic holds {what} at revision {revision}: run `kes verify`"
                )
            if revision < at:
                self.left_behind += 1
                return
        elif tombstone:
            raise MigrationError(
                f"{where}: a tombstone for {entity_id!r} revision {revision}, an entity that "
                "is not erased: run `kes verify`; nothing can be migrated from this log"
            )
        if entity_id in self.revisions:
            last = self.revisions[entity_id]
        elif at is not None:
            last = at - 1
        elif self.durable:  # its older changes may have been deleted by retention
            last = revision - 1
            self.firsts[entity_id] = revision
        else:
            last = 0
        if revision != last + 1:
            raise MigrationError(
                f"{where}: {entity_id!r} revision {revision} follows revision {last}: the old "
                "events log is not contiguous (run `kes verify`); nothing can be migrated from it"
            )
        self.revisions[entity_id] = revision
        self.events += 1

    def change(self, entity_id: str, payload: bytes) -> None:
        """Durable state: take the payload of the change `event` just took (the entity's latest
        so far), to be checked against its snapshot (`problems`)."""
        self.latest[entity_id] = payload

    def starts(self) -> dict[str, int]:
        """Entity id -> the first revision the new set holds, for entities not starting at 1
        (the erased: their EntityErased; durable state: their first retained change)."""
        return {**self.firsts, **self.erased()}

    def problems(self) -> list[str]:
        """Why the old set cannot be migrated as it is (empty when it can): every entity with
        events needs a snapshot at its last revision, no snapshot may lack its events, and a
        sealed snapshot's data key must be its entity's record on the keys topic. Durable
        state: the latest retained change must be the snapshot, revision and state (as `kes
        verify` checks it), and a snapshot whose changes all expired is the entity alone."""
        found = []
        for entity_id, revision in self.revisions.items():
            raw = self.snapshots.get(entity_id)
            what = "changes" if self.durable else "events"
            if raw is None:
                found.append(f"{entity_id!r}: {revision} {what}, no snapshot")
                continue
            snapshot = decode_snapshot(raw)
            if snapshot.revision != revision:
                found.append(
                    f"{entity_id!r}: snapshot at revision {snapshot.revision}, {what} up to "
                    f"{revision}"
                )
            elif entity_id in self.latest and not same_state(
                self.latest[entity_id], snapshot.state
            ):
                found.append(
                    f"{entity_id!r}: snapshot (revision {revision}) is not its latest change"
                )
            elif snapshot.wrapped_key and not snapshot.erased:
                found += self._key_problems(entity_id, snapshot.wrapped_key)
        if found and self.unsnapshotted():
            found.insert(
                0,
                f"the workers ran with a snapshot interval (KES_SNAPSHOT_EVERY > 1): partitions "
                f"{self.unsnapshotted()} of the changelog name events newer than their "
                "snapshots, which a migration does not fold; with the workers stopped, run "
                "`kes snapshots rebuild` (every entity's latest snapshot), then migrate again",
            )
        for entity_id in self.snapshots.keys() - self.revisions.keys():
            if not self.durable:
                found.append(f"{entity_id!r}: a snapshot and no events")
                continue
            snapshot = decode_snapshot(self.snapshots[entity_id])
            if snapshot.wrapped_key and not snapshot.erased:
                found += self._key_problems(entity_id, snapshot.wrapped_key)
        return found

    def resume_problems(self, present: Mapping[str, int]) -> list[str]:
        """Durable state, resuming: entities whose changes on the new set (`present`: entity ->
        last revision there) the old set can no longer continue, because retention deleted
        the changes that follow them since the earlier run."""
        found = []
        for entity_id, there in present.items() if self.durable else ():
            last = self.revisions.get(entity_id)
            if last is None:
                raw = self.snapshots.get(entity_id)
                last = there if raw is None else decode_snapshot(raw).revision
                first = last + 1
            else:
                first = self.starts().get(entity_id, 1)
            if there < last and first > there + 1:
                found.append(
                    f"{entity_id!r}: the new set holds its changes to revision {there}, the old "
                    f"set's now start at {first} (retention deleted changes since the earlier "
                    "run)"
                )
        return found

    def _key_problems(self, entity_id: str, wrapped: bytes) -> list[str]:
        raw = self.keys.get(entity_id)
        if raw is None:
            return [f"{entity_id!r}: a sealed snapshot and no record on the keys topic"]
        record = DataKey.FromString(raw)
        if record.erased or record.wrapped_key != wrapped:
            return [f"{entity_id!r}: its snapshot's data key is not its keys-topic record's"]
        return []

    def key_records(self) -> dict[str, bytes]:
        """Entity id -> its record for the new keys topic: the old one, and for an erased
        entity always an erasure marker (a wrapped key is never copied for one)."""
        erased = self.erased()
        return {
            entity_id: DataKey(entity_id=entity_id, erased=True).SerializeToString()
            if entity_id in erased and not DataKey.FromString(raw).erased
            else raw
            for entity_id, raw in self.keys.items()
        }

    def copied_outcomes(self) -> dict[str, bytes]:
        """The outcomes to copy: all but an erased entity's accepted ones that name erased
        events (a retry of such a command on the new set is answered ERASED)."""
        erased = self.erased()
        kept = {}
        for key, value in self.outcomes.items():
            at = erased.get(outcome_entity(key))
            if at is not None:
                reply = decode_outcome(value)[1]
                if reply.WhichOneof("outcome") == "accepted" and reply.accepted.revision < at:
                    continue
            kept[key] = value
        return kept

    def unsnapshotted(self) -> list[int]:
        """Changelog partitions whose last checkpoint names an events low-water."""
        return sorted(p for p, low in self.low_water.items() if low >= 0)

    def wanted(self) -> set[tuple[str, int]]:
        """(entity, revision) of every event an outcome names by offset: their new offsets are
        needed to rewrite the outcomes."""
        keys: set[tuple[str, int]] = set()
        for key, value in self.copied_outcomes().items():
            accepted = decode_outcome(value)[1].accepted
            last, count = accepted.revision, len(accepted.event_offsets)
            entity_id = outcome_entity(key)
            keys.update((entity_id, r) for r in range(last - count + 1, last + 1))
        return keys


@dataclass
class TargetProgress:
    """What the new events topic holds: revisions copied per entity, and new offsets needed."""

    wanted: set[tuple[str, int]]
    start: dict[str, int] = field(default_factory=dict)
    """Entity id -> its first revision on the new set, where not 1 (`SourceState.starts`)."""
    present: dict[str, int] = field(default_factory=dict)
    """Entity id -> the last revision on the new events topic (its events run from its start
    to that)."""
    first: dict[str, int] = field(default_factory=dict)
    """Entity id -> the new offset of its first event there."""
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """(entity, revision) -> new offset, for the events in `wanted`."""
    events: int = 0
    durable: bool = False
    """Durable state: an entity's first change there may precede its `start` (retention
    deleted it on the old set after an earlier run copied it; `SourceState.resume_problems`)."""
    first_revision: dict[str, int] = field(default_factory=dict)
    """Entity id -> the revision of its first event there."""

    def landed(self, entity_id: str, revision: int, offset: int, where: str) -> None:
        """An event is on the new events topic at `offset` (read back, or a delivery report, in
        the partition's offset order); raises MigrationError if it does not continue the
        entity's revisions there."""
        first = self.first_revision.setdefault(
            entity_id,
            min(revision, self.start.get(entity_id, revision))
            if self.durable
            else self.start.get(entity_id, 1),
        )
        last = self.present.get(entity_id, first - 1)
        if revision != last + 1:
            raise MigrationError(
                f"{where}: {entity_id!r} revision {revision} follows revision {last} on the new "
                "events topic: the new topic set was written by something other than this "
                "migration; delete it (or choose another prefix) and migrate again"
            )
        self.present[entity_id] = revision
        self.events += 1
        if revision == first:
            self.first[entity_id] = offset
        if (entity_id, revision) in self.wanted:
            self.offsets[(entity_id, revision)] = offset


def same_state(payload: bytes, state: any_pb2.Any) -> bool:
    """Whether a change record's payload (an encoded `Any`) holds the snapshot's state: equal
    bytes (kes packs deterministically), else equal messages once decoded."""
    change = any_pb2.Any.FromString(payload)
    if change.type_url == state.type_url and change.value == state.value:
        return True
    try:
        return unpack(change) == unpack(state)
    except DecodeError:
        return False


def rewrite_snapshot(value: bytes, first_event_offset: int) -> bytes:
    """An old snapshot as the new set's: `first_event_offset` (where kes.streams.client.history
    starts reading the entity's events) is its first event's offset on the new events topic, and
    `source_offset` (the offset on the commands topic it reflects) is -1: no command of the new,
    empty commands topic is reflected yet. Entity id, revision, state (sealed parts as they
    are), its wrapped data key and recent command ids (duplicate detection) are kept; an
    erasure marker stays a marker (no history: its offset is not set)."""
    snapshot = decode_snapshot(value)
    if not snapshot.erased:
        snapshot.first_event_offset = first_event_offset
    snapshot.source_offset = -1
    return encode_snapshot(snapshot)


def rewrite_outcome(
    key: str, value: bytes, partition: int, offset_of: Callable[[str, int], int | None]
) -> bytes:
    """An old outcome as the new set's: an accepted outcome names its events' partition and
    offsets (a replayed reply carries them, and `read_after` waits for them), so both are
    recomputed; `offset_of(entity, revision)` is an event's new offset, None for a durable-state
    change deleted by retention before the migration: then the outcome names no offsets (as a
    reply without events; nothing is left to wait for) and still answers a retry. The decision
    time is kept, so the outcome expires when it would have."""
    decided, reply = decode_outcome(value)
    if reply.WhichOneof("outcome") == "accepted":
        accepted = reply.accepted
        last, count = accepted.revision, len(accepted.event_offsets)
        entity_id = outcome_entity(key)
        offsets = [offset_of(entity_id, r) for r in range(last - count + 1, last + 1)]
        accepted.partition = partition
        del accepted.event_offsets[:]
        if None not in offsets:
            accepted.event_offsets.extend(o for o in offsets if o is not None)
    return encode_outcome(decided, reply)
