"""An entity as the worker holds it between commands: its state, revision and recent command
ids, the snapshot it writes and the snapshot it is restored from (migrated, personal fields
opened), and the fold of one more event of its log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from kes.schemas.codec import (
    pack,
    unpack,
)
from kes.schemas.errors import KesError, KeyUnavailableError
from kes.schemas.kes.v1.envelopes_pb2 import (
    EventEnvelope,
    Snapshot,
)
from kes.schemas.kes.v1.personal_pb2 import Sealed
from kes.schemas.personal import open_sealed, seal
from kes.streams.core.behavior import Behavior
from kes.streams.core.keyring import DataKeys, EntityKey
from kes.streams.cycle.records import ERASED_EVENT_TYPE

__all__ = ["Entity"]


@dataclass
class Entity:
    """An entity as the worker holds it between commands: decoded state, revision, recent ids."""

    entity_id: str
    revision: int
    state: Message
    recent_command_ids: list[str]
    source_offset: int = -1
    first_event_offset: int = -1
    key: EntityKey | None = None
    """The entity's data key (aggregates with personal fields), sealing its snapshot."""
    erased: bool = False
    """Erased at `revision`: the snapshot is a marker without state, key or history."""
    sealed_state: tuple[Message, Sealed | None] | None = None
    """The state sealed once for its reply and its snapshot (public part, sealed part)."""
    pending: int = 0
    """Revisions above the entity's snapshot in the changelog (kes.streams.cycle.snapshotpolicy)."""
    state_version: int = 1
    """The schema version of `state` (the behavior's; kes.streams.core.statemigration), as
    snapshotted."""

    def snapshot(self) -> Snapshot:
        """The Snapshot message stored in the changelog (`pending` is 0 there) and the local
        store."""
        if self.erased:
            return Snapshot(
                entity_id=self.entity_id,
                revision=self.revision,
                source_offset=self.source_offset,
                erased=True,
                pending_revisions=self.pending,
            )
        key = self.key
        if key is None:
            return Snapshot(
                entity_id=self.entity_id,
                revision=self.revision,
                state=pack(self.state),
                recent_command_ids=self.recent_command_ids,
                source_offset=self.source_offset,
                first_event_offset=self.first_event_offset,
                pending_revisions=self.pending,
                state_version=self._recorded_version,
            )
        public, sealed = self.sealed_state or seal(self.state, key.aead, self.entity_id)
        return Snapshot(
            entity_id=self.entity_id,
            revision=self.revision,
            state=pack(public),
            recent_command_ids=self.recent_command_ids,
            source_offset=self.source_offset,
            first_event_offset=self.first_event_offset,
            sealed=sealed,
            wrapped_key=key.wrapped,
            master_key_id=key.master_key_id,
            pending_revisions=self.pending,
            state_version=self._recorded_version,
        )

    @property
    def _recorded_version(self) -> int:
        """`state_version` as a snapshot records it: version 1 as 0 (unset), so a behavior that
        never declared a version writes the bytes it wrote before versions existed."""
        return self.state_version if self.state_version > 1 else 0

    def apply(
        self, behavior: Behavior[Any], env: EventEnvelope, offset: int, recent_command_ids: int
    ) -> None:
        """Fold one event of the log into the entity (recovery and rebuilds); its personal
        fields must be opened already. Raises KesError unless it is the entity's next revision.
        An EntityErased event makes the entity its erasure marker (no state, key or history)."""
        if env.revision != self.revision + 1:
            raise KesError(
                f"{self.entity_id}: event revision {env.revision} at offset {offset} follows "
                f"revision {self.revision}: the events log is not contiguous"
            )
        self.revision = env.revision
        self.source_offset = env.source_offset
        self.state_version = behavior.state_version
        if env.event_type == ERASED_EVENT_TYPE:
            self.state = behavior.initial_state(self.entity_id)
            self.erased, self.key, self.sealed_state = True, None, None
            self.recent_command_ids, self.first_event_offset = [], -1
            return
        self.state = behavior.evolve(self.state, unpack(env.payload))
        self.sealed_state = None
        if env.revision == 1:
            self.first_event_offset = offset
        if self.recent_command_ids[-1:] != [env.command_id]:  # a command's next event
            recent = [*self.recent_command_ids, env.command_id]
            self.recent_command_ids = recent[-recent_command_ids:]

    @classmethod
    def restore(cls, snap: Snapshot, behavior: Behavior[Any], keys: DataKeys | None) -> Entity:
        """The entity a stored snapshot holds: an erasure marker, or its state with its personal
        fields opened by its data key (raises KeyUnavailableError without `keys`), migrated from
        the snapshot's state version to the behavior's (raises SchemaVersionError if newer)."""
        entity_id = snap.entity_id
        if snap.erased:
            state = behavior.initial_state(entity_id)
            return cls(
                entity_id,
                snap.revision,
                state,
                [],
                snap.source_offset,
                erased=True,
                pending=snap.pending_revisions,
            )
        key = None
        if snap.wrapped_key:
            if keys is None:
                raise KeyUnavailableError(f"{entity_id}: a sealed snapshot and no master key")
            key = keys.open(entity_id, snap.wrapped_key, snap.master_key_id)
            if snap.HasField("sealed"):
                packed = snap.state
                packed.value = open_sealed(
                    packed.value, snap.sealed, key.aead, entity_id, packed.TypeName()
                )
        return cls(
            entity_id,
            snap.revision,
            behavior.load_state(snap.state, snap.state_version, entity_id),
            list(snap.recent_command_ids),
            snap.source_offset,
            snap.first_event_offset,
            key,
            pending=snap.pending_revisions,
            state_version=behavior.state_version,
        )
