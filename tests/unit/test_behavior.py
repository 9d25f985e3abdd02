"""The generic behavior core: dispatch by protobuf type, decisions, copying, fold, durable state."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from kes.schemas.errors import ConfigurationError, DeadLetterReason
from kes.streams.core.behavior import Behavior, DurableStateBehavior, EventSourcedBehavior
from kes.streams.core.decision import (
    Accepted,
    CommandContext,
    Failed,
    Rejected,
    Rejection,
    RejectionCode,
    reject,
)
from kes.streams.core.testkit import given


def _messages() -> dict[str, type[Message]]:
    """A tiny counter domain, built at run time so this test needs no generated code."""
    file = descriptor_pb2.FileDescriptorProto(
        name="tests/counter.proto", package="test.counter.v1", syntax="proto3"
    )
    i64 = descriptor_pb2.FieldDescriptorProto.TYPE_INT64
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    shapes: dict[str, list[tuple[str, int, int]]] = {
        "Counter": [("value", i64, optional), ("name", string, optional), ("log", i64, repeated)],
        "Increment": [("by", i64, optional)],
        "Incremented": [("by", i64, optional), ("value", i64, optional)],
        "Rename": [("name", string, optional)],
        "Renamed": [("name", string, optional)],
        "Explode": [],
        "Unhandled": [],
    }
    for name, fields in shapes.items():
        message = file.message_type.add(name=name)
        for number, (field_name, field_type, label) in enumerate(fields, 1):
            message.field.add(name=field_name, number=number, type=field_type, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"test.counter.v1.{name}"))
        for name in shapes
    }


M = _messages()
Counter, Increment, Incremented = M["Counter"], M["Increment"], M["Incremented"]
Rename, Renamed, Explode, Unhandled = M["Rename"], M["Renamed"], M["Explode"], M["Unhandled"]


def _counter() -> EventSourcedBehavior[Any]:
    counter: EventSourcedBehavior[Any] = EventSourcedBehavior(
        "counter", Counter, initial_state=lambda eid: Counter(name=eid)
    )

    @counter.command(Increment)
    def increment(state: Any, cmd: Any, ctx: CommandContext) -> list[Message] | Rejection:
        if cmd.by == 0:
            return []
        if cmd.by < 0:
            return reject("by must be positive")
        state.value += cmd.by  # a handler gets a copy: scribbling on it leaves the caller's alone
        return [Incremented(by=cmd.by, value=state.value)]

    @counter.command(Rename)
    def rename(state: Any, cmd: Any, ctx: CommandContext) -> list[Message]:
        return [Renamed(name=cmd.name), Renamed(name=cmd.name + "!")]

    @counter.command(Explode)
    def explode(state: Any, cmd: Any, ctx: CommandContext) -> list[Message]:
        raise RuntimeError("kaboom")

    @counter.event(Incremented)
    def incremented(state: Any, evt: Any) -> Any:
        state.value += evt.by
        state.log.append(evt.by)
        return state

    @counter.event(Renamed)
    def renamed(state: Any, evt: Any) -> Any:
        state.name = evt.name
        return state

    return counter


def _ctx(revision: int = 0) -> CommandContext:
    return CommandContext(entity_id="c-1", command_id="cmd-1", revision=revision)


def test_decide_dispatches_by_type_and_folds_the_events() -> None:
    counter = _counter()
    state = Counter(name="c-1", value=1)
    decision = counter.decide(state, Increment(by=2), _ctx(revision=4))
    assert decision == Accepted(
        events=(Incremented(by=2, value=3),),
        new_state=Counter(name="c-1", value=3, log=[2]),
        revision=5,
    )
    assert state == Counter(name="c-1", value=1)


def test_several_events_advance_the_revision_by_their_number() -> None:
    decision = _counter().decide(Counter(), Rename(name="x"), _ctx(revision=1))
    assert isinstance(decision, Accepted)
    assert decision.revision == 3
    assert decision.new_state.name == "x!"


def test_an_empty_list_is_accepted_without_events() -> None:
    decision = _counter().decide(Counter(value=7), Increment(by=0), _ctx(revision=2))
    assert decision == Accepted(events=(), new_state=Counter(value=7), revision=2)


def test_a_rejection_is_returned_as_rejected() -> None:
    decision = _counter().decide(Counter(), Increment(by=-1), _ctx())
    assert decision == Rejected(Rejection(RejectionCode.VALIDATION, "by must be positive"))


def test_an_unknown_command_is_rejected_as_unknown_command() -> None:
    counter = _counter()
    decision = counter.decide(Counter(), Unhandled(), _ctx())
    assert isinstance(decision, Rejected)
    assert decision.rejection.code is RejectionCode.UNKNOWN_COMMAND
    assert "test.counter.v1.Unhandled" in decision.rejection.message
    assert not counter.handles(Unhandled())
    assert counter.handles(Increment())


def test_a_handler_that_raises_becomes_a_failed_decision() -> None:
    decision = _counter().decide(Counter(), Explode(), _ctx())
    assert decision == Failed("RuntimeError: kaboom")
    assert isinstance(decision, Failed)
    assert decision.reason is DeadLetterReason.HANDLER_ERROR


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (Incremented(by=1), "returned Incremented"),
        (None, "returned NoneType"),
        (["not a message"], "among its events"),
        ([Unhandled()], "no event handler for test.counter.v1.Unhandled"),
    ],
)
def test_a_handler_that_returns_no_events_list_fails(result: object, expected: str) -> None:
    counter: EventSourcedBehavior[Any] = EventSourcedBehavior("bad", Counter)
    counter.command(Increment)(lambda state, cmd, ctx: result)
    decision = counter.decide(Counter(), Increment(by=1), _ctx())
    assert isinstance(decision, Failed)
    assert expected in decision.error


def test_an_event_handler_that_raises_fails_the_decision() -> None:
    counter: EventSourcedBehavior[Any] = EventSourcedBehavior("bad", Counter)
    counter.command(Increment)(lambda state, cmd, ctx: [Incremented(by=1)])

    @counter.event(Incremented)
    def broken(state: Any, evt: Any) -> Any:
        raise ValueError("no")

    assert counter.decide(Counter(), Increment(), _ctx()) == Failed("ValueError: no")


def test_evolve_does_not_mutate_its_input() -> None:
    counter = _counter()
    state = Counter(name="c-1", value=1, log=[1])
    new = counter.evolve(state, Incremented(by=2))
    assert new == Counter(name="c-1", value=3, log=[1, 2])
    assert state == Counter(name="c-1", value=1, log=[1])
    assert new is not state


def test_evolve_of_an_unregistered_event_raises() -> None:
    with pytest.raises(ConfigurationError, match="no event handler"):
        _counter().evolve(Counter(), Unhandled())


def test_an_event_handler_must_return_the_state() -> None:
    counter: EventSourcedBehavior[Any] = EventSourcedBehavior("bad", Counter)
    counter.event(Incremented)(lambda state, evt: None)
    with pytest.raises(TypeError, match=r"expected test\.counter\.v1\.Counter"):
        counter.evolve(Counter(), Incremented())


def test_fold_applies_events_in_order_and_leaves_the_input_alone() -> None:
    counter = _counter()
    start = counter.initial_state("c-1")
    events = [Incremented(by=1), Renamed(name="n"), Incremented(by=5)]
    assert counter.fold(start, events) == Counter(name="n", value=6, log=[1, 5])
    assert start == Counter(name="c-1")
    assert counter.fold(start, []) == start


def test_registration_is_explicit_and_unique() -> None:
    counter = _counter()
    assert counter.name == "counter"
    assert counter.state_type is Counter
    assert counter.command_types == (Increment, Rename, Explode)
    assert counter.event_types == (Incremented, Renamed)
    with pytest.raises(ConfigurationError, match="already has a command handler"):
        counter.command(Increment)(lambda state, cmd, ctx: [])
    with pytest.raises(ConfigurationError, match="already has an event handler"):
        counter.event(Renamed)(lambda state, evt: state)
    with pytest.raises(ConfigurationError, match="non-empty name"):
        EventSourcedBehavior("", Counter)


def test_the_default_initial_state_is_empty() -> None:
    assert EventSourcedBehavior("x", Counter).initial_state("c-9") == Counter()


def _named() -> DurableStateBehavior[Any]:
    named: DurableStateBehavior[Any] = DurableStateBehavior("named", Counter)

    @named.command(Rename)
    def rename(state: Any, cmd: Any, ctx: CommandContext) -> Any:
        if not cmd.name:
            return reject("name required")
        state.name = cmd.name
        return state

    @named.command(Explode)
    def explode(state: Any, cmd: Any, ctx: CommandContext) -> Any:
        return Renamed()

    return named


def test_durable_state_emits_the_new_state_as_its_one_event() -> None:
    named = _named()
    state = Counter(value=3)
    decision = named.decide(state, Rename(name="a"), _ctx(revision=7))
    assert decision == Accepted(
        events=(Counter(value=3, name="a"),), new_state=Counter(value=3, name="a"), revision=8
    )
    assert state == Counter(value=3)
    assert named.event_types == (Counter,)
    assert named.command_types == (Rename, Explode)


def test_durable_state_rejections_failures_and_unknown_commands() -> None:
    named = _named()
    assert named.decide(Counter(), Rename(), _ctx()) == Rejected(reject("name required"))
    failed = named.decide(Counter(), Explode(), _ctx())
    assert isinstance(failed, Failed)
    assert "expected test.counter.v1.Counter" in failed.error
    unknown = named.decide(Counter(), Increment(), _ctx())
    assert isinstance(unknown, Rejected)
    assert unknown.rejection.code is RejectionCode.UNKNOWN_COMMAND


def test_durable_state_evolve_replaces_the_state() -> None:
    named = _named()
    state = Counter(value=1, name="old", log=[1, 2])
    assert named.evolve(state, Counter(name="new")) == Counter(name="new")
    assert state == Counter(value=1, name="old", log=[1, 2])
    assert named.fold(Counter(), [Counter(value=1), Counter(value=2)]) == Counter(value=2)
    with pytest.raises(ConfigurationError, match="only applies"):
        named.evolve(state, Renamed())


def test_both_kinds_satisfy_the_behavior_protocol() -> None:
    behaviors: list[Behavior[Any]] = [_counter(), _named()]
    for behavior in behaviors:
        assert behavior.initial_state("e").DESCRIPTOR.full_name == "test.counter.v1.Counter"


def test_testkit_reads_as_a_specification_and_chains() -> None:
    counter = _counter()
    (
        given(counter, "c-1", [Incremented(by=1)])
        .when(Increment(by=2))
        .then(Incremented(by=2, value=3))
        .then_state(Counter(name="c-1", value=3, log=[1, 2]))
        .then_revision(2)
        .when(Increment(by=-1))
        .then_rejected(RejectionCode.VALIDATION, message_contains="positive")
        .then_revision(2)
        .when(Explode())
        .then_failed("kaboom")
        .when(Rename(name="z"))
        .then(Renamed(name="z"), Renamed(name="z!"))
        .then_revision(4)
    )
    given(_named(), "n-1", state=Counter(value=5), revision=3).when(Rename(name="q")).then(
        Counter(value=5, name="q")
    ).then_revision(4)


def test_testkit_failures_show_expected_and_actual() -> None:
    scenario = given(_counter(), "c-1").when(Increment(by=2))
    with pytest.raises(AssertionError) as info:
        scenario.then(Incremented(by=3, value=3))
    text = str(info.value)
    assert (
        "expected accepted with events:\n  1. test.counter.v1.Incremented { by: 3 value: 3 }"
        in text
    )
    assert "but it was accepted at revision 1 with events:" in text
    assert "test.counter.v1.Incremented { by: 2 value: 2 }" in text
    with pytest.raises(AssertionError, match="expected rejected UNKNOWN_COMMAND"):
        scenario.then_rejected(RejectionCode.UNKNOWN_COMMAND)
    with pytest.raises(AssertionError, match="expected failed"):
        scenario.then_failed()
    with pytest.raises(AssertionError, match=r"expected state test\.counter\.v1\.Counter"):
        scenario.then_state(Counter())
    rejected = given(_counter(), "c-1").when(Increment(by=-1))
    with pytest.raises(AssertionError, match="containing 'nope'"):
        rejected.then_rejected(message_contains="nope")
    with pytest.raises(AssertionError, match="rejected VALIDATION: 'by must be positive'"):
        rejected.then()
