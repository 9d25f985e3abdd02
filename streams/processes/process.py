"""Process managers (sagas): long-running workflows that react to events with commands and timers.

A `ProcessManager` is named, keeps its own protobuf state per process id, and is driven by
inputs, each handled by a pure function returning a `Step` (new state, commands to send, timers
to set or cancel, and maybe an end):

    transfer = ProcessManager("transfer-money", TransferProcess, aggregates=["transfer", "account"])

    @transfer.starts(TransferRequested, process_id=by_entity)   # creates the process
    def requested(state, event, ctx): ...
    @transfer.on(AccountDebited)          # an event caused by one of the process's own commands
    def debited(state, event, ctx): ...
    @transfer.rejected(CreditAccount)     # one of its commands was refused
    def refused(state, rejection, ctx): ...
    @transfer.timer("credit-deadline")    # a timer it set came due
    def late(state, ctx): ...

Each command a process sends is named by a *step*, unique within the process: its command id is
`<process>/<process id>/<step>`, so a replay of an input can never send a different command, and
the target's outcome store answers a re-sent step with its original outcome. The runner
(kes.streams.processes.runner) routes events and rejections to the process they belong to,
calls `advance` (kes.streams.processes.advance) per input, and writes the new record, the
commands and the input offsets in one Kafka transaction. Nothing here does I/O or imports a Kafka or
RocksDB client.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeAlias, TypeVar

from google.protobuf.message import Message

from kes.schemas.codec import type_name
from kes.schemas.errors import ConfigurationError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.core.decision import Rejection

__all__ = [
    "NAME_PATTERN",
    "PROCESS_ID_KEY",
    "PROCESS_KEY",
    "STEP_KEY",
    "CancelTimer",
    "End",
    "ProcessContext",
    "ProcessManager",
    "Send",
    "SetTimer",
    "Step",
    "by_correlation",
    "by_entity",
    "by_metadata",
    "command_id",
    "parse_command_id",
]

S = TypeVar("S", bound=Message)
E = TypeVar("E", bound=Message)

PROCESS_KEY = "kes-process"
"""Command (and so event) metadata key: the name of the process that sent the command."""
PROCESS_ID_KEY = "kes-process-id"
"""Command metadata key: the id of the process instance that sent it."""
STEP_KEY = "kes-process-step"
"""Command metadata key: the step the command is."""

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
"""What process names and step names may hold (they become topic names and command ids)."""


class End(StrEnum):
    """How a process ended."""

    COMPLETED = "COMPLETED"
    """It did what it was for."""
    COMPENSATED = "COMPENSATED"
    """It undid what it had done (or had nothing to undo)."""


@dataclass(frozen=True)
class Send:
    """A command to send: to `entity_id` of `aggregate`, as the process's step `step`."""

    aggregate: str
    entity_id: str
    command: Message
    step: str


@dataclass(frozen=True)
class SetTimer:
    """Set (or move) the timer `name` to fire once at `due_ms` (ms since the epoch)."""

    name: str
    due_ms: int


@dataclass(frozen=True)
class CancelTimer:
    """Cancel the timer `name` (nothing happens if it is not pending)."""

    name: str


@dataclass(frozen=True)
class Step(Generic[S]):
    """What a handler answers: the new state, commands, timer changes, and maybe the end."""

    state: S
    send: Sequence[Send] = ()
    timers: Sequence[SetTimer | CancelTimer] = ()
    end: End | None = None


@dataclass(frozen=True)
class ProcessContext:
    """What a handler knows besides state and input."""

    process_id: str
    now_ms: int
    """The runner's clock when the input is handled (injectable in tests)."""
    step: str = ""
    """The step the input answers ("" for the starting event and for timers)."""
    event: EventEnvelope | None = None
    """The event's envelope (entity, revision, metadata), for event handlers."""


ProcessId: TypeAlias = Callable[[EventEnvelope, Message], str]
"""Which process a starting event belongs to: `(envelope, payload) -> process id`."""
StartHandler: TypeAlias = Callable[[S, E, ProcessContext], Step[S]]
"""`(state, event, ctx) -> Step`: a starting event or an event of one of its commands."""
RejectionHandler: TypeAlias = Callable[[S, Rejection, ProcessContext], Step[S]]
"""`(state, rejection, ctx) -> Step`: a command of the process was refused (`ctx.step`)."""
TimerHandler: TypeAlias = Callable[[S, ProcessContext], Step[S]]
"""`(state, ctx) -> Step`: a timer came due."""


def by_entity(event: EventEnvelope, payload: Message) -> str:
    """The process id is the starting event's entity id (e.g. a transfer's id)."""
    return event.entity_id


def by_correlation(event: EventEnvelope, payload: Message) -> str:
    """The process id is the starting event's correlation id."""
    return event.correlation_id


def by_metadata(key: str) -> ProcessId:
    """The process id is the starting event's metadata value under `key` ("" if absent)."""

    def process_id(event: EventEnvelope, payload: Message) -> str:
        return event.metadata.get(key, "")

    return process_id


def command_id(process: str, process_id: str, step: str) -> str:
    """The command id of a step: `<process>/<process id>/<step>`, the same on every replay."""
    return f"{process}/{process_id}/{step}"


def parse_command_id(process: str, value: str) -> tuple[str, str] | None:
    """`(process id, step)` of a command id of `process`'s steps, or None if it is not one."""
    prefix = process + "/"
    if not value.startswith(prefix):
        return None
    process_id, sep, step = value[len(prefix) :].rpartition("/")
    if not sep or not process_id or not step:
        return None
    return process_id, step


