"""The snapshot policy: which changed entities a batch snapshots to the changelog. Pure, no I/O.

With `every = N` an entity's snapshot goes to the snapshot changelog once N revisions have
gathered since its last one there; the revisions in between are its *tail*, kept only in the
events topic (the truth) and, as the latest state, in the worker's local store (a snapshot with
`pending_revisions` set, never sent to the changelog). `every = 1` snapshots every change:
the records written are then exactly those of a worker without a policy.

The invariant every committed transaction keeps, per partition:

    every event of an entity whose revision is above the entity's snapshot in the changelog
    lies at an events-partition offset >= the low-water carried by the partition's last
    checkpoint record (the `kes-events-from` header; no header: there is no such event).

How it is kept, per batch (`SnapshotPolicy.plan`, then `BatchResult.settle` once the events'
offsets are known, then `TailIndex.commit` after the transaction committed):
 1. a changed entity is snapshotted when its pending revisions reach `every`, when it changed
    without an event (an accepted command with no events moves its recent command ids, which
    no event records), or when the low-water bound below asks for it; otherwise it joins the
    tail index, and if its tail starts in this batch, at its first event of the batch;
 2. bound: an entity whose tail starts more than `max_tail` offsets behind the newest known
    event is snapshotted (its latest state is the worker's: cache or local store), at most
    `max_forced` per batch; with `every = 1` every leftover tail is (a worker that ran with a
    larger interval before);
 3. the low-water is the first tail (index order is offset order: a new tail starts at an event
    written after every earlier one) not snapshotted by this batch, else the first tail the
    batch starts, else none; it goes into the batch's checkpoint record in the same
    transaction, so a crash or a move never separates them;
 4. only after the commit does the index drop the snapshotted tails and add the new ones.
Why the low-water is never too late: an entity's tail can only end by a changelog snapshot of
it, which the index sees (1, 2); an entity with a tail is in the index from the batch its tail
started, with that batch's offset of its first unsnapshotted event; the minimum over the index
is therefore at or below every unsnapshotted event. Recovery (kes.streams.runtime.tailfold) folds
from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kes.streams.core.behavior import Behavior
    from kes.streams.cycle.entity import Entity
    from kes.streams.cycle.result import BatchResult

__all__ = [
    "EVENTS_FROM_HEADER",
    "SnapshotPolicy",
    "TailIndex",
    "events_from_header",
    "interval_for",
]

EVENTS_FROM_HEADER = "kes-events-from"
"""Header of a checkpoint record: the events low-water (decimal), absent when there is none."""


def events_from_header(headers: Iterable[tuple[str, bytes | str | None]] | None) -> int:
    """The low-water a checkpoint record's headers carry (-1: none, every snapshot is latest)."""
    for key, value in headers or ():
        if key == EVENTS_FROM_HEADER and value:
            text = value.decode() if isinstance(value, bytes) else value
            return int(text)
    return -1


def interval_for(behavior: Behavior[Any], default: int) -> int:
    """The snapshot interval of one aggregate: its behavior's own `snapshot_every` when it
    declares one (a durable-state behavior always 1), else `default` (`KES_SNAPSHOT_EVERY`)."""
    own = behavior.snapshot_every  # validated (>= 1) when the behavior is declared
    return own if own is not None else default


class TailIndex:
    """The entities of one partition whose latest revisions are not in the changelog, each with
    the events offset of its first such revision, oldest first; and the newest event offset
    known (for the bound). Changed only by `commit`, after a transaction committed."""

    def __init__(self, tails: Iterable[tuple[str, int]] = (), last_offset: int = -1) -> None:
        self._tails: dict[str, int] = dict(sorted(tails, key=lambda t: t[1]))
        self.last_offset = max(last_offset, max(self._tails.values(), default=-1))

    def __len__(self) -> int:
        return len(self._tails)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._tails

    def items(self) -> Iterator[tuple[str, int]]:
        """(entity id, offset of its first unsnapshotted event), oldest first."""
        return iter(self._tails.items())

    def low_water(self) -> int:
        """The oldest tail's offset (-1: none)."""
        return next(iter(self._tails.values()), -1)

    def commit(self, result: BatchResult) -> None:
        """A batch committed: its snapshotted entities leave, its new tails join at the end."""
        tails = self._tails
        if tails:
            for entity_id in result.changed:
                if entity_id not in result.unlogged:
                    tails.pop(entity_id, None)
        tails.update(result.tail_offsets)
        self.last_offset = max(self.last_offset, result.last_event_offset)


@dataclass(frozen=True)
class SnapshotPolicy:
    """When a changed entity's snapshot goes to the changelog (see the module docstring)."""

    every: int = 1
    """Snapshot once this many revisions are pending (1: with every change)."""
    max_tail: int = 100_000
    """Snapshot an entity whose tail starts more than this many offsets behind the newest."""
    max_forced: int = 1_000
    """At most this many snapshots per batch because of `max_tail` (or a leftover tail)."""

    def plan(self, result: BatchResult, tails: TailIndex, load: Callable[[str], Entity]) -> None:
        """Decide which of the batch's entities stay unlogged (steps 1-3 of the docstring, up to
        the offsets); `load(entity_id)` is the entity's committed state (cache, else store)."""
        every = self.every
        unlogged = result.unlogged
        for entity_id, entity in result.changed.items():
            # A tail is either in the index or starts in this batch; a local snapshot claiming
            # pending revisions the index does not know is snapshotted, not trusted.
            known = entity_id in tails or entity_id in result.starts
            if 0 < entity.pending < every and entity_id not in result.must_log and known:
                unlogged.add(entity_id)
            else:
                entity.pending = 0
        if tails:
            self._bound(result, tails, load)
        result.tail_starts = {e: i for e, i in result.starts.items() if e in unlogged}
        result.old_low = -1
        for entity_id, offset in tails.items():
            if entity_id not in result.changed or entity_id in unlogged:
                result.old_low = offset
                break
        result.track_offsets = every > 1

    def _bound(self, result: BatchResult, tails: TailIndex, load: Callable[[str], Entity]) -> None:
        """Step 2: snapshot the oldest tails past the bound (every leftover one with every = 1)."""
        threshold = tails.last_offset - self.max_tail
        for forced, (entity_id, offset) in enumerate(tails.items()):
            if forced >= self.max_forced or (self.every > 1 and offset >= threshold):
                break
            changed = result.changed.get(entity_id)
            if changed is None:
                result.changed[entity_id] = replace(load(entity_id), pending=0)
            elif entity_id in result.unlogged:
                result.unlogged.discard(entity_id)
                changed.pending = 0
