"""State migration: a snapshot stored by an older schema version of the state, read as the current.

Snapshots outlive the code that wrote them (the changelog, a worker's local store), so the state
message can change under them. A behavior declares its `state_version` (1 unless it says
otherwise) and one migration per older version, `from_version` -> `from_version + 1` (from
`oldest_state_version`, 1 unless declared, once the snapshots older than it are gone); a snapshot
records the version it was written at (`Snapshot.state_version`; 0 means 1: version 1 is left
unset, so snapshots of unversioned behaviors keep the bytes they had before versions existed).
Loading a snapshot runs the migrations from its version up to the current one, in order, before
anything else sees the state; its next write stores the current version. A snapshot newer than
the code is refused (SchemaVersionError), never dropped or misread. The chain is checked whole
(`check`) when the worker starts and by `kes verify`, not first at an old snapshot's load.
Pure: no Kafka here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

from kes.schemas.codec import pack, unpack
from kes.schemas.errors import ConfigurationError, SchemaVersionError

__all__ = ["StateMigration", "StateMigrations", "stored_version"]

StateMigration = Callable[[Message], Message]
"""A state of one version (decoded, or the packed `Any` when registered with `packed=True`) →
the state of the next version."""


def stored_version(version: int) -> int:
    """The schema version a snapshot's `state_version` field means (0, unrecorded, is 1)."""
    return max(version, 1)


@dataclass(frozen=True)
class _Step:
    migration: StateMigration
    packed: bool


class StateMigrations:
    """The migrations of one behavior's state, keyed by the version they migrate from."""

    def __init__(self, owner: str, current: int, oldest: int = 1) -> None:
        if current < 1:
            raise ConfigurationError(f"behavior {owner!r}: state_version must be 1 or more")
        if not 1 <= oldest <= current:
            raise ConfigurationError(
                f"behavior {owner!r}: oldest_state_version must be from 1 to its state_version "
                f"{current}, not {oldest}"
            )
        self._owner = owner
        self.current = current
        """The state version this code writes."""
        self.oldest = oldest
        """The oldest state version this code reads (migrates from); older snapshots are refused."""
        self._steps: dict[int, _Step] = {}

    def register(
        self, from_version: int, migration: StateMigration, *, packed: bool = False
    ) -> None:
        """Migrate states of `from_version` to `from_version + 1` with `migration`.

        With `packed=True` it receives the stored `google.protobuf.Any` (type name and bytes), for
        an old state type whose generated code is gone. Raises ConfigurationError for a version
        outside oldest..current - 1 or one registered twice.
        """
        if not self.oldest <= from_version < self.current:
            raise ConfigurationError(
                f"behavior {self._owner!r} is at state version {self.current}: a migration from "
                f"version {from_version} must be from {self.oldest} to {self.current - 1}"
            )
        if from_version in self._steps:
            raise ConfigurationError(
                f"behavior {self._owner!r} already migrates its state from version {from_version}"
            )
        self._steps[from_version] = _Step(migration, packed)

    def check(self) -> None:
        """Raise ConfigurationError unless every version from the oldest one read to the
        current one has its migration, naming each missing step."""
        missing = [v for v in range(self.oldest, self.current) if v not in self._steps]
        if missing:
            steps = ", ".join(f"{v} -> {v + 1}" for v in missing)
            raise ConfigurationError(
                f"behavior {self._owner!r} is at state version {self.current} but has no state "
                f"migration for {steps}: register each with "
                f"@{self._owner}.migrate_state(from_version=N), or declare "
                f"oldest_state_version= once no snapshot older than it is left"
            )

    def migrate(self, state: any_pb2.Any, version: int, entity_id: str = "") -> Message:
        """The stored `state` of schema `version` (0 reads as 1) as a current state message.

        Raises SchemaVersionError for a version newer than the current one or older than the
        oldest one read, and for a migration that fails (it raises, or wants the decoded state
        of a type nobody registered): the same snapshot would fail the same way on every
        restart, so the worker refuses it (exit 78) rather than crash-looping. Raises
        ConfigurationError for a missing migration or one that returns no message.
        """
        version = stored_version(version)
        whose = f" of {entity_id!r}" if entity_id else ""
        if version > self.current:
            raise SchemaVersionError(
                f"the snapshot{whose} holds behavior {self._owner!r}'s state at schema version "
                f"{version}, newer than this code's {self.current}: deploy the code that wrote it"
            )
        if version < self.oldest:
            raise SchemaVersionError(
                f"the snapshot{whose} holds behavior {self._owner!r}'s state at schema version "
                f"{version}, older than the oldest this code reads ({self.oldest}): deploy code "
                f"that migrates it, or rebuild the snapshots from the events "
                f"(kes snapshots rebuild)"
            )
        packed = state
        while version < self.current:
            step = self._steps.get(version)
            if step is None:
                self.check()  # raises, naming every missing version
            assert step is not None
            try:
                old: Message = _copy_any(packed) if step.packed else unpack(packed)
                new = step.migration(old)
            except Exception as exc:
                raise SchemaVersionError(
                    f"the state migration of behavior {self._owner!r} from version {version} "
                    f"failed on the snapshot{whose}: {type(exc).__name__}: {exc}; fix the "
                    "migration and deploy it (the snapshot is kept as it is)"
                ) from exc
            if not isinstance(new, Message):
                raise ConfigurationError(
                    f"the state migration of behavior {self._owner!r} from version {version} "
                    f"returned {type(new).__name__}, not a protobuf message"
                )
            packed = pack(new)
            version += 1
        return unpack(packed)


def _copy_any(any_msg: any_pb2.Any) -> any_pb2.Any:
    copy = any_pb2.Any()
    copy.CopyFrom(any_msg)
    return copy
