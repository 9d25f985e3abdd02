"""Moving an aggregate to a new topic set with another partition count: the pure part.

An entity's partition is murmur2(entity id) % partitions, so a new partition count moves most
entities. `streams.migrator` copies every entity's history and state into a new topic set; this
module holds the rules it follows, without I/O:

- what the old set holds (`SourceState`): the snapshot changelog's latest record per key
  (entity snapshots, command outcomes; the checkpoints name the owning group) and each entity's
  last event revision, checked to be 1, 2, 3, ... in log order and to match its snapshot. With a
  snapshot interval (KES_SNAPSHOT_EVERY > 1, streams.snapshotpolicy) a snapshot may lag its
  events: the migration copies snapshots, it does not fold events, so it refuses such a set and
  says to snapshot every entity first (`kes snapshots rebuild`, workers stopped); the new set's
  checkpoints then carry no events low-water, which the policy reads as "every snapshot is the
  latest", true of what was copied;
- what the new set already holds (`TargetProgress`): per entity, the revisions copied so far
  (always 1..k: each entity's events are copied in revision order to one partition, in
  transactions), and the new offsets of the events that snapshots and outcomes name;
- how snapshots and outcomes are rewritten for the new set (`rewrite_snapshot`,
  `rewrite_outcome`): every field that names an offset of the old topics is recomputed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from schemas.codec import decode_snapshot, encode_snapshot
from schemas.errors import MigrationError
from streams.batch import CHECKPOINT_KEY, decode_checkpoint
from streams.idempotency import OUTCOME_PREFIX, decode_outcome, encode_outcome, is_outcome_key
from streams.snapshotpolicy import events_from_header

__all__ = [
    "MIGRATED_FROM_HEADER",
    "SourceState",
    "TargetProgress",
    "outcome_entity",
    "rewrite_outcome",
    "rewrite_snapshot",
]

MIGRATED_FROM_HEADER = "kes-migrated-from"
"""Header added to each copied event: where it was on the old set, `<topic>[<p>]@<offset>`.
Its key, value and other headers are the original's."""


def outcome_entity(key: str) -> str:
    """The entity id in an outcome key (`NUL entity NUL command-id`)."""
    return key[len(OUTCOME_PREFIX) :].split(OUTCOME_PREFIX, 1)[0]


@dataclass
class SourceState:
    """The old set as read: latest changelog record per key, last event revision per entity."""

    snapshots: dict[str, bytes] = field(default_factory=dict)
    """Entity id -> its latest snapshot (encoded)."""
    outcomes: dict[str, bytes] = field(default_factory=dict)
    """Outcome key -> its latest value (tombstoned outcomes are left out)."""
    owners: dict[int, str] = field(default_factory=dict)
    """Changelog partition -> the group its last checkpoint names."""
    next_commands: dict[int, int] = field(default_factory=dict)
    """Changelog partition -> the next command offset of its last checkpoint."""
    revisions: dict[str, int] = field(default_factory=dict)
    """Entity id -> the last event revision seen on the events topic."""
    low_water: dict[int, int] = field(default_factory=dict)
    """Changelog partition -> the events low-water of its last checkpoint (-1: none), set when
    the workers ran with a snapshot interval and left events newer than some snapshots."""
    events: int = 0

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
        into = self.outcomes if is_outcome_key(name) else self.snapshots
        if value:
            into[name] = value
        else:
            into.pop(name, None)  # a tombstone: the record is gone

    def event(self, entity_id: str, revision: int, where: str) -> None:
        """Take one event (from its key), read in its partition's offset order; raises
        MigrationError when the entity's revisions on the log are not 1, 2, 3, ..."""
        last = self.revisions.get(entity_id, 0)
        if revision != last + 1:
            raise MigrationError(
                f"{where}: {entity_id!r} revision {revision} follows revision {last}: the old "
                "events log is not contiguous (run `kes verify`); nothing can be migrated from it"
            )
        self.revisions[entity_id] = revision
        self.events += 1

    def problems(self) -> list[str]:
        """Why the old set cannot be migrated as it is (empty when it can): every entity with
        events needs a snapshot at its last revision, and no snapshot may lack its events."""
        found = []
        for entity_id, revision in self.revisions.items():
            raw = self.snapshots.get(entity_id)
            if raw is None:
                found.append(f"{entity_id!r}: {revision} events, no snapshot")
            elif (held := decode_snapshot(raw).revision) != revision:
                found.append(f"{entity_id!r}: snapshot at revision {held}, events up to {revision}")
        if found and self.unsnapshotted():
            found.insert(
                0,
                f"the workers ran with a snapshot interval (KES_SNAPSHOT_EVERY > 1): partitions "
                f"{self.unsnapshotted()} of the changelog name events newer than their "
                "snapshots, which a migration does not fold; with the workers stopped, run "
                "`kes snapshots rebuild` (every entity's latest snapshot), then migrate again",
            )
        for entity_id in self.snapshots.keys() - self.revisions.keys():
            found.append(f"{entity_id!r}: a snapshot and no events")
        return found

    def unsnapshotted(self) -> list[int]:
        """Changelog partitions whose last checkpoint names an events low-water."""
        return sorted(p for p, low in self.low_water.items() if low >= 0)

    def wanted(self) -> set[tuple[str, int]]:
        """(entity, revision) of every event an outcome names by offset: their new offsets are
        needed to rewrite the outcomes."""
        keys: set[tuple[str, int]] = set()
        for key, value in self.outcomes.items():
            accepted = decode_outcome(value)[1].accepted
            last, count = accepted.revision, len(accepted.event_offsets)
            entity_id = outcome_entity(key)
            keys.update((entity_id, r) for r in range(last - count + 1, last + 1))
        return keys


