"""The bank account: the eGo sample domain as an event-sourced behavior. Amounts are int64 cents.

Rules: an account is opened once, with a non-negative balance; only an open account is credited
or debited, by a positive amount; a debit never takes the balance below zero; a credit with an
expiry is refused once the worker decides it later than that; a closed account keeps its balance
and takes no more movements. A command's
`account_id` may be left empty; if set, it must equal the entity id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from google.protobuf.message import Message

from kes.schemas.bank.v1 import bank_pb2
from kes.streams.core import CommandContext, EventSourcedBehavior, Rejection, reject

__all__ = ["MAX_BALANCE", "account"]

MAX_BALANCE = 2**63 - 1
"""The largest balance an int64 holds; a credit beyond it is refused, not wrapped."""

_Outcome: TypeAlias = Sequence[Message] | Rejection

account: EventSourcedBehavior[bank_pb2.Account] = EventSourcedBehavior(
    "account",
    bank_pb2.Account,
    initial_state=lambda entity_id: bank_pb2.Account(account_id=entity_id),
)
"""The `account` aggregate: OpenAccount, CreditAccount, DebitAccount and CloseAccount."""


def _wrong_id(account_id: str, ctx: CommandContext) -> Rejection | None:
    if account_id and account_id != ctx.entity_id:
        return reject(f"account_id {account_id!r} does not match entity {ctx.entity_id!r}")
    return None


def _check_movement(
    state: bank_pb2.Account, account_id: str, amount: int, ctx: CommandContext
) -> Rejection | None:
    if wrong := _wrong_id(account_id, ctx):
        return wrong
    if not state.open:
        return reject("account not open")
    if amount <= 0:
        return reject(f"amount must be positive, got {amount}")
    return None


@account.command(bank_pb2.OpenAccount)
def open_account(
    state: bank_pb2.Account, cmd: bank_pb2.OpenAccount, ctx: CommandContext
) -> _Outcome:
    """Open a new account with its opening balance."""
    if wrong := _wrong_id(cmd.account_id, ctx):
        return wrong
    if state.open:
        return reject("account already open")
    if cmd.opening_balance < 0:
        return reject(f"opening balance must not be negative, got {cmd.opening_balance}")
    return [
        bank_pb2.AccountOpened(
            account_id=ctx.entity_id, owner=cmd.owner, balance=cmd.opening_balance
        )
    ]


@account.command(bank_pb2.CreditAccount)
def credit_account(
    state: bank_pb2.Account, cmd: bank_pb2.CreditAccount, ctx: CommandContext
) -> _Outcome:
    """Add `amount` to an open account."""
    if refused := _check_movement(state, cmd.account_id, cmd.amount, ctx):
        return refused
    if cmd.expires_at_ms and ctx.decided_ms > cmd.expires_at_ms:
        return reject(f"credit expired {ctx.decided_ms - cmd.expires_at_ms} ms ago")
    if cmd.amount > MAX_BALANCE - state.balance:
        return reject("balance would overflow")
    balance = state.balance + cmd.amount
    return [bank_pb2.AccountCredited(account_id=ctx.entity_id, amount=cmd.amount, balance=balance)]


@account.command(bank_pb2.DebitAccount)
def debit_account(
    state: bank_pb2.Account, cmd: bank_pb2.DebitAccount, ctx: CommandContext
) -> _Outcome:
    """Take `amount` from an open account that holds at least that much."""
    if refused := _check_movement(state, cmd.account_id, cmd.amount, ctx):
        return refused
    if cmd.amount > state.balance:
        return reject("insufficient funds")
    balance = state.balance - cmd.amount
    return [bank_pb2.AccountDebited(account_id=ctx.entity_id, amount=cmd.amount, balance=balance)]


@account.command(bank_pb2.CloseAccount)
def close_account(
    state: bank_pb2.Account, cmd: bank_pb2.CloseAccount, ctx: CommandContext
) -> _Outcome:
    """Close an open account; its balance stays as it is."""
    if wrong := _wrong_id(cmd.account_id, ctx):
        return wrong
    if not state.open:
        return reject("account not open")
    return [bank_pb2.AccountClosed(account_id=ctx.entity_id, balance=state.balance)]


@account.event(bank_pb2.AccountOpened)
def account_opened(state: bank_pb2.Account, evt: bank_pb2.AccountOpened) -> bank_pb2.Account:
    """The account exists, open, with its opening balance."""
    state.account_id = evt.account_id
    state.owner = evt.owner
    state.balance = evt.balance
    state.open = True
    return state


@account.event(bank_pb2.AccountCredited)
def account_credited(state: bank_pb2.Account, evt: bank_pb2.AccountCredited) -> bank_pb2.Account:
    """The balance is the one the event recorded."""
    state.balance = evt.balance
    return state


@account.event(bank_pb2.AccountDebited)
def account_debited(state: bank_pb2.Account, evt: bank_pb2.AccountDebited) -> bank_pb2.Account:
    """The balance is the one the event recorded."""
    state.balance = evt.balance
    return state


@account.event(bank_pb2.AccountClosed)
def account_closed(state: bank_pb2.Account, evt: bank_pb2.AccountClosed) -> bank_pb2.Account:
    """The account takes no more movements."""
    state.open = False
    return state
