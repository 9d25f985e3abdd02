"""Money transfers: the `transfer` aggregate and the "transfer-money" process that moves the money.

A transfer starts with `TransferMoney` sent to the `transfer` aggregate (entity id = transfer
id), which records `TransferRequested`. The process then, each step one command:

1. debits the sender (`debit`); refused (no funds, closed or unknown account): the transfer
   ends compensated, nothing moved;
2. credits the receiver (`credit`), with an expiry: a credit decided after it is refused, so
   one that came too late can never apply after the sender got the money back; a timer fires
   `grace_ms` after the expiry if no answer came;
3. credit accepted: the transfer completes (`end`: CompleteTransfer). Credit refused (closed or
   unknown account, expired) or no answer by the timer: the sender is refunded (`refund`), then
   the transfer ends compensated (`end`: CompensateTransfer).

The `transfer` aggregate accepts one end per transfer, so its log shows each transfer ending once.

This module is also an app module: `kes worker kes.examples.bank.transfers` runs both aggregates,
`kes process run kes.examples.bank.transfers transfer-money` the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

from google.protobuf.message import Message

from kes.examples.bank.domain import account
from kes.schemas.bank.v1 import bank_pb2
from kes.streams.core import Behavior, CommandContext, EventSourcedBehavior, Rejection, reject
from kes.streams.processes.process import (
    CancelTimer,
    End,
    ProcessContext,
    ProcessManager,
    Send,
    SetTimer,
    Step,
    by_entity,
)

__all__ = [
    "BEHAVIORS",
    "CREDIT_DEADLINE_MS",
    "GRACE_MS",
    "PROCESSES",
    "transfer",
    "transfer_process",
    "transfers",
]

CREDIT_DEADLINE_MS = 30_000
"""How long the receiver's worker has to decide the credit."""
GRACE_MS = 5_000
"""How long after the credit's expiry the process waits before refunding: covers clock skew
between the process runner and the receiver's worker, and a transaction still committing."""

_Outcome: TypeAlias = Sequence[Message] | Rejection
State: TypeAlias = bank_pb2.TransferProcess

transfer: EventSourcedBehavior[bank_pb2.Transfer] = EventSourcedBehavior(
    "transfer",
    bank_pb2.Transfer,
    initial_state=lambda entity_id: bank_pb2.Transfer(transfer_id=entity_id),
)
"""The `transfer` aggregate: TransferMoney, then one CompleteTransfer or CompensateTransfer."""


@transfer.command(bank_pb2.TransferMoney)
def transfer_money(
    state: bank_pb2.Transfer, cmd: bank_pb2.TransferMoney, ctx: CommandContext
) -> _Outcome:
    """Ask for a transfer: two different accounts, a positive amount, once per transfer id."""
    if state.status:
        return reject("transfer already requested")
    if cmd.amount <= 0:
        return reject(f"amount must be positive, got {cmd.amount}")
    if not cmd.from_account or not cmd.to_account or cmd.from_account == cmd.to_account:
        return reject("a transfer needs two different accounts")
    return [
        bank_pb2.TransferRequested(
            transfer_id=ctx.entity_id,
            from_account=cmd.from_account,
            to_account=cmd.to_account,
            amount=cmd.amount,
        )
    ]


@transfer.command(bank_pb2.CompleteTransfer)
def complete_transfer(
    state: bank_pb2.Transfer, cmd: bank_pb2.CompleteTransfer, ctx: CommandContext
) -> _Outcome:
    """The money arrived: the transfer ends completed (once)."""
    if state.status != "requested":
        return reject(f"transfer is {state.status or 'unknown'}, not requested")
    return [bank_pb2.TransferCompleted(transfer_id=ctx.entity_id)]


@transfer.command(bank_pb2.CompensateTransfer)
def compensate_transfer(
    state: bank_pb2.Transfer, cmd: bank_pb2.CompensateTransfer, ctx: CommandContext
) -> _Outcome:
    """The money went back (or never moved): the transfer ends compensated (once)."""
    if state.status != "requested":
        return reject(f"transfer is {state.status or 'unknown'}, not requested")
    return [
        bank_pb2.TransferCompensated(
            transfer_id=ctx.entity_id, reason=cmd.reason, refunded=cmd.refunded
        )
    ]


@transfer.event(bank_pb2.TransferRequested)
def transfer_requested(
    state: bank_pb2.Transfer, evt: bank_pb2.TransferRequested
) -> bank_pb2.Transfer:
    """The transfer's accounts and amount."""
    state.from_account, state.to_account = evt.from_account, evt.to_account
    state.amount, state.status = evt.amount, "requested"
    return state


