"""The outcome store: a retry inside the horizon gets the original outcome and is decided once.

Runs the partition processor over an in-memory snapshot store, committing each batch the way
the worker's transaction does (events get offsets, outcomes and tombstones reach the store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_command, new_command
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode, Reply
from kes.stores import MemorySnapshotStore
from kes.streams.config.settings import Settings
from kes.streams.cycle.idempotency import (
    decode_outcome,
    encode_outcome,
    is_outcome_key,
    outcome_key,
    outcome_time,
)
from kes.streams.cycle.records import CommandRecord
from kes.streams.cycle.result import BatchResult, outcome_records, reply_records
from kes.streams.runtime.processor import PartitionProcessor
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.apps.faulty import account as faulty

TOPICS = AggregateTopics("account", partitions=1)
ACC = "acc-1"
assert partition_for(ACC, 1) == 0


class Partition:
    """One partition: a processor, its store, and every reply and event offset written."""

    def __init__(self, behavior: object = account, **settings: object) -> None:
        self.store = MemorySnapshotStore().partition(TOPICS.snapshots, 0)
        self.settings = Settings(**settings)  # type: ignore[arg-type]
        self.processor = PartitionProcessor(behavior, TOPICS, 0, self.settings, self.store)  # type: ignore[arg-type]
        self.offset = 0
        self.events = 0
        self.replies: list[Reply] = []
        self.results: list[BatchResult] = []

    def send(self, *commands: tuple[object, str], reply: bool = True) -> list[Reply]:
        """One batch of (command, command id) on ACC; the replies it wrote."""
        records = []
        for command, command_id in commands:
            env = new_command(
                ACC, command, aggregate="account", command_id=command_id, reply_wanted=reply
            )
            value, headers = encode_command(env)
            records.append(CommandRecord(self.offset, ACC.encode(), value, headers))
            self.offset += 1
        return self._commit(records)

    def _commit(self, records: Sequence[CommandRecord]) -> list[Reply]:
        result = asyncio.run(self.processor.handle(records))
        assert result is not None
        self.results.append(result)
        offsets = list(range(self.events, self.events + len(result.events)))
        self.events += len(result.events)
        written: dict[str, bytes | None] = dict.fromkeys(result.expired)
        replies = [Reply.FromString(r.value) for r in reply_records(result, offsets, "r", 0)]
        for record in outcome_records(result, TOPICS.snapshots, 0):
            written[record.key.decode()] = record.value
        for entity_id, entity in result.changed.items():
            written[entity_id] = entity.snapshot().SerializeToString()
        self.processor.committed(result, written, changelog=len(self.results))
        self.replies.extend(replies)
        return replies


def test_a_retry_after_many_commands_gets_the_original_acceptance() -> None:
    """Was the bug: beyond the 32 recent ids a retried debit was applied a second time."""
    part = Partition()
    part.send((bank_pb2.OpenAccount(owner="a", opening_balance=100), "open"))
    (debit,) = part.send((bank_pb2.DebitAccount(amount=30), "X"))
    for i in range(40):
        part.send((bank_pb2.CreditAccount(amount=1), f"credit-{i}"))
    (retry,) = part.send((bank_pb2.DebitAccount(amount=30), "X"))
    assert retry.replay and not debit.replay
    assert retry.accepted.revision == debit.accepted.revision == 2
    assert list(retry.accepted.event_offsets) == list(debit.accepted.event_offsets) == [1]
    assert not retry.accepted.HasField("state")
    assert part.results[-1].events == []
    assert part.processor.step.entity(ACC).state.balance == 100 - 30 + 40  # type: ignore[attr-defined]
    assert part.processor.stats.replayed == 1


def test_a_rejected_command_retried_after_the_state_changed_is_rejected_again() -> None:
    """Was the bug: a rejected debit was accepted on retry after a credit."""
    part = Partition()
    part.send((bank_pb2.OpenAccount(owner="a", opening_balance=10), "open"))
    (first,) = part.send((bank_pb2.DebitAccount(amount=50), "D"))
    part.send((bank_pb2.CreditAccount(amount=100), "C"))
    (retry,) = part.send((bank_pb2.DebitAccount(amount=50), "D"))
    assert first.WhichOneof("outcome") == retry.WhichOneof("outcome") == "rejected"
    assert retry.replay
    assert (retry.rejected.code, retry.rejected.message) == (
        first.rejected.code,
        first.rejected.message,
    )
    assert part.processor.step.entity(ACC).state.balance == 110  # type: ignore[attr-defined]


def test_a_retry_without_a_reply_wanted_writes_nothing_and_is_not_applied() -> None:
    part = Partition()
    part.send((bank_pb2.OpenAccount(owner="a"), "open"), reply=False)
    part.send((bank_pb2.CreditAccount(amount=5), "C"), reply=False)
    part.send((bank_pb2.CreditAccount(amount=5), "C"), reply=False)
    last = part.results[-1]
    assert (last.events, last.replies, last.replayed) == ([], [], 1)
    assert part.store.outcomes() == 2


def test_a_dead_lettered_command_leaves_no_outcome_so_a_retry_is_decided_again() -> None:
    part = Partition(faulty)
    (boom,) = part.send((bank_pb2.OpenAccount(owner="boom"), "c1"))  # the handler raises
    assert boom.rejected.code == RejectionCode.POISON
    (fixed,) = part.send((bank_pb2.OpenAccount(owner="ann"), "c1"))
    assert fixed.accepted.revision == 1 and not fixed.replay


def test_past_the_horizon_a_retry_is_decided_again_unless_among_the_recent_ids() -> None:
    part = Partition(outcome_horizon_s=60, recent_command_ids=2)
    part.send((bank_pb2.OpenAccount(owner="a"), "open"))
    part.send((bank_pb2.CreditAccount(amount=5), "C"))
    _age_outcomes(part, by_ms=61_000)
    (recent,) = part.send((bank_pb2.CreditAccount(amount=5), "C"))
    assert recent.rejected.code == RejectionCode.DUPLICATE  # still among the recent 2 ids
    part.send((bank_pb2.CreditAccount(amount=1), "D"), (bank_pb2.CreditAccount(amount=1), "E"))
    _age_outcomes(part, by_ms=61_000)
    (again,) = part.send((bank_pb2.CreditAccount(amount=5), "C"))
    assert again.accepted.revision == 5 and not again.replay  # documented: applied again


def test_expired_outcomes_are_removed_by_tombstones_in_a_later_batch() -> None:
    part = Partition(outcome_horizon_s=60)
    part.send((bank_pb2.OpenAccount(owner="a"), "open"), (bank_pb2.CreditAccount(amount=1), "c"))
    assert part.store.outcomes() == 2
    _age_outcomes(part, by_ms=61_000)
    part.send((bank_pb2.CreditAccount(amount=1), "d"))
    assert sorted(part.results[-1].expired) == [outcome_key(ACC, "c"), outcome_key(ACC, "open")]
    assert part.store.outcomes() == 1
    assert part.store.get(outcome_key(ACC, "open")) is None


def test_the_count_bound_drops_the_oldest_outcomes_first() -> None:
    part = Partition(max_outcomes=3)
    for i in range(6):
        part.send(
            (
                bank_pb2.OpenAccount(owner="a") if i == 0 else bank_pb2.CreditAccount(amount=1),
                f"c{i}",
            )
        )
    assert part.store.outcomes() <= 4  # the bound, plus the batch that is over it
    assert part.store.get(outcome_key(ACC, "c0")) is None
    assert part.store.get(outcome_key(ACC, "c5")) is not None


def test_no_outcome_store_when_the_horizon_is_zero() -> None:
    part = Partition(outcome_horizon_s=0)
    part.send((bank_pb2.OpenAccount(owner="a"), "open"))
    (dup,) = part.send((bank_pb2.OpenAccount(owner="a"), "open"))
    assert dup.rejected.code == RejectionCode.DUPLICATE
    assert part.store.outcomes() == 0


def test_outcome_records_round_trip_without_the_state() -> None:
    reply = Reply(command_id="c", entity_id="e", correlation_id="corr")
    reply.accepted.revision = 3
    reply.accepted.state.Pack(bank_pb2.Account(balance=5))
    value = encode_outcome(1234, reply)
    decided, stored = decode_outcome(value)
    assert (decided, outcome_time(value)) == (1234, 1234)
    assert stored.accepted.revision == 3
    assert not stored.accepted.HasField("state") and reply.accepted.HasField("state")
    assert is_outcome_key(outcome_key("e", "c")) and not is_outcome_key("e")


def _age_outcomes(part: Partition, by_ms: int) -> None:
    """Move every stored outcome's decision time back (as if time had passed)."""
    aged: dict[str, bytes | None] = {}
    for key in part.store.expired(before_ms=2**62, keep=0, limit=10**6):
        value = part.store.get(key)
        assert value is not None
        decided, reply = decode_outcome(value)
        aged[key] = encode_outcome(decided - by_ms, reply)
    part.store.write(aged, part.store.checkpoint())
