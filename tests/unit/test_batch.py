"""The pure command step: every documented outcome, without a broker."""

from __future__ import annotations

from google.protobuf.message import Message

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_dead_letter, encode_command, new_command, unpack
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, RejectionCode, Reply, Snapshot
from kes.streams.core.behavior import EventSourcedBehavior
from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.records import CommandRecord
from kes.streams.cycle.result import reply_records
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for

TOPICS = AggregateTopics("account", partitions=4)


def _entity_on(partition: int, prefix: str = "acc") -> str:
    return next(
        f"{prefix}-{i}" for i in range(10_000) if partition_for(f"{prefix}-{i}", 4) == partition
    )


def _step(partition: int, stored: dict[str, Snapshot] | None = None) -> BatchStep:
    return BatchStep(account, TOPICS, partition, (stored or {}).get)


def _record(offset: int, entity: str, command: object, **kw: object) -> CommandRecord:
    env = new_command(entity, command, aggregate="account", reply_wanted=True, **kw)  # type: ignore[arg-type]
    value, headers = encode_command(env)
    return CommandRecord(offset, entity.encode(), value, headers)


def test_accepted_commands_write_events_with_unique_keys_and_a_snapshot() -> None:
    acc = _entity_on(1)
    step = _step(1)
    result = step.run(
        [
            _record(10, acc, bank_pb2.OpenAccount(owner="ann", opening_balance=100)),
            _record(11, acc, bank_pb2.CreditAccount(amount=50)),
        ]
    )
    assert [r.key for r in result.events] == [
        f"{acc}@{1:020d}".encode(),
        f"{acc}@{2:020d}".encode(),
    ]
    assert {r.partition for r in result.events} == {1}
    envs = [EventEnvelope.FromString(r.value) for r in result.events]
    assert [e.revision for e in envs] == [1, 2]
    assert envs[1].source_offset == 11
    assert unpack(envs[1].payload) == bank_pb2.AccountCredited(
        account_id=acc, amount=50, balance=150
    )
    entity = result.changed[acc]
    assert entity.revision == 2
    assert entity.state.balance == 150  # type: ignore[attr-defined]
    assert result.next_command_offset == 12
    replies = [Reply.FromString(r.value) for r in reply_records(result, [100, 101], "r", 1)]
    assert replies[1].accepted.revision == 2
    assert list(replies[1].accepted.event_offsets) == [101]


def test_duplicate_command_id_is_answered_and_writes_nothing() -> None:
    acc = _entity_on(0)
    step = _step(0)
    first = step.run([_record(0, acc, bank_pb2.OpenAccount(owner="a"), command_id="c1")])
    step.commit(first)
    again = step.run([_record(1, acc, bank_pb2.OpenAccount(owner="a"), command_id="c1")])
    assert again.events == [] and again.changed == {}
    reply = again.replies[0].reply
    assert reply.rejected.code == RejectionCode.DUPLICATE
    assert reply.rejected.current_revision == 1


def test_duplicate_within_one_batch_is_answered_the_first_ones_outcome() -> None:
    # Was: answered Rejected(DUPLICATE). The outcome store answers a retry with the original
    # outcome (accepted, same revision and event offsets), marked as a replay.
    acc = _entity_on(0)
    result = _step(0).run(
        [
            _record(0, acc, bank_pb2.OpenAccount(owner="a"), command_id="x"),
            _record(1, acc, bank_pb2.OpenAccount(owner="a"), command_id="x"),
        ]
    )
    assert len(result.events) == 1
    first, again = reply_records(result, [40], "r", 0)
    original, replay = Reply.FromString(first.value), Reply.FromString(again.value)
    assert (original.replay, replay.replay) == (False, True)
    assert replay.accepted.revision == original.accepted.revision == 1
    assert list(replay.accepted.event_offsets) == list(original.accepted.event_offsets) == [40]
    assert result.replayed == 1


def test_wrong_expected_revision_is_a_conflict() -> None:
    acc = _entity_on(2)
    result = _step(2).run([_record(0, acc, bank_pb2.OpenAccount(owner="a"), expected_revision=3)])
    assert result.events == []
    assert result.replies[0].reply.rejected.code == RejectionCode.CONFLICT


