"""Behaviors: the pure core of an entity — an initial state, `decide` and `evolve`.

A behavior is fmodel's Decider over the user's protobuf messages: `decide(state, command, ctx)`
answers a command with events or a rejection, `evolve(state, event)` applies one event, and
`fold` applies many. Nothing here does I/O or imports a Kafka or RocksDB client; the engine
(the worker) loads a state, calls `decide`, writes what it returns, and keeps the new state.

Invariants the engine may rely on:

- `decide` never raises for a user's mistake: a rejection is `Rejected`, a handler that raises
  (or returns something that is not events) is `Failed`, an unregistered command type is
  `Rejected` with `RejectionCode.UNKNOWN_COMMAND`.
- Neither `decide`, `evolve` nor `fold` mutates the state passed in: handlers always receive a
  private copy, so the engine may keep and reuse the states it passes.
- `Accepted.new_state` is `fold(state, events)`, and `Accepted.revision` is the revision before
  the command (`CommandContext.revision`) plus the number of events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeAlias, TypeVar, cast

from google.protobuf import any_pb2
from google.protobuf.message import Message

from kes.schemas.errors import ConfigurationError, SchemaVersionError
from kes.streams.core.decision import (
    Accepted,
    CommandContext,
    Decision,
    Failed,
    Rejected,
    Rejection,
    RejectionCode,
    reject,
)
from kes.streams.core.statemigration import StateMigration, StateMigrations, stored_version

__all__ = [
    "Accepted",
    "Behavior",
    "CommandContext",
    "CommandHandler",
    "Decision",
    "DurableStateBehavior",
    "DurableStateHandler",
    "EventHandler",
    "EventSourcedBehavior",
    "Failed",
    "Rejected",
    "Rejection",
    "RejectionCode",
    "reject",
]

S = TypeVar("S", bound=Message)
C = TypeVar("C", bound=Message)
E = TypeVar("E", bound=Message)

CommandHandler: TypeAlias = Callable[[S, C, CommandContext], Sequence[Message] | Rejection]
"""An event-sourced command handler: `(state, command, ctx) -> events | Rejection`."""

EventHandler: TypeAlias = Callable[[S, E], S]
"""An event handler: `(state, event) -> new state`; it may mutate and return the state it gets."""

DurableStateHandler: TypeAlias = Callable[[S, C, CommandContext], S | Rejection]
"""A durable-state command handler: `(state, command, ctx) -> new state | Rejection`."""


class Behavior(Protocol[S]):
    """What the engine needs from a behavior, event-sourced or durable-state."""

    @property
    def name(self) -> str:
        """The aggregate name, e.g. "account"; commands name it in `CommandEnvelope.aggregate`."""
        ...

    @property
    def state_type(self) -> type[S]:
        """The protobuf message class of the state."""
        ...

    @property
    def command_types(self) -> tuple[type[Message], ...]:
        """The command message classes with a registered handler."""
        ...

    @property
    def event_types(self) -> tuple[type[Message], ...]:
        """The event message classes `evolve` accepts (and `decide` may emit)."""
        ...

    @property
    def state_version(self) -> int:
        """The schema version of the state this code writes (1 unless declared)."""
        ...

    @property
    def snapshot_every(self) -> int | None:
        """This aggregate's own snapshot interval (None: the worker's `KES_SNAPSHOT_EVERY`)."""
        ...

    def event_version(self, event_type: str) -> int | None:
        """The declared schema version of an event type (full name); None when undeclared."""
        ...

    def load_state(self, state: any_pb2.Any, version: int, entity_id: str = "") -> S:
        """A stored state of schema `version` (0: unrecorded, read as 1) as a current state;
        raises SchemaVersionError for a version newer than `state_version`."""
        ...

    def check_state_migrations(self) -> None:
        """Raise ConfigurationError, naming each missing step, unless a state migration is
        registered from every version below `state_version` (the worker and `kes verify` ask
        when they start, not at the first old snapshot)."""
        ...

    def initial_state(self, entity_id: str) -> S:
        """The state of an entity with no history."""
        ...

    def handles(self, command: Message) -> bool:
        """Whether a handler is registered for the command's type."""
        ...

    def decide(self, state: S, command: Message, ctx: CommandContext) -> Decision[S]:
        """Answer a command; never raises for a user's mistake and never mutates `state`."""
        ...

    def evolve(self, state: S, event: Message) -> S:
        """Apply one event to a copy of `state`; raises if the event's type is not registered."""
        ...

    def fold(self, state: S, events: Iterable[Message]) -> S:
        """Apply events in order to a copy of `state`."""
        ...