@dataclass
class TargetProgress:
    """What the new events topic holds: revisions copied per entity, and new offsets needed."""

    wanted: set[tuple[str, int]]
    present: dict[str, int] = field(default_factory=dict)
    """Entity id -> the last revision on the new events topic (its events are 1..that)."""
    first: dict[str, int] = field(default_factory=dict)
    """Entity id -> the new offset of its first event."""
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """(entity, revision) -> new offset, for the events in `wanted`."""
    events: int = 0

    def landed(self, entity_id: str, revision: int, offset: int, where: str) -> None:
        """An event is on the new events topic at `offset` (read back, or a delivery report, in
        the partition's offset order); raises MigrationError if it does not continue the
        entity's revisions there."""
        last = self.present.get(entity_id, 0)
        if revision != last + 1:
            raise MigrationError(
                f"{where}: {entity_id!r} revision {revision} follows revision {last} on the new "
                "events topic: the new topic set was written by something other than this "
                "migration; delete it (or choose another prefix) and migrate again"
            )
        self.present[entity_id] = revision
        self.events += 1
        if revision == 1:
            self.first[entity_id] = offset
        if (entity_id, revision) in self.wanted:
            self.offsets[(entity_id, revision)] = offset


def rewrite_snapshot(value: bytes, first_event_offset: int) -> bytes:
    """An old snapshot as the new set's: `first_event_offset` (where streams.history starts reading
    the entity's events) is its first event's offset on the new events topic, and
    `source_offset` (the offset on the commands topic it reflects) is -1: no command of the new,
    empty commands topic is reflected yet. Entity id, revision, state and recent command ids
    (duplicate detection) are kept."""
    snapshot = decode_snapshot(value)
    snapshot.first_event_offset = first_event_offset
    snapshot.source_offset = -1
    return encode_snapshot(snapshot)


def rewrite_outcome(
    key: str, value: bytes, partition: int, offset_of: Callable[[str, int], int]
) -> bytes:
    """An old outcome as the new set's: an accepted outcome names its events' partition and
    offsets (a replayed reply carries them, and `read_after` waits for them), so both are
    recomputed; `offset_of(entity, revision)` is an event's new offset. The decision time is
    kept, so the outcome expires when it would have."""
    decided, reply = decode_outcome(value)
    if reply.WhichOneof("outcome") == "accepted":
        accepted = reply.accepted
        last, count = accepted.revision, len(accepted.event_offsets)
        entity_id = outcome_entity(key)
        accepted.partition = partition
        del accepted.event_offsets[:]
        accepted.event_offsets.extend(
            offset_of(entity_id, r) for r in range(last - count + 1, last + 1)
        )
    return encode_outcome(decided, reply)
