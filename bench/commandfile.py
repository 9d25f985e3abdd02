"""A file of command values for peers that do not read Kafka: length-prefixed, in order."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["read_commands", "write_commands"]

_LENGTH = struct.Struct(">I")


def write_commands(path: Path, values: Iterable[bytes]) -> None:
    """Write each value with a 4-byte big-endian length before it."""
    with path.open("wb") as out:
        for value in values:
            out.write(_LENGTH.pack(len(value)))
            out.write(value)


def read_commands(path: Path) -> Iterator[bytes]:
    """The values written by write_commands, in order."""
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        (size,) = _LENGTH.unpack_from(data, pos)
        yield data[pos + 4 : pos + 4 + size]
        pos += 4 + size