def _type_name(message_type: type[Message]) -> str:
    return str(message_type.DESCRIPTOR.full_name)


def _copy(state: S) -> S:
    new = type(state)()
    new.CopyFrom(state)
    return new


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _BaseBehavior(Generic[S]):
    """Shared by both behavior kinds: naming, initial state, command registry, decide's guard rails.

    Handlers are keyed by the message's full protobuf name, so dispatch follows the protobuf type.
    """

    def __init__(
        self,
        name: str,
        state_type: type[S],
        initial_state: Callable[[str], S] | None = None,
        *,
        state_version: int = 1,
        oldest_state_version: int = 1,
    ) -> None:
        if not name:
            raise ConfigurationError("a behavior needs a non-empty name (the aggregate name)")
        self._name = name
        self._state_type = state_type
        self._initial_state = initial_state
        self._commands: dict[str, tuple[type[Message], Callable[..., Any]]] = {}
        self._migrations = StateMigrations(name, state_version, oldest_state_version)
        self._event_versions: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, {_type_name(self._state_type)})"

    @property
    def name(self) -> str:
        """The aggregate name, e.g. "account"."""
        return self._name

    @property
    def state_type(self) -> type[S]:
        """The protobuf message class of the state."""
        return self._state_type

    @property
    def command_types(self) -> tuple[type[Message], ...]:
        """The command message classes with a registered handler, in registration order."""
        return tuple(t for t, _ in self._commands.values())

    def initial_state(self, entity_id: str) -> S:
        """The state of an entity with no history; by default an empty `state_type()`."""
        if self._initial_state is None:
            return self._state_type()
        return self._initial_state(entity_id)

    def handles(self, command: Message) -> bool:
        """Whether a handler is registered for the command's protobuf type."""
        return command.DESCRIPTOR.full_name in self._commands

    @property
    def state_version(self) -> int:
        """The schema version of the state this code writes (kes.streams.core.statemigration)."""
        return self._migrations.current

    def event_version(self, event_type: str) -> int | None:
        """The schema version declared with the event type's handler; None when undeclared."""
        return self._event_versions.get(event_type)

    def migrate_state(
        self, from_version: int, *, packed: bool = False
    ) -> Callable[[StateMigration], StateMigration]:
        """Register the decorated function as the migration of states of `from_version` to
        `from_version + 1`; with `packed=True` it gets the stored `Any` (for a gone type)."""

        def register(migration: StateMigration) -> StateMigration:
            self._migrations.register(from_version, migration, packed=packed)
            return migration

        return register

    def check_state_migrations(self) -> None:
        """Raise ConfigurationError unless every version below `state_version` migrates."""
        self._migrations.check()

    def load_state(self, state: any_pb2.Any, version: int, entity_id: str = "") -> S:
        """A stored state of schema `version` (0 reads as 1), migrated to `state_version`."""
        loaded = self._migrations.migrate(state, version, entity_id)
        if stored_version(version) == self.state_version:
            return cast(S, loaded)  # as stored, unchecked as before versions
        try:
            return self._check_state(loaded, "state migration")
        except TypeError as exc:  # the same snapshot fails every time: refuse, never loop
            whose = f" of {entity_id!r}" if entity_id else ""
            raise SchemaVersionError(f"the snapshot{whose}: {exc}") from exc

    def fold(self, state: S, events: Iterable[Message]) -> S:
        """Apply events in order to a copy of `state`; `state` itself is left untouched."""
        current = _copy(state)
        for event in events:
            current = self._apply(current, event)
        return current

    def evolve(self, state: S, event: Message) -> S:
        """Apply one event to a copy of `state`; raises `ConfigurationError` for an unknown type."""
        return self._apply(_copy(state), event)

    def _register_command(self, command_type: type[Message], handler: Callable[..., Any]) -> None:
        key = _type_name(command_type)
        if key in self._commands:
            raise ConfigurationError(
                f"behavior {self._name!r} already has a command handler for {key}"
            )
        self._commands[key] = (command_type, handler)

    def _unknown_command(self, command: Message) -> Rejected:
        return Rejected(
            reject(
                f"behavior {self._name!r} has no handler for {command.DESCRIPTOR.full_name}",
                RejectionCode.UNKNOWN_COMMAND,
            )
        )

    def _check_state(self, result: object, what: str) -> S:
        if not isinstance(result, self._state_type):
            raise TypeError(
                f"{what} of behavior {self._name!r} returned {type(result).__name__}, "
                f"expected {_type_name(self._state_type)}"
            )
        return result

    def _apply(self, owned: S, event: Message) -> S:
        """Apply one event to a state this behavior owns (a private copy)."""
        raise NotImplementedError


