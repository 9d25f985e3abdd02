"""Recovery's second half with a snapshot interval: fold the events the changelog's snapshots
do not hold, from the partition's events low-water to its end (streams.snapshotpolicy).

After streams.recovery, a partition's local store holds, per entity, the newer of its local
snapshot and its changelog snapshot; the checkpoint names the low-water L of the last checkpoint
record (or the local one's). Why that is enough to end at every entity's latest revision, in
every case:
- the policy's invariant: every event above an entity's changelog snapshot lies at >= L;
- cold (a fresh volume): each entity is its changelog snapshot (or nothing), and folding its
  events above that revision from L gives the latest; an event missing (a revision above the
  snapshot's + 1 seen first) would break the invariant and raises instead of restarting the
  entity at a stale revision;
- warm, local store behind the changelog: the replay moved each entity to at least its changelog
  snapshot, the rest is the cold case;
- warm, local store ahead of the changelog (the local store holds every change, the changelog
  one in N): events at or below the local revision are skipped, the others folded;
- a partition that moved: the new owner's store is cold or an older warm one; as above.
The tail index (which entities have unsnapshotted events, from which offset) is rebuilt from the
same read: an entity's first event above its changelog revision is its tail's start, and by the
invariant every such first event lies at >= L.

Events read stop at the partition's end (read_committed: after the recovery's wait for the
predecessor's transaction, every committed event, all of them covered by the checkpoint); an
event from a command at or past the checkpoint's next command offset would be one the
checkpoint does not cover, and raises. (With at-least-once, a crash can leave such events
before their checkpoint: they are skipped there, and decided again with their commands.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from schemas.codec import decode_event, decode_snapshot
from schemas.errors import KesError
from stores.snapshots import Checkpoint, PartitionSnapshots
from streams.adapters import EventAdapters
from streams.batch import Entity
from streams.behavior import Behavior
from streams.snapshotpolicy import TailIndex
from streams.verify import read_records

__all__ = ["TailFold", "fold_tail"]

log = logging.getLogger(__name__)

_CHUNK = 5_000
"""Folded events per local write: bounds the entities held decoded."""


class TailFold:
    """Folds one partition's events, in offset order, onto its stored entities (pure).

    `load(entity_id)` is the entity as stored (None: no snapshot). `take()` hands over the
    entities changed since the last take, to be written; a later event of one reloads it.
    """

    def __init__(
        self,
        behavior: Behavior[Any],
        load: Callable[[str], Entity | None],
        next_command_offset: int,
        *,
        adapters: EventAdapters | None = None,
        recent_command_ids: int = 32,
        strict: bool = True,
    ) -> None:
        self.behavior = behavior
        self._strict = strict
        self._load = load
        self._next_command = next_command_offset
        self._adapters = adapters
        self._recent = recent_command_ids
        self._held: dict[str, Entity] = {}
        self._dirty: set[str] = set()
        self.tails: dict[str, int] = {}
        """Entity id -> offset of its first event above its changelog snapshot (read order)."""
        self.folded = 0
        """Events applied (those the stored state did not hold yet)."""
        self.last_offset = -1

    def add(self, offset: int, value: bytes | None) -> None:
        """Fold one event record (a tombstone is skipped)."""
        self.last_offset = offset
        if value is None:
            return
        env = decode_event(value)
        if self._adapters is not None:
            env = self._adapters.adapt(env)
        entity_id = env.entity_id
        if env.source_offset >= self._next_command:
            if not self._strict:
                return  # at-least-once: written before a crash, decided again
            raise KesError(
                f"{entity_id}: event revision {env.revision} at offset {offset} comes from "
                f"command offset {env.source_offset}, at or past the checkpoint's next command "
                f"offset {self._next_command}: the events are ahead of the snapshot changelog"
            )
        entity = self._held.get(entity_id)
        if entity is None:
            entity = self._load(entity_id)
            if entity is None:
                entity = Entity(entity_id, 0, self.behavior.initial_state(entity_id), [])
            self._held[entity_id] = entity
        logged = entity.revision - entity.pending
        if env.revision <= logged:
            return  # the changelog snapshot holds it
        if entity_id not in self.tails:
            if env.revision != logged + 1:
                raise KesError(
                    f"{entity_id}: its first event above its changelog snapshot (revision "
                    f"{logged}) is revision {env.revision} at offset {offset}: revision "
                    f"{logged + 1} lies before the recorded low-water; rebuild the snapshots "
                    "from the events (kes snapshots rebuild) after stopping the workers"
                )
            self.tails[entity_id] = offset
        if env.revision <= entity.revision:
            return  # the local store holds it already
        entity.apply(self.behavior, env, offset, self._recent)
        entity.pending += 1
        self._dirty.add(entity_id)
        self.folded += 1

    def take(self) -> dict[str, Entity]:
        """The entities changed since the last take (every entity is then forgotten here)."""
        changed = {e: self._held[e] for e in self._dirty}
        self._held, self._dirty = {}, set()
        return changed

    def index(self) -> TailIndex:
        """The tail index the fold found: every entity with events above its changelog
        snapshot, oldest tail first."""
        return TailIndex(self.tails.items(), self.last_offset)


def fold_tail(
    behavior: Behavior[Any],
    events_topic: str,
    partitions: int,
    partition: int,
    store: PartitionSnapshots,
    checkpoint: Checkpoint,
    client_config: Mapping[str, Any],
    *,
    adapters: EventAdapters | None = None,
    recent_command_ids: int = 32,
    strict: bool = True,
) -> TailIndex:
    """Fold a recovered partition's events from its checkpoint's low-water into its store.

    1. read the events partition from `checkpoint.events_from` to its end (committed records);
    2. fold each onto the stored entity (`TailFold`);
    3. every `_CHUNK` events and at the end, write the changed entities to the store with the
       same checkpoint (a crash in between folds again from the same low-water: events the
       store already holds are skipped);
    and answer the tail index. A checkpoint without a low-water answers an empty index.
    `strict` (exactly-once) refuses an event past the checkpoint, else it is skipped.
    """
    if checkpoint.events_from < 0:
        return TailIndex()
    began = time.monotonic()

    def load(entity_id: str) -> Entity | None:
        raw = store.get(entity_id)
        return None if raw is None else Entity.restore(decode_snapshot(raw))

    fold = TailFold(
        behavior,
        load,
        checkpoint.next_command_offset,
        adapters=adapters,
        recent_command_ids=recent_command_ids,
        strict=strict,
    )
    read = 0
    start = {partition: checkpoint.events_from}
    for record in read_records(
        events_topic, partitions, client_config, only=[partition], start=start
    ):
        fold.add(record.offset, record.value)
        read += 1
        if read % _CHUNK == 0:
            _write(store, fold.take(), checkpoint)
    _write(store, fold.take(), checkpoint)
    log.info(
        "%s[%d]: folded %d of %d events from offset %d; %d entities with unsnapshotted events "
        "(%.2fs)",
        events_topic, partition, fold.folded, read, checkpoint.events_from, len(fold.tails),
        time.monotonic() - began,
    )  # fmt: skip
    return fold.index()


def _write(store: PartitionSnapshots, entities: dict[str, Entity], checkpoint: Checkpoint) -> None:
    if entities:
        store.write(
            {e: entity.snapshot().SerializeToString() for e, entity in entities.items()},
            checkpoint,
        )
