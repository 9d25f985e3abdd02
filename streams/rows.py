"""Rows of a read model as a projection's handler sees them: read by key, written in a batch.

A handler writes through a `RowBatch` over the read-model store (stores.readmodels): the batch
reads its own writes, and nothing reaches the store until the projector writes the batch
together with the offsets of the events it reflects. Pure: no store or Kafka client here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["RowBatch", "RowReader", "RowWriter"]


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


class RowBatch:
    """Pending row writes over a reader: `get` sees them first, then the reader.

    A batch is a `RowWriter`. `child()` stages one event's writes so a failing handler leaves
    the batch untouched; `merge(child)` keeps them once the handler succeeded.
    """

    def __init__(self, base: RowReader) -> None:
        self._base = base
        self._rows: dict[str, bytes | None] = {}

    @property
    def rows(self) -> Mapping[str, bytes | None]:
        """The pending writes: key → row, None for a delete."""
        return self._rows

    def get(self, key: str) -> bytes | None:
        """The pending row of `key` if written in this batch, else the base's."""
        if key in self._rows:
            return self._rows[key]
        return self._base.get(key)

    def put(self, key: str, value: bytes) -> None:
        """Stage `value` under `key`."""
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"a row is bytes, got {type(value).__name__} for key {key!r}")
        self._rows[key] = bytes(value)

    def delete(self, key: str) -> None:
        """Stage the removal of `key`."""
        self._rows[key] = None

    def child(self) -> RowBatch:
        """A batch on top of this one, for one event's writes."""
        return RowBatch(self)

    def merge(self, child: RowBatch) -> None:
        """Keep a child's writes in this batch."""
        self._rows.update(child.rows)
