"""The records of the command cycle: a command as read, a record to write, the partition's
checkpoint record on the snapshot changelog, and the size rules every written record obeys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from kes.schemas.codec import pack
from kes.schemas.kes.v1.personal_pb2 import EntityErased, EraseEntity

__all__ = [
    "CHECKPOINT_KEY",
    "ERASED_EVENT_TYPE",
    "ERASE_TYPE_URL",
    "MAX_TEXT",
    "CommandRecord",
    "Headers",
    "OutRecord",
    "bounded",
    "decode_checkpoint",
    "encode_checkpoint",
    "record_size",
]

CHECKPOINT_KEY = b""
"""Snapshot-changelog key of a partition's checkpoint record (value: next command offset, 8 bytes).

No entity has an empty id (such commands are dead-lettered), so the key cannot collide."""

Headers = list[tuple[str, bytes]]

ERASE_TYPE_URL = pack(EraseEntity()).type_url
"""The type URL of the command that erases an entity (`kes erase`)."""
ERASED_EVENT_TYPE = EntityErased.DESCRIPTOR.full_name
"""The event type of an erased entity's last event."""


MAX_TEXT = 4096
"""Characters kept of a rejection's message or a handler's error (a behavior decides their
length: a huge one must not make the reply, outcome or dead letter unwritable)."""


def bounded(text: str) -> str:
    """`text` cut to MAX_TEXT characters, saying how long it was."""
    if len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]}... ({len(text)} characters, truncated)"


def record_size(record: OutRecord) -> int:
    """What a record weighs against the record limit: key, value and headers."""
    return len(record.key) + len(record.value) + sum(len(k) + len(v) for k, v in record.headers)


def encode_checkpoint(next_command_offset: int, owner: str) -> bytes:
    """A checkpoint record's value: the next command offset (8 bytes) and the owning group."""
    return next_command_offset.to_bytes(8, "big", signed=True) + owner.encode()


def decode_checkpoint(value: bytes) -> tuple[int, str]:
    """`(next command offset, owning group)`; the group is "" in records written before it was."""
    return int.from_bytes(value[:8], "big", signed=True), value[8:].decode("utf-8", "replace")


class CommandRecord(NamedTuple):
    """A command record as read from the commands topic."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int = 0
    """When the record was produced (ms since the epoch; 0 when unknown)."""


class OutRecord(NamedTuple):
    """A record to write, to an explicit partition."""

    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: Headers
