"""Given/When/Then for behaviors: specifications that run the pure core with no Kafka.

    given(account, "acc-1", [AccountOpened(account_id="acc-1", owner="ann", balance=100)])
        .when(CreditAccount(account_id="acc-1", amount=50))
        .then(AccountCredited(account_id="acc-1", amount=50, balance=150))

Each `then*` raises `AssertionError` with expected and actual messages in protobuf text
format, so scenarios run directly under pytest. A scenario chains: `.when(a).when(b)` sends
`b` to the state after `a` (unchanged if `a` was not accepted), and every `then*` returns the
scenario so several assertions can follow one command.

Old events are tested against the current behavior with the app's event adapters, as the worker
reads them: `given(wallet, "w-1", [Deposited(amount=5)], adapters=EVENT_ADAPTERS)`; an event
given as `(event, version)` is one stored at that schema version (for adapters keyed by
version), a bare event one stored as this code writes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

from kes.schemas.codec import pack, type_name, unpack
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.core.adapters import VERSION_KEY, EventAdapters
from kes.streams.core.behavior import Behavior
from kes.streams.core.decision import (
    Accepted,
    CommandContext,
    Decision,
    Failed,
    Rejected,
    RejectionCode,
)
from kes.streams.core.eventversions import check_event_version

__all__ = ["Given", "GivenEvent", "Scenario", "given"]

S = TypeVar("S", bound=Message)

_command_ids = itertools.count(1)


def _show(message: Message) -> str:
    body = text_format.MessageToString(message, as_one_line=True)
    return f"{message.DESCRIPTOR.full_name} {{ {body} }}" if body else message.DESCRIPTOR.full_name


def _show_all(messages: Sequence[Message]) -> str:
    if not messages:
        return "  (no events)"
    return "\n".join(f"  {i}. {_show(m)}" for i, m in enumerate(messages, 1))


def _show_decision(decision: Decision[S]) -> str:
    if isinstance(decision, Accepted):
        return (
            f"accepted at revision {decision.revision} with events:\n{_show_all(decision.events)}"
        )
    if isinstance(decision, Rejected):
        rejection = decision.rejection
        return f"rejected {rejection.code.value}: {rejection.message!r}"
    return f"failed ({decision.reason.value}): {decision.error}"


GivenEvent = Message | tuple[Message, int]
"""An event of a scenario's history: as this code writes it, or `(event, schema version)`."""


def given(
    behavior: Behavior[S],
    entity_id: str,
    events: Iterable[GivenEvent] = (),
    *,
    state: S | None = None,
    revision: int | None = None,
    adapters: EventAdapters | None = None,
) -> Given[S]:
    """Start a scenario: the entity's history (`events`), or a `state` at some `revision`.

    With `state`, `events` are applied on top of it; the revision defaults to the number of
    events given (plus `revision` when a state is given). Each event is read as the worker
    reads it from the log: through `adapters`, and refused (SchemaVersionError) if newer than
    the behavior declares for its type (kes.streams.core.eventversions).
    """
    history = [_as_read(behavior, entity_id, n, e, adapters) for n, e in enumerate(events, 1)]
    start = behavior.initial_state(entity_id) if state is None else state
    base = revision if revision is not None else 0
    return Given(behavior, entity_id, behavior.fold(start, history), base + len(history))


def _as_read(
    behavior: Behavior[S],
    entity_id: str,
    revision: int,
    given_event: GivenEvent,
    adapters: EventAdapters | None,
) -> Message:
    """The event as stored (with its schema version), adapted and checked, as the fold sees it."""
    event, version = given_event if isinstance(given_event, tuple) else (given_event, None)
    if version is None and adapters is None:
        return event  # as written by this code: nothing to read differently
    name = type_name(event)
    env = EventEnvelope(
        entity_id=entity_id, revision=revision, payload=pack(event), event_type=name
    )
    stored = version if version is not None else behavior.event_version(name)
    if stored is not None:
        env.metadata[VERSION_KEY] = str(stored)
    if adapters is not None:
        env = adapters.adapt(env)
    check_event_version(behavior, env, f"given event {revision}")
    return unpack(env.payload)


