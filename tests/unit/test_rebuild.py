"""Folding a partition's events back into snapshots and accepted outcomes (pure)."""

from __future__ import annotations

import pytest

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_command, new_command
from kes.schemas.errors import KesError
from kes.stores.snapshots import Checkpoint
from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.idempotency import OutcomePolicy, decode_outcome, outcome_key
from kes.streams.cycle.records import CommandRecord
from kes.streams.runtime.rebuild import fold_partition, needs_rebuild
from kes.topology.layout import AggregateTopics

TOPICS = AggregateTopics("account", partitions=1)


def _events() -> tuple[BatchStep, list[tuple[int, bytes]], list[str]]:
    step = BatchStep(account, TOPICS, 0, lambda _: None)
    commands = [
        ("a", bank_pb2.OpenAccount(owner="ann", opening_balance=10)),
        ("b", bank_pb2.OpenAccount(owner="bob")),
        ("a", bank_pb2.CreditAccount(amount=5)),
        ("a", bank_pb2.DebitAccount(amount=100)),  # refused: no event
        ("b", bank_pb2.CreditAccount(amount=1)),
    ]
    records, ids = [], []
    for offset, (entity, command) in enumerate(commands):
        env = new_command(entity, command, aggregate="account")
        ids.append(env.command_id)
        value, headers = encode_command(env)
        records.append(CommandRecord(offset, entity.encode(), value, headers))
    result = step.run(records)
    step.commit(result)
    return step, [(100 + i, e.value) for i, e in enumerate(result.events)], ids


def test_the_fold_of_the_events_is_the_state_the_worker_holds() -> None:
    step, events, _ = _events()
    rebuilt = fold_partition(account, events, 0)
    assert rebuilt.events == 4
    for entity_id in ("a", "b"):
        held, folded = step.entity(entity_id), rebuilt.entities[entity_id]
        assert (folded.revision, folded.state) == (held.revision, held.state)
        assert folded.recent_command_ids == held.recent_command_ids
    assert rebuilt.entities["a"].first_event_offset == 100
    assert rebuilt.entities["b"].first_event_offset == 101


def test_accepted_outcomes_come_back_inside_the_horizon_only() -> None:
    _, events, ids = _events()
    rebuilt = fold_partition(account, events, 0)
    assert set(rebuilt.outcomes) == {
        outcome_key(e, c) for e, c in zip("abab", [ids[0], ids[1], ids[2], ids[4]], strict=True)
    }
    _, credit = decode_outcome(rebuilt.outcomes[outcome_key("a", ids[2])])
    assert (credit.accepted.revision, list(credit.accepted.event_offsets)) == (2, [102])
    later = fold_partition(account, events, 0, now_ms=2**60)  # every event past the horizon
    assert not later.outcomes
    bounded = fold_partition(account, events, 0, outcomes=OutcomePolicy(max_per_partition=1))
    assert list(bounded.outcomes) == [outcome_key("b", ids[4])]  # the newest kept


def test_a_log_with_a_missing_revision_is_refused() -> None:
    _, events, _ = _events()
    with pytest.raises(KesError, match="not contiguous"):
        fold_partition(account, [events[0], events[3], events[2]], 0)


def test_a_rebuild_is_needed_only_when_the_group_is_past_the_changelog() -> None:
    assert needs_rebuild(Checkpoint(), committed=10)
    assert needs_rebuild(Checkpoint(5, 7), committed=10)
    assert not needs_rebuild(Checkpoint(5, 10), committed=10)
    assert not needs_rebuild(Checkpoint(), committed=-1)  # a new partition
    assert not needs_rebuild(Checkpoint(5, 12), committed=10)  # after kes skip-deleted
