"""Snapshot stores: per partition, each entity's latest snapshot plus the checkpoint it reflects.

A snapshot store is a *cache* of the snapshot changelog topic and the events after it, which are
the truth. Every write stores the snapshots together with the checkpoint (changelog offset, next
command offset, events low-water) in one atomic write, so after any crash the local files are a
consistent prefix of the changelog and recovery only has to replay the committed suffix (and,
with a snapshot interval, fold the events from the low-water on: kes.streams.cycle.snapshotpolicy).

Keys that start with NUL are a command's outcome (see kes.streams.cycle.idempotency): the store
keeps them beside the snapshots, indexed by the time in their value's first 8 bytes, so the oldest
can be found for expiry (`expired`) and counted (`outcomes`). `items` lists snapshots only.

Two backends pass one contract suite: `MemorySnapshotStore` (tests, pure logic) and
`RocksDBSnapshotStore` (rocksdict; one database per partition, one shared block cache).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteOptions

__all__ = [
    "Checkpoint",
    "MemorySnapshotStore",
    "PartitionSnapshots",
    "RocksDBSnapshotStore",
    "SnapshotStore",
]

_ENTITY = b"e"
_OUTCOME = "\x00"
_FIRST_SNAPSHOT = b"e\x01"  # after every outcome key (e + NUL + ...)
_INDEX = b"t"
_META = b"m/checkpoint"
_EVENTS_FROM = b"m/events-from"
_COUNT = b"m/outcomes"
_CHECKPOINT = struct.Struct(">qq")
_TIME = struct.Struct(">q")


def _decided(value: bytes) -> int:
    """An outcome's decision time (ms), from its value's first 8 bytes."""
    return int(_TIME.unpack_from(value)[0])


@dataclass(frozen=True)
class Checkpoint:
    """What a partition's local state reflects: both offsets -1 when nothing is known yet."""

    changelog_offset: int = -1
    """The last snapshot-changelog offset included in the local state."""
    next_command_offset: int = -1
    """The offset of the first command not yet applied (every command below it is applied)."""
    owner: str = ""
    """The consumer group that wrote the partition's last checkpoint ("" when not recorded)."""
    events_from: int = -1
    """The events-partition offset from which recovery folds the entities' unsnapshotted
    events (-1: every entity's changelog snapshot is its latest state). Not part of `encode`:
    the RocksDB store keeps it under a key of its own, in the same atomic write."""

    def encode(self) -> bytes:
        """Sixteen bytes, both offsets big-endian signed, then the owner's name (UTF-8)."""
        return (
            _CHECKPOINT.pack(self.changelog_offset, self.next_command_offset) + self.owner.encode()
        )

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        """The inverse of encode."""
        changelog, command = _CHECKPOINT.unpack(data[: _CHECKPOINT.size])
        return cls(changelog, command, data[_CHECKPOINT.size :].decode("utf-8", "replace"))


class PartitionSnapshots(Protocol):
    """One partition's snapshots: reads by entity id, atomic batch writes with a checkpoint."""

    def get(self, entity_id: str) -> bytes | None:
        """The encoded snapshot of an entity, or None."""

    def checkpoint(self) -> Checkpoint:
        """The checkpoint of the last write (Checkpoint() when empty)."""

    def write(
        self,
        snapshots: Mapping[str, bytes | None],
        checkpoint: Checkpoint,
        new_outcomes: Set[str] = frozenset(),
    ) -> None:
        """Store snapshots (None deletes) and the checkpoint in one atomic write.

        `new_outcomes` names outcome keys the caller knows the store does not hold yet (the
        store then need not look for an older entry to replace)."""

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every (entity id, encoded snapshot), in key order (outcomes left out)."""

    def outcomes(self) -> int:
        """How many outcomes the store holds."""

    def outcome_keys(self, entity_id: str) -> list[str]:
        """The keys of one entity's outcomes (NUL, entity id, NUL, command id)."""

    def expired(self, before_ms: int, keep: int, limit: int) -> list[str]:
        """Outcome keys to remove, oldest first, at most `limit`: those decided before
        `before_ms`, and the oldest beyond the newest `keep`."""

    def clear(self) -> None:
        """Forget everything (a cold rebuild from the changelog follows)."""

    def close(self) -> None:
        """Release files and memory; the data stays on disk for the RocksDB backend."""