def test_undecodable_bytes_go_to_the_dead_letter_topic_and_the_batch_goes_on() -> None:
    acc = _entity_on(3)
    result = _step(3).run(
        [
            CommandRecord(5, b"k", b"\xff\x00garbage", []),
            _record(6, acc, bank_pb2.OpenAccount(owner="a")),
        ]
    )
    assert len(result.dead_letters) == 1
    letter = decode_dead_letter(result.dead_letters[0].value)
    assert (letter.reason, letter.offset, letter.original_value) == (
        "UNDECODABLE",
        5,
        b"\xff\x00garbage",
    )
    assert len(result.events) == 1
    assert result.next_command_offset == 7


def test_unknown_command_type_is_rejected_and_dead_lettered() -> None:
    acc = _entity_on(1)
    result = _step(1).run([_record(0, acc, bank_pb2.AccountOpened(owner="x"))])
    assert result.replies[0].reply.rejected.code == RejectionCode.UNKNOWN_COMMAND
    assert decode_dead_letter(result.dead_letters[0].value).reason == "UNKNOWN_COMMAND"


def test_handler_that_raises_is_poison_with_a_reply_and_a_dead_letter() -> None:
    boom = EventSourcedBehavior("account", bank_pb2.Account)

    @boom.command(bank_pb2.OpenAccount)
    def explode(state: bank_pb2.Account, cmd: bank_pb2.OpenAccount, ctx: object) -> list[Message]:
        raise RuntimeError("handler bug")

    acc = _entity_on(1)
    step = BatchStep(boom, TOPICS, 1, {}.get)
    result = step.run(
        [_record(0, acc, bank_pb2.OpenAccount(owner="x")), _record(1, acc, bank_pb2.OpenAccount())]
    )
    assert [r.reply.rejected.code for r in result.replies] == [RejectionCode.POISON] * 2
    letter = decode_dead_letter(result.dead_letters[0].value)
    assert letter.reason == "HANDLER_ERROR" and "handler bug" in letter.error
    assert result.next_command_offset == 2


def test_command_on_the_wrong_partition_is_forwarded_not_applied() -> None:
    acc = _entity_on(2)
    record = _record(9, acc, bank_pb2.OpenAccount(owner="a"))
    result = _step(0).run([record])
    assert result.events == [] and result.replies == [] and result.changed == {}
    (forward,) = result.forwards
    assert (forward.topic, forward.partition, forward.value) == (
        "account.commands",
        2,
        record.value,
    )


def test_rejection_keeps_the_state() -> None:
    acc = _entity_on(0)
    result = _step(0).run(
        [
            _record(0, acc, bank_pb2.OpenAccount(owner="a", opening_balance=10)),
            _record(1, acc, bank_pb2.DebitAccount(amount=50)),
        ]
    )
    assert result.replies[1].reply.rejected.code == RejectionCode.VALIDATION
    assert result.changed[acc].revision == 1


def test_entities_load_from_the_store() -> None:
    acc = _entity_on(0)
    step = _step(0)
    opened = step.run([_record(0, acc, bank_pb2.OpenAccount(owner="a", opening_balance=7))])
    stored = {acc: opened.changed[acc].snapshot()}
    fresh = _step(0, stored)
    result = fresh.run([_record(1, acc, bank_pb2.CreditAccount(amount=3))])
    assert result.changed[acc].revision == 2
    assert result.changed[acc].state.balance == 10  # type: ignore[attr-defined]


def test_a_reply_goes_to_the_replies_partition_its_client_named() -> None:
    acc = _entity_on(2)
    records = []
    for offset, header in enumerate([b"3", b"0", b"4", b"x", b""]):  # 4, x, "": not partitions
        record = _record(offset, acc, bank_pb2.CreditAccount(amount=1))
        records.append(record._replace(headers=[*record.headers, ("kes-reply-partition", header)]))
    records.append(_record(9, acc, bank_pb2.CreditAccount(amount=1)))  # no header
    result = _step(2).run(records)
    replies = reply_records(result, [], "r", 2)
    assert [r.partition for r in replies] == [3, 0, 2, 2, 2, 2]
