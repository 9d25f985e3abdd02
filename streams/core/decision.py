"""Decisions: what a behavior answers to one command — accepted, rejected or failed.

These are plain values the engine matches on; `reject` is how a command handler refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeAlias, TypeVar

from google.protobuf.message import Message

from kes.schemas.errors import DeadLetterReason

__all__ = [
    "Accepted",
    "CommandContext",
    "Decision",
    "Failed",
    "Rejected",
    "Rejection",
    "RejectionCode",
    "reject",
]

S = TypeVar("S", bound=Message)


class RejectionCode(StrEnum):
    """Why a command was not applied; the values are the names of `kes.v1.RejectionCode`."""

    VALIDATION = "VALIDATION"
    """The behavior refused the command (a business rule)."""
    CONFLICT = "CONFLICT"
    """The command conflicts with the entity's current revision or state."""
    DUPLICATE = "DUPLICATE"
    """The command id was already applied."""
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    """The behavior has no handler for the command's type."""
    POISON = "POISON"
    """The command could not be decoded or its handler failed."""
    ERASED = "ERASED"
    """The entity was erased (`kes erase`): it takes no command any more."""


@dataclass(frozen=True)
class Rejection:
    """A command handler's typed refusal of a command: a code and a message for the caller."""

    code: RejectionCode
    message: str


def reject(message: str, code: RejectionCode = RejectionCode.VALIDATION) -> Rejection:
    """Refuse a command: `return reject("insufficient funds")` from a command handler."""
    return Rejection(code=code, message=message)


@dataclass(frozen=True)
class CommandContext:
    """What a command handler knows besides state and command; `revision` is before the command."""

    entity_id: str
    command_id: str = ""
    correlation_id: str = ""
    revision: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    decided_ms: int = 0
    """When the worker decides the command (ms since the epoch; 0 when not given, as in tests):
    the only clock a handler sees, e.g. to refuse a command past its deadline."""


@dataclass(frozen=True)
class Accepted(Generic[S]):
    """The command was accepted: its events (maybe none), the state after them and the revision."""

    events: tuple[Message, ...]
    new_state: S
    revision: int


@dataclass(frozen=True)
class Rejected:
    """The behavior refused the command (or has no handler for it); only a reply is written."""

    rejection: Rejection


@dataclass(frozen=True)
class Failed:
    """A handler raised or misbehaved; the engine replies with a rejection and dead-letters it."""

    error: str
    reason: DeadLetterReason = DeadLetterReason.HANDLER_ERROR


Decision: TypeAlias = Accepted[S] | Rejected | Failed
"""The outcome of `decide`: match on `Accepted`, `Rejected` or `Failed`."""