class ProcessManager(Generic[S]):
    """A named process: its state type, the aggregates it reads, and its handlers.

    `aggregates` are read for events (starting ones, and those caused by the process's own
    commands); `sends_to` (default: `aggregates`) are the aggregates it may command, whose
    rejections come back to it. The consumer group is `<prefix><name>`; its topics are
    `<prefix><name>.inbox` and `<prefix><name>.state`.
    """

    def __init__(
        self,
        name: str,
        state_type: type[S],
        *,
        aggregates: Sequence[str],
        sends_to: Sequence[str] | None = None,
        initial_state: Callable[[str], S] | None = None,
    ) -> None:
        if not NAME_PATTERN.fullmatch(name or ""):
            raise ConfigurationError(
                f"process name {name!r}: use only letters, digits, '.', '_' and '-'"
            )
        if isinstance(aggregates, str) or not aggregates:
            raise ConfigurationError(f"process {name!r} needs a list of aggregate names")
        self._name = name
        self._state_type = state_type
        self._initial_state = initial_state
        self.aggregates = tuple(aggregates)
        """The aggregates whose events the process reads."""
        self.sends_to = tuple(sends_to if sends_to is not None else aggregates)
        """The aggregates it may command (their replies carry its rejections)."""
        self._starts: dict[str, tuple[ProcessId, StartHandler[S, Any]]] = {}
        self._events: dict[str, StartHandler[S, Any]] = {}
        self._rejections: dict[str, RejectionHandler[S]] = {}
        self._timers: dict[str, TimerHandler[S]] = {}

    def __repr__(self) -> str:
        return f"ProcessManager({self._name!r}, {type_name(self._state_type())})"

    @property
    def name(self) -> str:
        """The process's name: its consumer group and topic names, and its command ids' prefix."""
        return self._name

    @property
    def state_type(self) -> type[S]:
        """The protobuf message class of the state."""
        return self._state_type

    def initial_state(self, process_id: str) -> S:
        """The state a process starts from; by default an empty `state_type()`."""
        if self._initial_state is None:
            return self._state_type()
        return self._initial_state(process_id)

    def group_id(self, prefix: str = "") -> str:
        """The runner's consumer group: `<prefix><name>`."""
        return f"{prefix}{self._name}"

    def starts_on(self, event_type: str) -> bool:
        """Whether an event of this full protobuf name starts a process."""
        return event_type in self._starts

    def reacts_to(self, event_type: str) -> bool:
        """Whether an event of this full protobuf name, caused by the process, has a handler."""
        return event_type in self._events

    def start_id(self, event: EventEnvelope, payload: Message) -> str:
        """The process id a starting event belongs to."""
        return self._starts[type_name(payload)][0](event, payload)

    def start_handler(self, event_type: str) -> StartHandler[S, Any] | None:
        """The handler of a starting event of this full protobuf name, if any."""
        entry = self._starts.get(event_type)
        return None if entry is None else entry[1]

    def event_handler(self, event_type: str) -> StartHandler[S, Any] | None:
        """The handler of an event of this full protobuf name caused by the process, if any."""
        return self._events.get(event_type)

    def rejection_handler(self, command_type: str) -> RejectionHandler[S] | None:
        """The handler of a refused command of this full protobuf name, if any."""
        return self._rejections.get(command_type)

    def timer_handler(self, name: str) -> TimerHandler[S] | None:
        """The handler of the timer `name`, if any."""
        return self._timers.get(name)

    def _check_new(self, registry: dict[str, Any], key: str, what: str) -> None:
        if key in registry:
            raise ConfigurationError(f"process {self._name!r} already has a {what} for {key}")

    def starts(
        self, event_type: type[E], *, process_id: ProcessId = by_correlation
    ) -> Callable[[StartHandler[S, E]], StartHandler[S, E]]:
        """Register the handler of an event that starts a process (id from `process_id`)."""

        def register(handler: StartHandler[S, E]) -> StartHandler[S, E]:
            key = type_name(event_type())
            self._check_new(self._starts, key, "start handler")
            self._starts[key] = (process_id, handler)
            return handler

        return register

    def on(self, event_type: type[E]) -> Callable[[StartHandler[S, E]], StartHandler[S, E]]:
        """Register the handler of an event caused by one of the process's commands."""

        def register(handler: StartHandler[S, E]) -> StartHandler[S, E]:
            key = type_name(event_type())
            self._check_new(self._events, key, "event handler")
            self._events[key] = handler
            return handler

        return register

    def rejected(
        self, command_type: type[Message]
    ) -> Callable[[RejectionHandler[S]], RejectionHandler[S]]:
        """Register the handler of a refusal of one of its commands of `command_type`."""

        def register(handler: RejectionHandler[S]) -> RejectionHandler[S]:
            key = type_name(command_type())
            self._check_new(self._rejections, key, "rejection handler")
            self._rejections[key] = handler
            return handler

        return register

    def timer(self, name: str) -> Callable[[TimerHandler[S]], TimerHandler[S]]:
        """Register the handler of the timer `name`."""

        def register(handler: TimerHandler[S]) -> TimerHandler[S]:
            self._check_new(self._timers, name, "timer handler")
            self._timers[name] = handler
            return handler

        return register
