"""What a projection's handlers write through, and the batch the projector stores.

A `Projection`'s handler writes rows through a `RowBatch` over the read-model store
(kes.stores.readmodels): the batch reads its own writes, and nothing reaches the store until the
projector writes the batch together with the offsets of the events they reflect
(`RowTransaction`). A `SqlProjection`'s handler executes statements through `Sql`, inside the
database transaction that also stores the offsets (kes.stores.sqlmodel). Both are a `Staging`: one
child per event, kept when its handler returns, dropped when it raises. Pure: no store, database
or Kafka client here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, LiteralString, Protocol, TypeAlias, TypeVar, runtime_checkable

__all__ = [
    "BatchTransaction",
    "RowBatch",
    "RowReader",
    "RowStore",
    "RowTransaction",
    "RowWriter",
    "Sql",
    "SqlParams",
    "Staging",
]

W = TypeVar("W")
T = TypeVar("T")

SqlParams: TypeAlias = Sequence[Any] | Mapping[str, Any] | None
"""A statement's parameters: a sequence for `%s` placeholders, a mapping for `%(name)s`."""


class RowReader(Protocol):
    """Reads rows by key."""

    def get(self, key: str) -> bytes | None:
        """The row stored under `key`, or None."""
        ...


class RowWriter(RowReader, Protocol):
    """What a projection's handler writes its read model through (a `RowBatch`)."""

    def put(self, key: str, value: bytes) -> None:
        """Store `value` under `key`, replacing any row there."""
        ...

    def delete(self, key: str) -> None:
        """Remove the row under `key` (no error if there is none)."""
        ...

    def get_as(self, key: str, decode: Callable[[bytes], T]) -> T | None:
        """The row under `key` as an object (decoded once per batch), or None."""
        ...

    def put_as(self, key: str, value: T, encode: Callable[[T], bytes]) -> None:
        """Store an object under `key`; it is encoded once, when the batch is written."""
        ...


class Sql(Protocol):
    """What a SQL projection's handler writes its tables through.

    Statements run in the batch's database transaction, which also stores the offsets: they
    are applied exactly once, or not at all. Pass values as parameters (`%s`), never by
    formatting them into the query.
    """

    def execute(self, query: LiteralString, params: SqlParams = None) -> int:
        """Run one statement; the number of rows it changed (-1 where that has no meaning)."""
        ...

    def fetchone(self, query: LiteralString, params: SqlParams = None) -> tuple[Any, ...] | None:
        """Run a query; its first row, or None."""
        ...

    def fetchall(self, query: LiteralString, params: SqlParams = None) -> list[tuple[Any, ...]]:
        """Run a query; all its rows."""
        ...


@runtime_checkable
class Staging(Protocol[W]):
    """Where one batch's handlers write: a child per event, kept or dropped as a whole."""

    def child(self) -> W:
        """What one event's handler writes through."""
        ...

    def merge(self, child: W) -> None:
        """Keep the child's writes: its handler returned."""
        ...

    def discard(self, child: W) -> None:
        """Drop the child's writes: its handler raised (BatchRedoError if it cannot)."""
        ...


class BatchTransaction(Staging[Any], Protocol):
    """One projector cycle: handlers write through it, then `commit` stores their writes with
    the offsets in one atomic write; `close` drops whatever was not committed."""

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Store the batch's writes and these offsets together."""
        ...

    def close(self) -> None:
        """Release the batch (rolling back what `commit` did not store)."""
        ...


class RowBatch:
    """Pending row writes over a reader: `get` sees them first, then the reader.

    A batch is a `RowWriter`. `child()` stages one event's writes so a failing handler leaves
    the batch untouched; `merge(child)` keeps them once the handler succeeded.

    Rows can be handled as objects (`get_as`, `put_as`): a batch that moves one account forty
    times decodes its row once and encodes it once, not forty times. Objects are shared between
    a batch and its children, so treat them as immutable (frozen dataclasses, tuples) and put a
    new one rather than changing the one you got. A `strict` batch encodes each object as it
    is put, so an object that cannot be encoded fails the handler that put it.
    """

    def __init__(self, base: RowReader, *, strict: bool = False) -> None:
        self._base = base
        self._strict = strict
        self._rows: dict[str, bytes | None] = {}
        self._objects: dict[str, tuple[Any, Callable[[Any], bytes]]] = {}
        self._decoded: dict[str, Any] = {}  # rows of the base, decoded (a root batch only)

    @property
    def rows(self) -> Mapping[str, bytes | None]:
        """The pending writes: key → row, None for a delete (objects encoded now)."""
        for key, (value, encode) in self._objects.items():
            self._rows[key] = encode(value)
        self._objects.clear()
        return self._rows

    def get(self, key: str) -> bytes | None:
        """The pending row of `key` if written in this batch, else the base's."""
        if key in self._objects:
            value, encode = self._objects[key]
            return encode(value)
        if key in self._rows:
            return self._rows[key]
        return self._base.get(key)

    def get_as(self, key: str, decode: Callable[[bytes], T]) -> T | None:
        """The row of `key` as `decode` makes it; an object put in this batch as it was put."""
        if key in self._objects:
            value: T = self._objects[key][0]
            return value
        if key in self._rows:
            data = self._rows[key]
            return None if data is None else decode(data)
        if isinstance(self._base, RowBatch):
            return self._base.get_as(key, decode)
        if key in self._decoded:
            cached: T = self._decoded[key]
            return cached
        data = self._base.get(key)
        found = None if data is None else decode(data)
        self._decoded[key] = found
        return found

    def put(self, key: str, value: bytes) -> None:
        """Stage `value` under `key`."""
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"a row is bytes, got {type(value).__name__} for key {key!r}")
        self._objects.pop(key, None)
        self._rows[key] = bytes(value)

    def put_as(self, key: str, value: T, encode: Callable[[T], bytes]) -> None:
        """Stage an object under `key`, to be encoded when the batch's rows are taken."""
        if self._strict:
            self.put(key, encode(value))
            return
        self._rows.pop(key, None)
        self._objects[key] = (value, encode)

    def delete(self, key: str) -> None:
        """Stage the removal of `key`."""
        self._objects.pop(key, None)
        self._rows[key] = None

    def child(self) -> RowBatch:
        """A batch on top of this one, for one event's writes."""
        return RowBatch(self, strict=self._strict)

    def merge(self, child: RowBatch) -> None:
        """Keep a child's writes in this batch."""
        for key in child._rows:
            self._objects.pop(key, None)
        for key in child._objects:
            self._rows.pop(key, None)
        self._rows.update(child._rows)
        self._objects.update(child._objects)

    def discard(self, child: RowBatch) -> None:
        """Nothing to undo: a child's writes stay in the child."""


class RowStore(RowReader, Protocol):
    """A store rows and offsets are written to in one atomic write (kes.stores.readmodels)."""

    def write(
        self, rows: Mapping[str, bytes | None], offsets: Mapping[tuple[str, int], int]
    ) -> None:
        """Store rows (None deletes) and offsets together."""
        ...


class RowTransaction(RowBatch):
    """A row batch over a store, committed as one `store.write(rows, offsets)`."""

    def __init__(self, store: RowStore, *, strict: bool = False) -> None:
        super().__init__(store, strict=strict)
        self._store = store

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Write the staged rows and the offsets in one atomic write."""
        self._store.write(self.rows, offsets)

    def close(self) -> None:
        """Nothing to release: uncommitted rows never left this process."""
