"""The wallet at schema version 1 (whole euros), whose log tests/apps/wallet_v2.py takes over."""

from typing import Any

from kes.schemas.evolution.v1.evolution_pb2 import Deposit, Deposited, WalletV1
from kes.streams.core.behavior import (
    Behavior,
    CommandContext,
    EventSourcedBehavior,
    Rejection,
    reject,
)

wallet = EventSourcedBehavior("wallet", WalletV1)


@wallet.command(Deposit)
def deposit(state: WalletV1, cmd: Deposit, ctx: CommandContext) -> list[Deposited] | Rejection:
    if cmd.amount <= 0:
        return reject("amount must be positive")
    return [Deposited(amount=cmd.amount)]


@wallet.event(Deposited)
def deposited(state: WalletV1, evt: Deposited) -> WalletV1:
    state.balance += evt.amount
    state.deposits += 1
    return state


BEHAVIORS: list[Behavior[Any]] = [wallet]