class EventSourcedBehavior(_BaseBehavior[S]):
    """An entity whose history is its events: command handlers emit them, event handlers fold them.

    Register handlers by protobuf type with the `command` and `event` decorators. An event
    handler receives a private copy of the state, so it may mutate it and return it.
    `snapshot_every` overrides the worker's `KES_SNAPSHOT_EVERY` for this aggregate (None: the
    worker's setting; see kes.streams.cycle.snapshotpolicy). `state_version` is the schema version
    of the state it writes; a migration is registered for each step from `oldest_state_version`
    (kes.streams.core.statemigration).
    """

    def __init__(
        self,
        name: str,
        state_type: type[S],
        initial_state: Callable[[str], S] | None = None,
        *,
        snapshot_every: int | None = None,
        state_version: int = 1,
        oldest_state_version: int = 1,
    ) -> None:
        super().__init__(
            name,
            state_type,
            initial_state,
            state_version=state_version,
            oldest_state_version=oldest_state_version,
        )
        if snapshot_every is not None and snapshot_every < 1:
            raise ConfigurationError(
                f"behavior {name!r}: snapshot_every must be >= 1, got {snapshot_every}"
            )
        self._snapshot_every = snapshot_every
        self._events: dict[str, tuple[type[Message], Callable[..., Any]]] = {}

    @property
    def snapshot_every(self) -> int | None:
        """This aggregate's snapshot interval, or None for the worker's `KES_SNAPSHOT_EVERY`."""
        return self._snapshot_every

    @property
    def event_types(self) -> tuple[type[Message], ...]:
        """The event message classes with a registered handler, in registration order."""
        return tuple(t for t, _ in self._events.values())

    def command(
        self, command_type: type[C]
    ) -> Callable[[CommandHandler[S, C]], CommandHandler[S, C]]:
        """Register the decorated function as the handler of `command_type`."""

        def register(handler: CommandHandler[S, C]) -> CommandHandler[S, C]:
            self._register_command(command_type, handler)
            return handler

        return register

    def event(
        self, event_type: type[E], *, version: int | None = None
    ) -> Callable[[EventHandler[S, E]], EventHandler[S, E]]:
        """Register the decorated function as the handler of `event_type`.

        With `version`, each event of this type the behavior emits carries it in its envelope's
        metadata (`schema-version`, kes.streams.core.adapters.VERSION_KEY), for version-keyed
        adapters; without, the key is absent, which readers take as version 1.
        """
        if version is not None and version < 1:
            raise ConfigurationError(f"event schema versions start at 1, not {version}")

        def register(handler: EventHandler[S, E]) -> EventHandler[S, E]:
            key = _type_name(event_type)
            if key in self._events:
                raise ConfigurationError(
                    f"behavior {self._name!r} already has an event handler for {key}"
                )
            self._events[key] = (event_type, handler)
            if version is not None:
                self._event_versions[key] = version
            return handler

        return register

    def decide(self, state: S, command: Message, ctx: CommandContext) -> Decision[S]:
        """Run the command's handler on a copy of `state` and fold the events it returns."""
        entry = self._commands.get(command.DESCRIPTOR.full_name)
        if entry is None:
            return self._unknown_command(command)
        try:
            result = entry[1](_copy(state), command, ctx)
            if isinstance(result, Rejection):
                return Rejected(result)
            events = self._check_events(result)
            new_state = self.fold(state, events)
        except Exception as exc:
            return Failed(_error_text(exc))
        return Accepted(events, new_state, ctx.revision + len(events))

    def _check_events(self, result: object) -> tuple[Message, ...]:
        if isinstance(result, Message) or not isinstance(result, Sequence):
            raise TypeError(
                f"command handler of behavior {self._name!r} returned {type(result).__name__}, "
                "expected a sequence of events or a Rejection"
            )
        for event in result:
            if not isinstance(event, Message):
                raise TypeError(
                    f"command handler of behavior {self._name!r} returned a "
                    f"{type(event).__name__} among its events, expected protobuf messages"
                )
            if event.DESCRIPTOR.full_name not in self._events:
                raise ConfigurationError(self._no_event_handler(event))
        return tuple(result)

    def _no_event_handler(self, event: Message) -> str:
        name = event.DESCRIPTOR.full_name
        return (
            f"behavior {self._name!r} has no event handler for {name}: register one with "
            f"@{self._name}.event({type(event).__name__})"
        )

    def _apply(self, owned: S, event: Message) -> S:
        entry = self._events.get(event.DESCRIPTOR.full_name)
        if entry is None:
            raise ConfigurationError(self._no_event_handler(event))
        return self._check_state(entry[1](owned, event), "event handler")