class SnapshotStore(Protocol):
    """A worker's snapshot storage, opened per (name, partition)."""

    def partition(self, name: str, partition: int) -> PartitionSnapshots:
        """Open (or return the open) store of one partition of `name`."""

    def close(self) -> None:
        """Close every open partition store."""


class _MemoryPartition:
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._decided: dict[str, int] = {}
        self._checkpoint = Checkpoint()

    def get(self, entity_id: str) -> bytes | None:
        return self._data.get(entity_id)

    def checkpoint(self) -> Checkpoint:
        return self._checkpoint

    def write(
        self,
        snapshots: Mapping[str, bytes | None],
        checkpoint: Checkpoint,
        new_outcomes: Set[str] = frozenset(),
    ) -> None:
        for key, value in snapshots.items():
            outcome = key.startswith(_OUTCOME)
            if value is None:
                self._data.pop(key, None)
                self._decided.pop(key, None)
            else:
                self._data[key] = value
                if outcome:
                    self._decided[key] = _decided(value)
        self._checkpoint = checkpoint

    def items(self) -> Iterator[tuple[str, bytes]]:
        return iter(sorted((k, v) for k, v in self._data.items() if not k.startswith(_OUTCOME)))

    def outcomes(self) -> int:
        return len(self._decided)

    def outcome_keys(self, entity_id: str) -> list[str]:
        prefix = f"{_OUTCOME}{entity_id}{_OUTCOME}"
        return sorted(k for k in self._decided if k.startswith(prefix))

    def expired(self, before_ms: int, keep: int, limit: int) -> list[str]:
        excess = len(self._decided) - keep
        out: list[str] = []
        for key, decided in sorted(self._decided.items(), key=lambda kv: (kv[1], kv[0])):
            if len(out) >= limit or (decided >= before_ms and len(out) >= excess):
                break
            out.append(key)
        return out

    def clear(self) -> None:
        self._data.clear()
        self._decided.clear()
        self._checkpoint = Checkpoint()

    def close(self) -> None:
        pass


