"""Given/When/Then for process managers: specifications that run `advance` with no Kafka.

    given_process(transfers, "t-1", [TransferRequested(...)])
        .when(AccountDebited(amount=5))                       # answers the only open step
        .then_sends(Send("account", "acc-b", CreditAccount(...), "credit"))
        .then_timers(SetTimer("credit-deadline", 35_000))
        .when_timer("credit-deadline")                        # at its due time
        .then_sends(Send("account", "acc-a", CreditAccount(amount=5), "refund"))

An event whose type starts the process is delivered as a start; any other event answers a step
(the one named by `step=`, or the only one waiting). The clock is `now_ms`, given per input or kept
from the last one. Each `then*` raises AssertionError with the expected and the actual, and
returns the scenario, so assertions chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import Message

from kes.schemas.codec import pack, type_name, unpack
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Rejected, Reply
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode as WireRejectionCode
from kes.schemas.kes.v1.processes_pb2 import RUNNING, ProcessInput, ProcessRecord, ProcessStatus
from kes.streams.core.decision import RejectionCode
from kes.streams.processes.advance import Advanced, Fired, advance
from kes.streams.processes.process import (
    PROCESS_ID_KEY,
    PROCESS_KEY,
    STEP_KEY,
    End,
    ProcessManager,
    Send,
    SetTimer,
    command_id,
)

__all__ = ["ProcessScenario", "given_process"]


def _show(message: Message) -> str:
    body = text_format.MessageToString(message, as_one_line=True)
    return f"{type_name(message)} {{ {body} }}"


def _show_send(send: Send) -> str:
    return f"{send.step}: {send.aggregate}/{send.entity_id} {_show(send.command)}"


def given_process(
    process: ProcessManager[Any],
    process_id: str,
    history: Iterable[Message] = (),
    *,
    now_ms: int = 0,
) -> ProcessScenario:
    """Start a scenario for one process instance, after the events of `history` (at `now_ms`)."""
    scenario = ProcessScenario(process, process_id, None, now_ms)
    for event in history:
        scenario = scenario.when(event)
    return scenario


class ProcessScenario:
    """A process instance after some inputs: its record and what the last input did."""

    def __init__(
        self,
        process: ProcessManager[Any],
        process_id: str,
        record: ProcessRecord | None,
        now_ms: int,
        last: Advanced | None = None,
        what: str = "(nothing yet)",
    ) -> None:
        self.process = process
        self.process_id = process_id
        self.record = record
        self.now_ms = now_ms
        self.last = last
        self.what = what

    @property
    def state(self) -> Message | None:
        """The process's state now (None before it started)."""
        return None if self.record is None else unpack(self.record.state)

    def _next(self, item: ProcessInput | Fired, now_ms: int | None, what: str) -> ProcessScenario:
        now = self.now_ms if now_ms is None else now_ms
        done = advance(self.process, self.record, item, now)
        record = done.record if done.record is not None else self.record
        return ProcessScenario(self.process, self.process_id, record, now, done, what)

    def _waiting_step(self, step: str | None) -> tuple[str, str]:
        """(step, entity id) of the step an answer goes to: named, or the only one waiting."""
        waiting = [s for s in self.record.steps if not s.answered] if self.record else []
        if step is not None:
            found = [s for s in (self.record.steps if self.record else []) if s.name == step]
            return step, found[0].entity_id if found else ""
        if len(waiting) != 1:
            names = [s.name for s in waiting]
            raise AssertionError(f"{self.process.name} {self.process_id!r}: name the step "
                                 f"answered (step=...); waiting: {names}")  # fmt: skip
        return waiting[0].name, waiting[0].entity_id

    def when(
        self,
        event: Message,
        *,
        step: str | None = None,
        entity_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        now_ms: int | None = None,
    ) -> ProcessScenario:
        """Deliver an event: as a start if its type starts the process (and no `step` is named),
        else as the answer to `step` (default: the only step waiting)."""
        kind = type_name(event)
        envelope = EventEnvelope(
            payload=pack(event), event_type=kind, correlation_id=self.process_id,
            metadata=dict(metadata or {}),
        )  # fmt: skip
        if self.process.starts_on(kind) and step is None:
            envelope.entity_id = entity_id if entity_id is not None else self.process_id
            found = self.process.start_id(envelope, event)
            if found != self.process_id:
                raise AssertionError(
                    f"{_show(event)} starts process {found!r}, not {self.process_id!r}: "
                    "give the entity_id or metadata its process_id function reads"
                )
        else:
            name, entity = self._waiting_step(step)
            envelope.entity_id = entity_id if entity_id is not None else entity
            envelope.metadata.update(
                {PROCESS_KEY: self.process.name, PROCESS_ID_KEY: self.process_id, STEP_KEY: name}
            )
        item = ProcessInput(process_id=self.process_id, event=envelope)
        return self._next(item, now_ms, f"when {_show(event)}")

    def when_rejected(
        self,
        step: str | None = None,
        message: str = "refused",
        code: RejectionCode = RejectionCode.VALIDATION,
        *,
        now_ms: int | None = None,
    ) -> ProcessScenario:
        """Deliver the refusal of `step` (default: the only step waiting)."""
        name, entity = self._waiting_step(step)
        reply = Reply(
            command_id=command_id(self.process.name, self.process_id, name),
            entity_id=entity,
            correlation_id=self.process_id,
            rejected=Rejected(code=WireRejectionCode.Value(code.value), message=message),
        )
        item = ProcessInput(process_id=self.process_id, rejection=reply)
        return self._next(item, now_ms, f"when step {name!r} is rejected ({message})")

    def when_timer(self, name: str, *, now_ms: int | None = None) -> ProcessScenario:
        """Fire the timer `name`, by default at its due time (it must be pending and due)."""
        due = [t.due_ms for t in self.record.timers if t.name == name] if self.record else []
        if not due:
            raise AssertionError(f"{self.process.name} {self.process_id!r}: timer {name!r} is "
                                 "not pending")  # fmt: skip
        at = due[0] if now_ms is None else now_ms
        if at < due[0]:
            raise AssertionError(f"timer {name!r} is due at {due[0]}, not at {at}")
        return self._next(Fired(name), at, f"when timer {name!r} fires at {at}")

    def _fail(self, expected: str, actual: str) -> AssertionError:
        return AssertionError(
            f"{self.process.name} {self.process_id!r}: {self.what}\n"
            f"expected {expected}\nbut it was {actual}"
        )

    def _sent(self) -> list[Send]:
        return list(self.last.sends) if self.last is not None else []

    def then_sends(self, *sends: Send) -> ProcessScenario:
        """Assert the last input sent exactly these commands, in order (none: nothing)."""
        __tracebackhide__ = True
        actual = self._sent()
        if [(s.aggregate, s.entity_id, s.command, s.step) for s in actual] != [
            (s.aggregate, s.entity_id, s.command, s.step) for s in sends
        ]:
            show = "\n".join(f"  {_show_send(s)}" for s in sends) or "  (nothing)"
            got = "\n".join(f"  {_show_send(s)}" for s in actual) or "  (nothing)"
            raise self._fail(f"commands:\n{show}", f"\n{got} ({self._note()})")
        return self

    def then_timers(self, *timers: SetTimer) -> ProcessScenario:
        """Assert the pending timers (name and due time), in any order."""
        __tracebackhide__ = True
        pending = sorted((t.name, t.due_ms) for t in self.record.timers) if self.record else []
        if pending != sorted((t.name, t.due_ms) for t in timers):
            raise self._fail(f"timers {sorted((t.name, t.due_ms) for t in timers)}", str(pending))
        return self

    def then_state(self, expected: Message) -> ProcessScenario:
        """Assert the process's state."""
        __tracebackhide__ = True
        if self.state != expected:
            actual = "nothing" if self.state is None else _show(self.state)
            raise self._fail(f"state {_show(expected)}", actual)
        return self

    def _status(self) -> str:
        if self.record is None:
            return "not started"
        return str(ProcessStatus.Name(self.record.status))

    def _note(self) -> str:
        note = self.last.note if self.last is not None else ""
        error = f": {self.record.error}" if self.record is not None and self.record.error else ""
        return f"{self._status()}, {note}{error}"

    def then_running(self) -> ProcessScenario:
        """Assert the process has started and not ended."""
        __tracebackhide__ = True
        if self.record is None or self.record.status != RUNNING:
            raise self._fail("running", self._note())
        return self

    def then_ended(self, end: End) -> ProcessScenario:
        """Assert the process ended as `end` (COMPLETED or COMPENSATED)."""
        __tracebackhide__ = True
        if self._status() != end.value:
            raise self._fail(f"ended {end.value}", self._note())
        return self

    def then_failed(self, error_contains: str = "") -> ProcessScenario:
        """Assert a handler failed (the process ended FAILED), its error containing text."""
        __tracebackhide__ = True
        error = self.record.error if self.record is not None else ""
        if self._status() != "FAILED" or error_contains not in error:
            raise self._fail(f"failed with {error_contains!r}", self._note())
        return self

    def then_ignored(self) -> ProcessScenario:
        """Assert the last input changed nothing (a duplicate, or for no waiting step)."""
        __tracebackhide__ = True
        if self.last is None or self.last.record is not None:
            raise self._fail("the input ignored", self._note())
        return self