class DurableStateBehavior(_BaseBehavior[S]):
    """An entity that keeps only its latest state: command handlers return the new state.

    Each accepted command emits exactly one event, the new state message itself, so the log
    still records every change; `evolve` replaces the state with that event. The worker writes
    the entity's snapshot with every change: the snapshot changelog is the state of record, and
    the change records expire (see kes.streams.config.durablestate).
    """

    @property
    def snapshot_every(self) -> int:
        """Always 1: every change is snapshotted, whatever `KES_SNAPSHOT_EVERY` says."""
        return 1

    @property
    def event_types(self) -> tuple[type[Message], ...]:
        """The one event type: the state message class."""
        return (self._state_type,)

    def command(
        self, command_type: type[C]
    ) -> Callable[[DurableStateHandler[S, C]], DurableStateHandler[S, C]]:
        """Register the decorated function as the handler of `command_type`."""

        def register(handler: DurableStateHandler[S, C]) -> DurableStateHandler[S, C]:
            self._register_command(command_type, handler)
            return handler

        return register

    def decide(self, state: S, command: Message, ctx: CommandContext) -> Decision[S]:
        """Run the command's handler on a copy of `state`; accept its result as one event."""
        entry = self._commands.get(command.DESCRIPTOR.full_name)
        if entry is None:
            return self._unknown_command(command)
        try:
            result = entry[1](_copy(state), command, ctx)
            if isinstance(result, Rejection):
                return Rejected(result)
            new_state = self._check_state(result, "command handler")
        except Exception as exc:
            return Failed(_error_text(exc))
        return Accepted((new_state,), _copy(new_state), ctx.revision + 1)

    def event_version(self, event_type: str) -> int | None:
        """The state's schema version for the one event type, the state message, when declared
        above 1: a change record holds a state, so it is written with that state's version
        (`schema-version`), for version-keyed adapters to read older change records."""
        if event_type == _type_name(self._state_type) and self.state_version > 1:
            return self.state_version
        return None

    def _apply(self, owned: S, event: Message) -> S:
        if not isinstance(event, self._state_type):
            raise ConfigurationError(
                f"durable-state behavior {self._name!r} only applies "
                f"{_type_name(self._state_type)} events, got {event.DESCRIPTOR.full_name}"
            )
        owned.CopyFrom(event)
        return owned
