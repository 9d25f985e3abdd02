"""Recovery's second half with a snapshot interval: fold the events the changelog's snapshots
do not hold, from the partition's events low-water to its end (kes.streams.cycle.snapshotpolicy).

After kes.streams.runtime.recovery, a partition's local store holds, per entity, the newer of its
local snapshot and its changelog snapshot; the checkpoint names the low-water L of the last
checkpoint record (or the local one's). Why that is enough to end at every entity's latest revision,
in every case:
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

Personal data (kes.schemas.personal): a sealed event is opened with its entity's data key before it
is folded, so the folded state is the real one. The key is the stored snapshot's; an entity with no
snapshot in the changelog yet (its first events all in the tail) takes it from the keys topic,
written in the transaction of its first event, and keeps it: the worker seals its next events
with that key, never a second one. An erased entity's changelog snapshot is always its erasure
marker (an erasure is snapshotted at once, kes.streams.cycle.batch): every event of it is at or
below the marker's revision and skipped, so a fold never brings it back; an EntityErased event above
the stored revision (a changelog without the marker) makes the entity the marker all the same.

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

from kes.schemas.codec import decode_event, decode_snapshot
from kes.schemas.errors import DecodeError, KesError, KeyUnavailableError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.schemas.kes.v1.personal_pb2 import DataKey
from kes.schemas.personal import has_personal, open_sealed
from kes.stores.snapshots import Checkpoint, PartitionSnapshots
from kes.streams.config.durablestate import refuse_fold
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.behavior import Behavior
from kes.streams.core.eventversions import check_event_version
from kes.streams.core.keyring import DataKeys
from kes.streams.cycle.entity import Entity
from kes.streams.cycle.records import ERASED_EVENT_TYPE
from kes.streams.cycle.snapshotpolicy import TailIndex
from kes.streams.kafka.keyreader import KeysTopic
from kes.streams.kafka.readback import read_records
from kes.topology.layout import AggregateTopics

__all__ = ["TailFold", "fold_tail"]

log = logging.getLogger(__name__)

_CHUNK = 5_000
"""Folded events per local write: bounds the entities held decoded."""


class TailFold:
    """Folds one partition's events, in offset order, onto its stored entities (pure).

    `load(entity_id)` is the entity as stored (None: no snapshot). `take()` hands over the
    entities changed since the last take, to be written; a later event of one reloads it.
    `key_record(entity_id)` answers the keys topic's record of an entity without a key in its
    stored snapshot, opened with `keys`, to open its sealed events. A record that says erased
    (the entity's erasure is further on in the log, the changelog lacking its marker) lets its
    events fold without their personal fields until its EntityErased makes it the marker;
    `finish` raises if that never came. An event of a schema version above the one the
    behavior declares for its type raises SchemaVersionError (kes.streams.core.eventversions).
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
        keys: DataKeys | None = None,
        key_record: Callable[[str], DataKey | None] | None = None,
        source: str = "the events topic",
    ) -> None:
        self.behavior = behavior
        self._source = source
        """Where the records come from, `topic[partition]`, for the operator's messages."""
        self._keys = keys
        self._key_record = key_record
        self._erasing: set[str] = set()
        """Entities whose key record says erased, not yet at their EntityErased."""
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
            return  # the changelog snapshot holds it (an erasure marker: every event of it)
        if env.event_type == ERASED_EVENT_TYPE:
            self._erased(entity, env, offset, logged)
            return
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
        if entity.erased:
            raise KesError(
                f"{entity_id}: event revision {env.revision} at offset {offset} follows its "
                f"erasure at revision {entity.revision}"
            )
        if env.HasField("sealed"):  # opened as written: its sealed bytes name the stored type
            self._open(entity, env, offset)
        if self._adapters is not None:
            env = self._adapters.adapt(env)
        check_event_version(self.behavior, env, f"{self._source}@{offset}")
        entity.apply(self.behavior, env, offset, self._recent)
        entity.pending += 1
        self._dirty.add(entity_id)
        self.folded += 1

    def _open(self, entity: Entity, env: EventEnvelope, offset: int) -> None:
        """Put a sealed event's personal fields back in its payload, with the entity's key."""
        entity_id = entity.entity_id
        if entity.key is None and self._key_record is not None and self._keys is not None:
            record = self._key_record(entity_id)
            if record is not None and record.erased:
                self._erasing.add(entity_id)
                env.ClearField("sealed")  # its EntityErased follows: the state is dropped there
                return
            if record is not None and record.wrapped_key:
                entity.key = self._keys.open(entity_id, record.wrapped_key, record.master_key_id)
        if entity.key is None:
            raise KesError(
                f"{entity_id}: event revision {env.revision} at offset {offset} is sealed and "
                "the entity has no data key (stored snapshot, keys topic): its state cannot be "
                "folded"
            )
        packed = env.payload
        packed.value = open_sealed(
            packed.value, env.sealed, entity.key.aead, entity_id, packed.TypeName()
        )
        env.ClearField("sealed")

    def _erased(self, entity: Entity, env: EventEnvelope, offset: int, logged: int) -> None:
        """An EntityErased event above the changelog snapshot: the entity becomes its marker
        (its earlier events may be compacted away), unsnapshotted until the policy logs it."""
        self.tails.setdefault(entity.entity_id, offset)
        self._erasing.discard(entity.entity_id)
        if env.revision <= entity.revision:
            return
        entity.state = self.behavior.initial_state(entity.entity_id)
        entity.revision, entity.source_offset = env.revision, env.source_offset
        entity.erased, entity.key, entity.sealed_state = True, None, None
        entity.recent_command_ids, entity.first_event_offset = [], -1
        entity.pending = env.revision - logged
        self._dirty.add(entity.entity_id)
        self.folded += 1

    def finish(self) -> None:
        """Raise if an entity folded without its personal fields met no EntityErased."""
        if self._erasing:
            raise KesError(
                f"{sorted(self._erasing)[:5]}: erased on the keys topic, but no EntityErased "
                "event follows their sealed events: rebuild the snapshots from the events "
                "(kes snapshots rebuild) after stopping the workers"
            )

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
    topics: AggregateTopics,
    partition: int,
    store: PartitionSnapshots,
    checkpoint: Checkpoint,
    client_config: Mapping[str, Any],
    *,
    adapters: EventAdapters | None = None,
    recent_command_ids: int = 32,
    strict: bool = True,
    keys: DataKeys | None = None,
) -> TailIndex:
    """Fold a recovered partition's events from its checkpoint's low-water into its store.

    1. read the events partition from `checkpoint.events_from` to its end (committed records);
    2. fold each onto the stored entity (`TailFold`);
    3. every `_CHUNK` events and at the end, write the changed entities to the store with the
       same checkpoint (a crash in between folds again from the same low-water: events the
       store already holds are skipped);
    and answer the tail index. A checkpoint without a low-water answers an empty index.
    `strict` (exactly-once) refuses an event past the checkpoint, else it is skipped. With
    personal fields `keys` opens the stored snapshots' keys and the keys topic's.
    """
    if checkpoint.events_from < 0:
        return TailIndex()
    refuse_fold(behavior, "folding the events after its snapshots")
    began = time.monotonic()
    personal = has_personal([behavior.state_type, *behavior.event_types])
    if personal and keys is None:
        raise KeyUnavailableError(
            f"aggregate {behavior.name!r} has personal fields: folding its events needs the "
            "master key (KES_MASTER_KEY or KES_MASTER_KEY_FILE)"
        )
    keys_topic = KeysTopic(topics, client_config) if personal else None

    def load(entity_id: str) -> Entity | None:
        raw = store.get(entity_id)
        return None if raw is None else Entity.restore(decode_snapshot(raw), behavior, keys)

    def key_record(entity_id: str) -> DataKey | None:
        try:
            return None if keys_topic is None else keys_topic.lookup(entity_id)
        except DecodeError:
            raise
        except KesError as exc:  # a read that stalled (a broker restarting): done again
            raise TimeoutError(f"reading {topics.keys}: {exc}") from exc

    fold = TailFold(
        behavior,
        load,
        checkpoint.next_command_offset,
        adapters=adapters,
        recent_command_ids=recent_command_ids,
        strict=strict,
        keys=keys,
        key_record=key_record,
        source=f"{topics.events}[{partition}]",
    )
    read = 0
    start = {partition: checkpoint.events_from}
    events_topic = topics.events
    try:
        for record in read_records(
            events_topic, topics.partitions, client_config, only=[partition], start=start
        ):
            fold.add(record.offset, record.value)
            read += 1
            if read % _CHUNK == 0:
                _write(store, fold.take(), checkpoint)
    finally:
        if keys_topic is not None:
            keys_topic.close()
    fold.finish()
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
