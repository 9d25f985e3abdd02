"""Read-model stores: a projection's rows together with the event offsets they reflect.

A projection's read model is rows (a string key → bytes) plus, per event-topic partition, the
offset of the next event to apply. Every write stores rows and offsets in one atomic write, so
after any crash the store is exactly "every event below these offsets applied, none above":
the projection resumes from the offsets stored *with* the data, and an event is neither lost nor
applied twice (pyeventsourcing's tracking records, Kafka Streams' `commit(changelogOffsets)`).

Three backends pass one contract suite: `MemoryReadModelStore` (tests, pure logic),
`RocksDBReadModelStore` (rocksdict, one database per projection) and
`kes.stores.postgres.PostgresReadModelStore` (a table shared by processes). Handlers never see a
store: they write through a `kes.streams.projections.rows.RowBatch`, which the projector writes here
with the offsets.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

from rocksdict import AccessType, Options, Rdict, WriteBatch, WriteOptions

from kes.schemas.errors import ConfigurationError

__all__ = [
    "MemoryReadModelStore",
    "Offsets",
    "ReadModelStore",
    "RocksDBReadModelStore",
]

Offsets = Mapping[tuple[str, int], int]
"""`{(topic, partition): next offset to apply}`: every event below it is in the rows."""

_ROW = b"r"
_OFFSET = b"o"
_SEP = "\x00"  # cannot occur in a topic name
_OFFSET_VALUE = struct.Struct(">q")


class ReadModelStore(Protocol):
    """A projection's rows and consumed offsets; every write is atomic."""

    def get(self, key: str) -> bytes | None:
        """The row stored under `key`, or None."""
        ...

    def items(self, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        """Every (key, row) whose key starts with `prefix`, in key order."""
        ...

    def offsets(self) -> dict[tuple[str, int], int]:
        """The offsets stored with the rows (empty when nothing was applied yet)."""
        ...

    def write(self, rows: Mapping[str, bytes | None], offsets: Offsets) -> None:
        """Store rows (None deletes) and offsets in one atomic write; other offsets stay."""
        ...

    def clear(self) -> None:
        """Forget every row and offset (a rebuild follows)."""
        ...

    def close(self) -> None:
        """Release files and memory; the data stays on disk for the RocksDB backend."""
        ...


class MemoryReadModelStore:
    """A read model in dictionaries: for tests and pure logic; lost when the process ends."""

    def __init__(self) -> None:
        self._rows: dict[str, bytes] = {}
        self._offsets: dict[tuple[str, int], int] = {}

    def get(self, key: str) -> bytes | None:
        """The row under `key`, or None."""
        return self._rows.get(key)

    def items(self, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        """Rows whose key starts with `prefix`, in key order."""
        return iter(sorted((k, v) for k, v in self._rows.items() if k.startswith(prefix)))

    def offsets(self) -> dict[tuple[str, int], int]:
        """A copy of the stored offsets."""
        return dict(self._offsets)

    def write(self, rows: Mapping[str, bytes | None], offsets: Offsets) -> None:
        """Apply rows and offsets (a dict update cannot half-fail)."""
        for key, value in rows.items():
            if value is None:
                self._rows.pop(key, None)
            else:
                self._rows[key] = value
        self._offsets.update(offsets)

    def clear(self) -> None:
        """Forget everything."""
        self._rows.clear()
        self._offsets.clear()

    def close(self) -> None:
        """Nothing to release."""


def _row_key(key: str) -> bytes:
    return _ROW + key.encode()


def _offset_key(topic: str, partition: int) -> bytes:
    return _OFFSET + f"{topic}{_SEP}{partition}".encode()


class RocksDBReadModelStore:
    """A read model in one RocksDB database (rocksdict) at `path`.

    Writes go through the write-ahead log without fsync: they survive a killed process (SIGKILL),
    not a power loss. `read_only=True` opens a database another process is writing (for
    `kes projection status`), seeing its state at open time; writes then raise.
    """

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        write_buffer_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.path = path
        self.read_only = read_only
        self._options = Options(raw_mode=True)
        self._options.create_if_missing(not read_only)
        self._options.set_write_buffer_size(write_buffer_bytes)
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise ConfigurationError(f"no read model at {path} (has the projection run here?)")
        self._db = self._open()
        self._write_options = WriteOptions()

    def _open(self) -> Rdict:
        try:
            if self.read_only:
                access = AccessType.read_only()
                return Rdict(str(self.path), options=self._options, access_type=access)
            return Rdict(str(self.path), options=self._options)
        except Exception as exc:  # rocksdict raises plain exceptions, e.g. for a held lock
            raise ConfigurationError(
                f"cannot open the read model at {self.path} ({exc}): is a process using it "
                "already (a running projection with the same data dir)?"
            ) from None

    def get(self, key: str) -> bytes | None:
        """The row under `key`, or None."""
        value = self._db.get(_row_key(key))
        return None if value is None else bytes(value)

    def items(self, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        """Rows whose key starts with `prefix`, in key order."""
        start = _row_key(prefix)
        for key, value in self._db.items(from_key=start):
            assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
            if not key.startswith(start):
                break
            yield key[len(_ROW) :].decode(), value

    def offsets(self) -> dict[tuple[str, int], int]:
        """The stored offsets."""
        found: dict[tuple[str, int], int] = {}
        for key, value in self._db.items(from_key=_OFFSET):
            assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
            if not key.startswith(_OFFSET):
                break
            topic, _, partition = key[len(_OFFSET) :].decode().rpartition(_SEP)
            found[(topic, int(partition))] = _OFFSET_VALUE.unpack(value)[0]
        return found

    def write(self, rows: Mapping[str, bytes | None], offsets: Offsets) -> None:
        """One RocksDB write batch: every row and every offset, or nothing."""
        self._check_writable()
        batch = WriteBatch(raw_mode=True)
        for key, value in rows.items():
            if value is None:
                batch.delete(_row_key(key))
            else:
                batch.put(_row_key(key), value)
        for (topic, partition), offset in offsets.items():
            batch.put(_offset_key(topic, partition), _OFFSET_VALUE.pack(offset))
        self._db.write(batch, self._write_options)

    def clear(self) -> None:
        """Delete the database files and start empty."""
        self._check_writable()
        self._db.close()
        Rdict.destroy(str(self.path), self._options)
        self._db = self._open()

    def close(self) -> None:
        """Close the database; the files stay."""
        self._db.close()

    def destroy(self) -> None:
        """Close and delete the database files."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ConfigurationError(f"the read model at {self.path} is open read-only")