class MemorySnapshotStore:
    """Snapshots in dictionaries: for tests and pure logic; lost when the process ends."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], _MemoryPartition] = {}

    def partition(self, name: str, partition: int) -> PartitionSnapshots:
        """The in-memory store of one partition (kept across close, like files on disk)."""
        return self._partitions.setdefault((name, partition), _MemoryPartition())

    def close(self) -> None:
        """Nothing to release."""


class _RocksDBPartition:
    def __init__(self, path: Path, options: Options) -> None:
        self._path = path
        self._options = options
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), options=options)
        self._write_options = WriteOptions()  # WAL on, no fsync: survives kill -9 of the process

    def get(self, entity_id: str) -> bytes | None:
        value = self._db.get(_ENTITY + entity_id.encode())
        return None if value is None else bytes(value)

    def checkpoint(self) -> Checkpoint:
        raw = self._db.get(_META)
        if raw is None:
            return Checkpoint()
        checkpoint = Checkpoint.decode(bytes(raw))
        events_from = self._db.get(_EVENTS_FROM)
        if events_from is None:
            return checkpoint
        return replace(checkpoint, events_from=int(_TIME.unpack(bytes(events_from))[0]))

    def write(
        self,
        snapshots: Mapping[str, bytes | None],
        checkpoint: Checkpoint,
        new_outcomes: Set[str] = frozenset(),
    ) -> None:
        """1. snapshots put or deleted; 2. each outcome with its time-index entry (an outcome
        that replaces or deletes another also drops the other's entry; keys in `new_outcomes`
        replace nothing) and the outcome count; 3. the checkpoint and its events low-water; all in
        one atomic write."""
        batch = WriteBatch(raw_mode=True)
        count: int | None = None
        delta = 0
        for key, value in snapshots.items():
            stored = _ENTITY + key.encode()
            if key.startswith(_OUTCOME):
                if count is None:
                    count = self.outcomes()
                old = None if key in new_outcomes else self._db.get(stored)
                if old is not None:
                    batch.delete(_INDEX + bytes(old)[: _TIME.size] + stored)
                    delta -= 1
                if value is not None:
                    batch.put(_INDEX + value[: _TIME.size] + stored, b"")
                    delta += 1
            if value is None:
                batch.delete(stored)
            else:
                batch.put(stored, value)
        if count is not None and delta:
            batch.put(_COUNT, _TIME.pack(count + delta))
        batch.put(_META, checkpoint.encode())
        if checkpoint.events_from >= 0:
            batch.put(_EVENTS_FROM, _TIME.pack(checkpoint.events_from))
        else:
            batch.delete(_EVENTS_FROM)
        self._db.write(batch, self._write_options)

    def items(self) -> Iterator[tuple[str, bytes]]:
        empty = self._db.get(_ENTITY)  # the empty id sorts before the outcomes
        if empty is not None:
            yield "", bytes(empty)
        for key, value in self._db.items(from_key=_FIRST_SNAPSHOT):
            assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
            if not key.startswith(_ENTITY):
                break
            yield key[1:].decode(), value

    def outcome_keys(self, entity_id: str) -> list[str]:
        prefix = _ENTITY + f"{_OUTCOME}{entity_id}{_OUTCOME}".encode()
        found = []
        for key in self._db.keys(from_key=prefix):
            assert isinstance(key, bytes)
            if not key.startswith(prefix):
                break
            found.append(key[1:].decode())
        return found

    def outcomes(self) -> int:
        raw = self._db.get(_COUNT)
        return 0 if raw is None else int(_TIME.unpack(bytes(raw))[0])

    def expired(self, before_ms: int, keep: int, limit: int) -> list[str]:
        excess = self.outcomes() - keep
        out: list[str] = []
        if limit <= 0:
            return out
        for key in self._db.keys(from_key=_INDEX):
            assert isinstance(key, bytes)
            if not key.startswith(_INDEX):
                break
            decided = int(_TIME.unpack_from(key, 1)[0])
            if decided >= before_ms and len(out) >= excess:
                break
            out.append(key[1 + _TIME.size + 1 :].decode())
            if len(out) >= limit:
                break
        return out

    def clear(self) -> None:
        self._db.close()
        Rdict.destroy(str(self._path), self._options)
        self._db = Rdict(str(self._path), options=self._options)

    def close(self) -> None:
        self._db.close()


class RocksDBSnapshotStore:
    """Snapshots in RocksDB (rocksdict), one database per partition under `root/<name>/<n>`.

    All partitions share one block cache of `block_cache_bytes` (RocksDB's per-database default
    would grow with the partition count) and small write buffers, so memory stays bounded.
    """

    def __init__(
        self,
        root: Path,
        *,
        block_cache_bytes: int = 64 * 1024 * 1024,
        write_buffer_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.root = root
        self._cache = Cache(block_cache_bytes)
        table = BlockBasedOptions()
        table.set_block_cache(self._cache)
        table.set_bloom_filter(10, False)  # most outcome lookups miss: answer them from the filter
        self._options = Options(raw_mode=True)
        self._options.create_if_missing(True)
        self._options.set_block_based_table_factory(table)
        self._options.set_write_buffer_size(write_buffer_bytes)
        self._options.set_max_write_buffer_number(2)
        self._open: dict[tuple[str, int], _RocksDBPartition] = {}

    def partition(self, name: str, partition: int) -> PartitionSnapshots:
        """Open the database of one partition (reusing local files from an earlier run)."""
        key = (name, partition)
        if key not in self._open:
            self._open[key] = _RocksDBPartition(self.root / name / str(partition), self._options)
        return self._open[key]

    def release(self, name: str, partition: int) -> None:
        """Close one partition's database (on revocation); its files stay for a later owner."""
        store = self._open.pop((name, partition), None)
        if store is not None:
            store.close()

    def close(self) -> None:
        """Close every open database."""
        for store in self._open.values():
            store.close()
        self._open.clear()

    def destroy(self) -> None:
        """Close and delete every file under the root."""
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)
