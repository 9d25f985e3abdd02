"""A test app: the bank account plus a handler that raises, to test poison commands end to end."""

from typing import Any

from google.protobuf.message import Message

from kes.schemas.bank.v1 import bank_pb2
from kes.streams.core.behavior import Behavior, EventSourcedBehavior
from kes.streams.core.decision import CommandContext

account: EventSourcedBehavior[bank_pb2.Account] = EventSourcedBehavior(
    "account", bank_pb2.Account, initial_state=lambda eid: bank_pb2.Account(account_id=eid)
)


@account.command(bank_pb2.OpenAccount)
def open_account(
    state: bank_pb2.Account, cmd: bank_pb2.OpenAccount, ctx: CommandContext
) -> list[Message]:
    if cmd.owner == "boom":
        raise RuntimeError("the handler blew up")
    return [bank_pb2.AccountOpened(account_id=ctx.entity_id, owner=cmd.owner, balance=0)]


@account.event(bank_pb2.AccountOpened)
def opened(state: bank_pb2.Account, evt: bank_pb2.AccountOpened) -> bank_pb2.Account:
    state.owner, state.open = evt.owner, True
    return state


BEHAVIORS: list[Behavior[Any]] = [account]
