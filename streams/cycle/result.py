"""What one batch of commands writes, in one transaction: events, replies and outcomes, dead
letters, forwards, keys and tombstones, the changed entities; and the reply and outcome records
once the events' offsets are known."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from kes.schemas.kes.v1.envelopes_pb2 import Reply
from kes.streams.cycle.entity import Entity
from kes.streams.cycle.idempotency import encode_outcome
from kes.streams.cycle.records import Headers, OutRecord

__all__ = ["BatchResult", "PendingReply", "outcome_records", "reply_records"]


@dataclass
class PendingReply:
    """A command's outcome as a reply, whose accepted event offsets are known only once the
    events are written; sent when the command wanted a reply, stored when `outcome` is set."""

    reply: Reply
    event_indexes: list[int]
    send: bool = True
    outcome: str = ""
    """The outcome-store key this reply is kept under ("" when it is not kept)."""
    partition: int = -1
    """The replies partition the client reads (-1: the command's partition)."""


@dataclass
class BatchResult:
    """What one batch writes, in one transaction."""

    events: list[OutRecord] = field(default_factory=list)
    replies: list[PendingReply] = field(default_factory=list)
    """Every outcome of the batch (sent, kept, or both), in command order."""
    expired: list[str] = field(default_factory=list)
    """Outcome keys to remove (tombstones): past the horizon or beyond the count."""
    dead_letters: list[OutRecord] = field(default_factory=list)
    forwards: list[OutRecord] = field(default_factory=list)
    keys: list[OutRecord] = field(default_factory=list)
    """Records for the keys topic: new entities' data keys, erased entities' markers."""
    tombstones: list[OutRecord] = field(default_factory=list)
    """Tombstones of erased entities' event keys (written after every event of the batch)."""
    erased: list[str] = field(default_factory=list)
    """Entities erased by this batch (their outcomes are removed too)."""
    changed: dict[str, Entity] = field(default_factory=dict)
    first_events: dict[str, int] = field(default_factory=dict)
    """Entities whose first event this batch writes: entity id -> index in `events`."""
    starts: dict[str, int] = field(default_factory=dict)
    """Entities with no pending revision before the batch -> index of their first event in it."""
    must_log: set[str] = field(default_factory=set)
    """Entities changed by an accepted command without events: snapshotted whatever the policy."""
    unlogged: set[str] = field(default_factory=set)
    """Changed entities whose snapshot goes to the local store only
    (kes.streams.cycle.snapshotpolicy); every other changed entity's goes to the changelog too."""
    tail_starts: dict[str, int] = field(default_factory=dict)
    """Unlogged entities whose tail starts in this batch -> index of its first event."""
    old_low: int = -1
    """The oldest tail from before the batch that the batch leaves (-1: none)."""
    track_offsets: bool = False
    """The events' offsets are wanted even when nothing else needs them (the tail bound)."""
    tail_offsets: dict[str, int] = field(default_factory=dict)
    """`settle`: offsets of the new tails' first events."""
    last_event_offset: int = -1
    """`settle`: the offset of the batch's last event (-1: unknown)."""
    events_from: int = -1
    """`settle`: the partition's events low-water after this batch, for its checkpoint."""
    next_command_offset: int = -1
    now: Timestamp = field(default_factory=Timestamp)
    """The time the batch was decided: every event of it carries this timestamp."""
    timestamps: list[int] = field(default_factory=list)
    """The commands' record timestamps (ms), for the age metric: one per command of the batch."""
    accepted: int = 0
    rejected: int = 0
    replayed: int = 0
    outcomes: dict[str, PendingReply] = field(default_factory=dict)
    """The outcomes this batch keeps, by key: a retry later in the batch is answered from here."""
    traces: list[Headers] = field(default_factory=list)
    """The trace headers of the batch's traced decisions: its transaction's span links them."""
    stale: set[str] = field(default_factory=set)
    """Outcome keys the store still holds though expired: the batch's new outcome replaces them
    (every other key in `outcomes` is new to the store)."""

    @property
    def needs_offsets(self) -> bool:
        """True when the events' offsets must be known before the checkpoint: a new entity's
        snapshot, replies, kept outcomes and the snapshot policy's tails record them."""
        return bool(
            self.first_events
            or self.replies
            or self.tail_starts
            or (self.track_offsets and self.events)
        )

    def settle(self, event_offsets: Sequence[int]) -> None:
        """Record the events' offsets where the snapshot policy needs them (call once they are
        delivered, or with none when `needs_offsets` was False): the new tails' starts, the
        last event's offset, and the low-water for the checkpoint
        (kes.streams.cycle.snapshotpolicy)."""
        for entity_id, index in self.tail_starts.items():
            self.tail_offsets[entity_id] = event_offsets[index]
        if event_offsets:
            self.last_event_offset = event_offsets[-1]
        if self.old_low >= 0:
            self.events_from = self.old_low
        else:
            self.events_from = min(self.tail_offsets.values(), default=-1)

    def new_outcomes(self) -> set[str]:
        """Keys of this batch's outcomes that the store does not hold yet."""
        return set(self.outcomes) - self.stale

    @property
    def decided_ms(self) -> int:
        """The decision time in ms since the epoch (what outcomes are stamped with)."""
        return self.now.seconds * 1000 + self.now.nanos // 1_000_000

    @property
    def commands(self) -> int:
        """Commands in the batch."""
        return len(self.timestamps)


def reply_records(
    result: BatchResult, event_offsets: Sequence[int], replies_topic: str, partition: int
) -> list[OutRecord]:
    """The reply records of a batch; fills every outcome's accepted event offsets first (call
    once, before `outcome_records`)."""
    out = []
    for pending in result.replies:
        reply = pending.reply
        if pending.event_indexes:
            reply.accepted.event_offsets.extend(event_offsets[i] for i in pending.event_indexes)
        if pending.send:
            value = reply.SerializeToString()
            to = pending.partition if pending.partition >= 0 else partition
            out.append(OutRecord(replies_topic, to, reply.command_id.encode(), value, []))
    return out


def outcome_records(result: BatchResult, snapshots_topic: str, partition: int) -> list[OutRecord]:
    """The outcome-store records of a batch (after `reply_records` filled the event offsets)."""
    decided = result.decided_ms
    return [
        OutRecord(
            snapshots_topic,
            partition,
            pending.outcome.encode(),
            encode_outcome(decided, pending.reply),
            [],
        )
        for pending in result.replies
        if pending.outcome
    ]
