"""The wallet's events at schema version 3 under the same type (`DepositedV2`): what a worker
running tests/apps/wallet_v2.py must refuse to fold, never read as its version 2."""

from typing import Any

from kes.schemas.evolution.v1.evolution_pb2 import DepositedV2, Wallet
from kes.streams.core.behavior import Behavior, EventSourcedBehavior
from tests.apps import wallet_v2

wallet = EventSourcedBehavior("wallet", Wallet, state_version=2)
wallet.migrate_state(from_version=1)(wallet_v2.to_cents)
wallet.command(wallet_v2.Deposit)(wallet_v2.deposit)
wallet.event(DepositedV2, version=3)(wallet_v2.deposited)

EVENT_ADAPTERS = wallet_v2.EVENT_ADAPTERS

BEHAVIORS: list[Behavior[Any]] = [wallet]
