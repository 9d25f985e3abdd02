"""Fold determinism for the bank account: replaying the log rebuilds exactly the decided state."""

from __future__ import annotations

from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from kes.examples.bank import account
from kes.examples.bank.domain import MAX_BALANCE
from kes.schemas.bank.v1 import bank_pb2
from kes.streams.core.decision import Accepted, CommandContext, Failed

ENTITY = "acc-1"

amounts = st.one_of(
    st.integers(min_value=-10, max_value=1_000),
    st.sampled_from([0, 1, MAX_BALANCE, MAX_BALANCE - 1, -MAX_BALANCE]),
)
account_ids = st.sampled_from(["", ENTITY, "other"])
commands = st.one_of(
    st.builds(
        bank_pb2.OpenAccount,
        account_id=account_ids,
        owner=st.text(max_size=5),
        opening_balance=amounts,
    ),
    st.builds(bank_pb2.CreditAccount, account_id=account_ids, amount=amounts),
    st.builds(bank_pb2.DebitAccount, account_id=account_ids, amount=amounts),
)


def _run(cmds: list[Message]) -> tuple[bank_pb2.Account, list[Message], int]:
    """Decide the commands one by one, as the engine would; return state, log and revision."""
    state = account.initial_state(ENTITY)
    log: list[Message] = []
    revision = 0
    for n, cmd in enumerate(cmds):
        ctx = CommandContext(entity_id=ENTITY, command_id=f"c{n}", revision=revision)
        before = bank_pb2.Account()
        before.CopyFrom(state)
        decision = account.decide(state, cmd, ctx)
        assert not isinstance(decision, Failed), decision
        assert state == before, "decide mutated its input state"
        assert account.decide(state, cmd, ctx) == decision, "decide is not deterministic"
        if isinstance(decision, Accepted):
            log.extend(decision.events)
            state, revision = decision.new_state, decision.revision
        assert state.balance >= 0
    return state, log, revision


@settings(max_examples=300)
@given(st.lists(commands, max_size=30))
def test_replaying_all_events_gives_the_decided_state(cmds: list[Message]) -> None:
    state, log, revision = _run(cmds)
    assert account.fold(account.initial_state(ENTITY), log) == state
    assert revision == len(log)


@settings(max_examples=300)
@given(st.lists(commands, max_size=30), st.data())
def test_snapshot_plus_tail_equals_full_replay(cmds: list[Message], data: st.DataObject) -> None:
    _, log, _ = _run(cmds)
    k = data.draw(st.integers(min_value=0, max_value=len(log)), label="snapshot at")
    initial = account.initial_state(ENTITY)
    snapshot = account.fold(initial, log[:k])
    restored = bank_pb2.Account.FromString(snapshot.SerializeToString())
    assert account.fold(restored, log[k:]) == account.fold(initial, log)
    assert initial == account.initial_state(ENTITY)
