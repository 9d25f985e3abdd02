"""One input of one process, handled: the pure step the process runner runs per input.

`advance(process, record, input, now)` takes a process's stored record (or None), an input
(a routed event or rejection, or a timer that came due) and the runner's clock, and answers the
record to store and the commands to send. `route` decides which process instance, if any, an
event or a reply read from Kafka belongs to. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kes.schemas.codec import MAX_ID_BYTES, decode_event, decode_reply, pack, type_name, unpack
from kes.schemas.errors import ConfigurationError, DecodeError, SchemaVersionError
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode as WireRejectionCode
from kes.schemas.kes.v1.processes_pb2 import (
    COMPENSATED,
    COMPLETED,
    FAILED,
    RUNNING,
    ProcessInput,
    ProcessRecord,
    ProcessStep,
    ProcessTimer,
)
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.decision import Rejection, RejectionCode
from kes.streams.core.eventversions import newer_event
from kes.streams.processes.process import (
    NAME_PATTERN,
    PROCESS_ID_KEY,
    PROCESS_KEY,
    STEP_KEY,
    CancelTimer,
    End,
    ProcessContext,
    ProcessManager,
    Send,
    SetTimer,
    Step,
    command_id,
    parse_command_id,
)

__all__ = ["Advanced", "Fired", "advance", "route_event", "route_reply"]


@dataclass(frozen=True)
class Fired:
    """A timer that came due: an input like an event."""

    name: str


@dataclass
class Advanced:
    """What one input did: the record to store (None: nothing changed) and the commands."""

    record: ProcessRecord | None
    sends: list[Send] = field(default_factory=list)
    note: str = ""
    """What happened: "started", "handled", "failed", "late", or why the input was ignored."""


def _ignored(why: str) -> Advanced:
    return Advanced(None, [], why)


def _rejection(reply_code: int, message: str) -> Rejection:
    try:
        code = RejectionCode(WireRejectionCode.Name(reply_code))  # type: ignore[arg-type]
    except ValueError:
        code = RejectionCode.VALIDATION
    return Rejection(code, message)


def advance(
    process: ProcessManager[Any],
    record: ProcessRecord | None,
    item: ProcessInput | Fired,
    now_ms: int,
) -> Advanced:
    """Handle one input of one process; pure (`record` is never modified).

    1. An input of a process that ended is only counted (`late_inputs`); one of a process that
       does not exist (not a starting event) is ignored.
    2. A starting event of a process that exists is ignored (it started once). An event or a
       rejection answers the step named by its command: a step already answered (a replayed
       rejection) is ignored, so every step is answered once.
    3. A timer that is no longer pending is ignored; a pending one is removed, then handled.
    4. The handler runs on a copy of the state. If it raises (or misbehaves), the process ends
       FAILED with the error, and sends nothing. Otherwise its commands become steps, its timer
       changes apply, and an end clears the pending timers.
    """
    if record is not None and record.status != RUNNING:
        late = ProcessRecord()
        late.CopyFrom(record)
        late.late_inputs += 1
        return Advanced(late, [], "late")
    if isinstance(item, Fired):
        return _timer(process, record, item, now_ms)
    if item.HasField("event"):
        return _event(process, record, item, now_ms)
    if item.HasField("rejection"):
        return _rejected(process, record, item, now_ms)
    return _ignored("an empty input")


def _new_record(process: ProcessManager[Any], process_id: str, now_ms: int) -> ProcessRecord:
    return ProcessRecord(
        process=process.name,
        process_id=process_id,
        state=pack(process.initial_state(process_id)),
        status=RUNNING,
        started_ms=now_ms,
    )


def _step_of(record: ProcessRecord, name: str) -> ProcessStep | None:
    for step in record.steps:
        if step.name == name:
            return step
    return None


def _event(
    process: ProcessManager[Any], record: ProcessRecord | None, item: ProcessInput, now_ms: int
) -> Advanced:
    event = item.event
    try:
        payload = unpack(event.payload)
    except DecodeError as exc:
        return _ignored(f"undecodable event: {exc}")
    kind = type_name(payload)
    mine = event.metadata.get(PROCESS_KEY) == process.name
    if not mine:
        if record is not None:
            return _ignored("already started")
        if not process.starts_on(kind):
            return _ignored(f"{kind} starts no process")
        new = _new_record(process, item.process_id, now_ms)
        ctx = ProcessContext(item.process_id, now_ms, event=event)
        handler = process.start_handler(kind)
        assert handler is not None  # starts_on(kind)
        return _run(
            process, new, kind, lambda state: handler(state, payload, ctx), "started", now_ms
        )
    if record is None:
        return _ignored("no such process")
    step_name = event.metadata.get(STEP_KEY, "")
    updated = ProcessRecord()
    updated.CopyFrom(record)
    step = _step_of(updated, step_name)
    if step is None or step.answered:
        return _ignored(f"step {step_name!r} is not waiting for an answer")
    step.answered = True
    on_event = process.event_handler(kind)
    if on_event is None:
        updated.inputs += 1
        updated.updated_ms = now_ms
        updated.last_input = kind
        return Advanced(updated, [], "handled")
    ctx = ProcessContext(record.process_id, now_ms, step=step_name, event=event)
    return _run(
        process, updated, kind, lambda state: on_event(state, payload, ctx), "handled", now_ms
    )


def _rejected(
    process: ProcessManager[Any], record: ProcessRecord | None, item: ProcessInput, now_ms: int
) -> Advanced:
    reply = item.rejection
    if record is None:
        return _ignored("no such process")
    parsed = parse_command_id(process.name, reply.command_id)
    updated = ProcessRecord()
    updated.CopyFrom(record)
    step = None if parsed is None else _step_of(updated, parsed[1])
    if step is None or step.answered:
        return _ignored(f"the rejection of {reply.command_id} answers no waiting step")
    step.answered = True
    rejection = _rejection(reply.rejected.code, reply.rejected.message)
    what = f"rejected {step.command_type}"
    handler = process.rejection_handler(step.command_type)
    if handler is None:
        error = f"{what} ({rejection.message}), and the process has no rejection handler for it"
        return _fail(updated, what, error, now_ms)
    ctx = ProcessContext(record.process_id, now_ms, step=step.name)
    return _run(
        process, updated, what, lambda state: handler(state, rejection, ctx), "handled", now_ms
    )


def _timer(
    process: ProcessManager[Any], record: ProcessRecord | None, item: Fired, now_ms: int
) -> Advanced:
    if record is None:
        return _ignored("no such process")
    updated = ProcessRecord()
    updated.CopyFrom(record)
    pending = [t for t in updated.timers if t.name == item.name]
    if not pending:
        return _ignored(f"timer {item.name!r} is not pending")
    kept = [t for t in updated.timers if t.name != item.name]
    del updated.timers[:]
    updated.timers.extend(kept)
    what = f"timer {item.name}"
    handler = process.timer_handler(item.name)
    if handler is None:
        return _fail(updated, what, f"no handler for timer {item.name!r}", now_ms)
    ctx = ProcessContext(record.process_id, now_ms)
    return _run(process, updated, what, lambda state: handler(state, ctx), "handled", now_ms)


def _fail(record: ProcessRecord, what: str, error: str, now_ms: int) -> Advanced:
    record.status = FAILED
    record.error = error[:4096]
    record.inputs += 1
    record.last_input = what
    record.updated_ms = record.ended_ms = now_ms
    del record.timers[:]
    return Advanced(record, [], "failed")


def _run(
    process: ProcessManager[Any],
    record: ProcessRecord,
    what: str,
    call: Callable[[Any], object],
    note: str,
    now_ms: int,
) -> Advanced:
    """Run a handler on a copy of the state and apply its Step to `record` (owned here)."""
    try:
        state = unpack(record.state)
        result = call(state)
        sends = _check(process, record, result)
    except Exception as exc:
        return _fail(record, what, f"{type(exc).__name__}: {exc}", now_ms)
    assert isinstance(result, Step)
    record.updated_ms = now_ms
    record.state.CopyFrom(pack(result.state))
    record.inputs += 1
    record.last_input = what
    for send in sends:
        step = _step_of(record, send.step)
        if step is None:
            step = record.steps.add(name=send.step)
        step.aggregate, step.entity_id = send.aggregate, send.entity_id
        step.command_type, step.answered, step.sent_ms = type_name(send.command), False, now_ms
    for change in result.timers:
        kept = [t for t in record.timers if t.name != change.name]
        del record.timers[:]
        record.timers.extend(kept)
        if isinstance(change, SetTimer):
            record.timers.append(ProcessTimer(name=change.name, due_ms=change.due_ms))
    if result.end is not None:
        record.status = COMPLETED if result.end is End.COMPLETED else COMPENSATED
        record.ended_ms = now_ms
        del record.timers[:]
    return Advanced(record, sends, note)


def _check(process: ProcessManager[Any], record: ProcessRecord, result: object) -> list[Send]:
    """The handler's Step is well formed; raises TypeError or ConfigurationError if not."""
    if not isinstance(result, Step):
        raise TypeError(f"a handler of process {process.name!r} returned {result!r}, not a Step")
    if not isinstance(result.state, process.state_type):
        raise TypeError(f"Step.state is a {type(result.state).__name__}, not the process's state")
    sends = list(result.send)
    for send in sends:
        if send.aggregate not in process.sends_to:
            raise ConfigurationError(
                f"a command to {send.aggregate!r}, which is not in the process's sends_to "
                f"{list(process.sends_to)}"
            )
        if not send.entity_id or not NAME_PATTERN.fullmatch(send.step):
            raise ConfigurationError(
                f"step {send.step!r} to {send.entity_id!r}: a command needs an entity id and a "
                "step name of letters, digits, '.', '_' and '-'"
            )
        step = _step_of(record, send.step)
        if step is not None and step.answered:
            raise ConfigurationError(f"step {send.step!r} was answered: name a new step")
        cid = command_id(process.name, record.process_id, send.step)
        if len(cid.encode()) > MAX_ID_BYTES:
            raise ConfigurationError(f"command id {cid[:60]!r}... is over {MAX_ID_BYTES} bytes")
    if len({s.step for s in sends}) != len(sends):
        raise ConfigurationError("one Step sends two commands under one step name")
    for change in result.timers:
        if not isinstance(change, SetTimer | CancelTimer):
            raise TypeError(f"Step.timers holds {change!r}, not a SetTimer or CancelTimer")
    return sends


