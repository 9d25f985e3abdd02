"""Revision ledgers: per entity, the highest event revision whose side effect is done.

A reactor runs at least once: after a crash, the events of the batch it was in are delivered
again. Revisions of an entity's events are 1, 2, 3, ... in log order, so one number per entity
says which of its events were already handled: `kes.streams.projections.dedup.once` skips an event
whose revision is not above it. Keep the ledger where it outlives the process (a volume for the
RocksDB backend; your database, implementing `RevisionLedger`, when the reactor may move hosts).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Protocol

from rocksdict import Options, Rdict

__all__ = ["MemoryRevisionLedger", "RevisionLedger", "RocksDBRevisionLedger"]

_REVISION = struct.Struct(">Q")


class RevisionLedger(Protocol):
    """The highest handled revision per entity."""

    def last(self, entity_id: str) -> int:
        """The highest revision recorded for `entity_id`; 0 when none."""
        ...

    def record(self, entity_id: str, revision: int) -> None:
        """Remember that `revision` of `entity_id` is handled (a lower one changes nothing)."""
        ...


class MemoryRevisionLedger:
    """A ledger in a dictionary: for tests; forgotten when the process ends."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def last(self, entity_id: str) -> int:
        """The highest revision recorded, or 0."""
        return self._last.get(entity_id, 0)

    def record(self, entity_id: str, revision: int) -> None:
        """Keep the higher of the recorded and the given revision."""
        self._last[entity_id] = max(revision, self._last.get(entity_id, 0))


class RocksDBRevisionLedger:
    """A ledger in a RocksDB database at `path`; each record survives a killed process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options)

    def last(self, entity_id: str) -> int:
        """The highest revision recorded, or 0."""
        value = self._db.get(entity_id.encode())
        return 0 if value is None else int(_REVISION.unpack(value)[0])

    def record(self, entity_id: str, revision: int) -> None:
        """Keep the higher of the recorded and the given revision."""
        if revision > self.last(entity_id):
            self._db[entity_id.encode()] = _REVISION.pack(revision)

    def close(self) -> None:
        """Release the database (its data stays on disk)."""
        self._db.close()