class Given(Generic[S]):
    """An entity at a known state and revision, waiting for a command."""

    def __init__(self, behavior: Behavior[S], entity_id: str, state: S, revision: int) -> None:
        self.behavior = behavior
        self.entity_id = entity_id
        self.state = state
        self.revision = revision

    def when(
        self,
        command: Message,
        *,
        command_id: str | None = None,
        correlation_id: str = "",
        metadata: Mapping[str, str] | None = None,
        decided_ms: int = 0,
    ) -> Scenario[S]:
        """Send `command` to the entity, decided at `decided_ms`; check with the `then*` methods."""
        ctx = CommandContext(
            entity_id=self.entity_id,
            command_id=command_id if command_id is not None else f"cmd-{next(_command_ids)}",
            correlation_id=correlation_id,
            revision=self.revision,
            metadata=dict(metadata or {}),
            decided_ms=decided_ms,
        )
        decision = self.behavior.decide(self.state, command, ctx)
        return Scenario(self, command, decision)


class Scenario(Given[S]):
    """The outcome of one command; also a `Given` at the resulting state, so `when` chains."""

    def __init__(self, before: Given[S], command: Message, decision: Decision[S]) -> None:
        if isinstance(decision, Accepted):
            state, revision = decision.new_state, decision.revision
        else:
            state, revision = before.state, before.revision
        super().__init__(before.behavior, before.entity_id, state, revision)
        self.command = command
        self.decision = decision

    def _fail(self, expected: str) -> AssertionError:
        return AssertionError(
            f"{self.behavior.name} {self.entity_id!r}: when {_show(self.command)}\n"
            f"expected {expected}\n"
            f"but it was {_show_decision(self.decision)}"
        )

    def then(self, *events: Message) -> Scenario[S]:
        """Assert the command was accepted with exactly `events`, in order (none: no events)."""
        __tracebackhide__ = True
        decision = self.decision
        if not isinstance(decision, Accepted) or list(decision.events) != list(events):
            raise self._fail(f"accepted with events:\n{_show_all(events)}")
        return self

    def then_rejected(
        self,
        code: RejectionCode | None = None,
        message_contains: str | None = None,
    ) -> Scenario[S]:
        """Assert the command was rejected, optionally with `code` and a message containing text."""
        __tracebackhide__ = True
        decision = self.decision
        wanted = "rejected" + (f" {code.value}" if code is not None else "")
        if message_contains is not None:
            wanted += f" with a message containing {message_contains!r}"
        if (
            not isinstance(decision, Rejected)
            or (code is not None and decision.rejection.code != code)
            or (message_contains is not None and message_contains not in decision.rejection.message)
        ):
            raise self._fail(wanted)
        return self

    def then_failed(self, error_contains: str | None = None) -> Scenario[S]:
        """Assert the handler failed (raised), optionally with an error containing text."""
        __tracebackhide__ = True
        decision = self.decision
        if not isinstance(decision, Failed) or (
            error_contains is not None and error_contains not in decision.error
        ):
            suffix = f" with an error containing {error_contains!r}" if error_contains else ""
            raise self._fail(f"failed{suffix}")
        return self

    def then_state(self, expected: S) -> Scenario[S]:
        """Assert the entity's state after the command (unchanged if it was not accepted)."""
        __tracebackhide__ = True
        if self.state != expected:
            raise AssertionError(
                f"{self.behavior.name} {self.entity_id!r}: when {_show(self.command)}\n"
                f"expected state {_show(expected)}\n"
                f"but it was     {_show(self.state)}\n"
                f"({_show_decision(self.decision)})"
            )
        return self

    def then_revision(self, expected: int) -> Scenario[S]:
        """Assert the entity's revision after the command."""
        __tracebackhide__ = True
        if self.revision != expected:
            raise self._fail(f"revision {expected}, got {self.revision}")
        return self