def route_event(
    process: ProcessManager[Any],
    value: bytes | None,
    adapters: EventAdapters | None = None,
    versions: Mapping[str, int] | None = None,
) -> ProcessInput | None:
    """The inbox record of an event read from an events topic, or None if it is not for us.

    The app's event `adapters` run first, so routing and handlers see current event types.
    `versions` (the app's behaviors' declared event versions, kes.streams.core.eventversions):
    an event of a type they declare but at a newer schema version raises SchemaVersionError,
    so a handler never reads a newer shape as the one it knows.

    An event is for the process when its command was the process's (metadata names it, and an
    event handler exists for its type: the process id is in the metadata), or when its type
    starts the process (the id comes from the start's `process_id`). An undecodable event is
    not for anyone here (the aggregate's own tools report it).
    """
    try:
        event = decode_event(value)
        if adapters is not None:
            event = adapters.adapt(event)
        kind = event.event_type or event.payload.TypeName()
        mine = event.metadata.get(PROCESS_KEY) == process.name
        if not (process.reacts_to(kind) if mine else process.starts_on(kind)):
            return None  # not for this process: its version is none of our business
        if versions is not None and kind in versions:
            why = newer_event(event, versions[kind])
            if why is not None:
                raise SchemaVersionError(
                    f"process {process.name!r}, event of {event.entity_id!r} at revision "
                    f"{event.revision}: {why}; deploy the code that wrote it"
                )
        if mine:
            process_id = event.metadata.get(PROCESS_ID_KEY, "")
        else:
            process_id = process.start_id(event, unpack(event.payload))
    except DecodeError:
        return None
    if not process_id:
        return None
    return ProcessInput(process_id=process_id, event=event, aggregate=event.aggregate)


def route_reply(
    process: ProcessManager[Any], aggregate: str, value: bytes | None
) -> ProcessInput | None:
    """The inbox record of a rejection of one of the process's commands, or None.

    Accepted replies are not routed: the process learns of an accepted command from its events.
    """
    try:
        reply = decode_reply(value)
    except DecodeError:
        return None
    if reply.WhichOneof("outcome") != "rejected":
        return None
    parsed = parse_command_id(process.name, reply.command_id)
    if parsed is None:
        return None
    return ProcessInput(process_id=parsed[0], rejection=reply, aggregate=aggregate)
