"""The wallet at schema version 2 (cents and a currency), on the topics version 1 wrote.

Its state migrates from version 1 (euros -> cents, currency "EUR"), version 1's `Deposited`
events read as `DepositedV2` through an event adapter, and the events it writes say version 2.
"""

from typing import Any

from kes.schemas.evolution.v1.evolution_pb2 import Deposit, Deposited, DepositedV2, Wallet, WalletV1
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.behavior import (
    Behavior,
    CommandContext,
    EventSourcedBehavior,
    Rejection,
    reject,
)

wallet = EventSourcedBehavior("wallet", Wallet, state_version=2)


@wallet.migrate_state(from_version=1)
def to_cents(old: WalletV1) -> Wallet:
    return Wallet(balance_cents=old.balance * 100, currency="EUR", deposits=old.deposits)


@wallet.command(Deposit)
def deposit(state: Wallet, cmd: Deposit, ctx: CommandContext) -> list[DepositedV2] | Rejection:
    currency = cmd.currency or "EUR"
    if cmd.amount <= 0:
        return reject("amount must be positive")
    if state.currency and currency != state.currency:
        return reject(f"this wallet holds {state.currency}")
    return [DepositedV2(amount_cents=cmd.amount, currency=currency)]


@wallet.event(DepositedV2, version=2)
def deposited(state: Wallet, evt: DepositedV2) -> Wallet:
    state.balance_cents += evt.amount_cents
    state.currency = evt.currency
    state.deposits += 1
    return state


EVENT_ADAPTERS = EventAdapters()


@EVENT_ADAPTERS.adapter(Deposited)
def euros_to_cents(old: Deposited) -> DepositedV2:
    return DepositedV2(amount_cents=old.amount * 100, currency="EUR")


BEHAVIORS: list[Behavior[Any]] = [wallet]