@transfer.event(bank_pb2.TransferCompleted)
def transfer_completed(
    state: bank_pb2.Transfer, evt: bank_pb2.TransferCompleted
) -> bank_pb2.Transfer:
    """Ended: completed."""
    state.status = "completed"
    return state


@transfer.event(bank_pb2.TransferCompensated)
def transfer_compensated(
    state: bank_pb2.Transfer, evt: bank_pb2.TransferCompensated
) -> bank_pb2.Transfer:
    """Ended: compensated, with the reason."""
    state.status, state.reason = "compensated", evt.reason
    return state


def transfer_process(
    name: str = "transfer-money",
    *,
    deadline_ms: int = CREDIT_DEADLINE_MS,
    grace_ms: int = GRACE_MS,
) -> ProcessManager[bank_pb2.TransferProcess]:
    """The transfer process (see the module docstring), with its credit deadline and grace."""
    process = ProcessManager(name, bank_pb2.TransferProcess, aggregates=["transfer", "account"])

    def end(state: State, end: End, reason: str = "", refunded: bool = False) -> Step[State]:
        state.stage = "ended"
        tid = state.transfer_id
        command: Message = (
            bank_pb2.CompleteTransfer(transfer_id=tid)
            if end is End.COMPLETED
            else bank_pb2.CompensateTransfer(transfer_id=tid, reason=reason, refunded=refunded)
        )
        return Step(state, send=[Send("transfer", tid, command, "end")], end=end)

    def refund(state: State, reason: str) -> Step[State]:
        state.stage, state.reason = "refunding", reason
        credit = bank_pb2.CreditAccount(amount=state.amount)
        return Step(
            state,
            send=[Send("account", state.from_account, credit, "refund")],
            timers=[CancelTimer("credit-deadline")],
        )

    @process.starts(bank_pb2.TransferRequested, process_id=by_entity)
    def requested(
        state: State, event: bank_pb2.TransferRequested, ctx: ProcessContext
    ) -> Step[State]:
        state.transfer_id = ctx.process_id
        state.from_account, state.to_account = event.from_account, event.to_account
        state.amount, state.stage = event.amount, "debiting"
        debit = bank_pb2.DebitAccount(amount=event.amount)
        return Step(state, send=[Send("account", event.from_account, debit, "debit")])

    @process.rejected(bank_pb2.DebitAccount)
    def debit_refused(state: State, rejection: Rejection, ctx: ProcessContext) -> Step[State]:
        return end(state, End.COMPENSATED, f"debit refused: {rejection.message}")

    @process.on(bank_pb2.AccountDebited)
    def debited(state: State, event: bank_pb2.AccountDebited, ctx: ProcessContext) -> Step[State]:
        state.stage = "crediting"
        expires = ctx.now_ms + deadline_ms
        credit = bank_pb2.CreditAccount(amount=state.amount, expires_at_ms=expires)
        return Step(
            state,
            send=[Send("account", state.to_account, credit, "credit")],
            timers=[SetTimer("credit-deadline", expires + grace_ms)],
        )

    @process.on(bank_pb2.AccountCredited)
    def credited(state: State, event: bank_pb2.AccountCredited, ctx: ProcessContext) -> Step[State]:
        if ctx.step == "refund":
            return end(state, End.COMPENSATED, state.reason, refunded=True)
        if state.stage == "refunding":  # only if a runner lagged past the grace: say so loudly
            raise RuntimeError(
                f"the credit to {state.to_account} applied after the deadline and the sender "
                "was refunded: take the amount back by hand"
            )
        step = end(state, End.COMPLETED)
        return Step(step.state, step.send, [CancelTimer("credit-deadline")], step.end)

    @process.rejected(bank_pb2.CreditAccount)
    def credit_refused(state: State, rejection: Rejection, ctx: ProcessContext) -> Step[State]:
        if ctx.step == "refund":
            raise RuntimeError(
                f"the refund to {state.from_account} was refused: {rejection.message}"
            )
        if state.stage == "refunding":  # the deadline already sent the refund
            return Step(state)
        return refund(state, f"credit refused: {rejection.message}")

    @process.timer("credit-deadline")
    def deadline(state: State, ctx: ProcessContext) -> Step[State]:
        return refund(state, f"no answer from {state.to_account} within {deadline_ms} ms")

    return process


transfers = transfer_process()
"""The "transfer-money" process with the default deadline (30 s) and grace (5 s)."""

BEHAVIORS: list[Behavior[Any]] = [account, transfer]
"""The aggregates a worker of this app runs."""

PROCESSES: list[ProcessManager[Any]] = [transfers]
"""The processes `kes process run kes.examples.bank.transfers <name>` finds."""
