"""Size discipline: nothing a command leads to may be larger than the record limit.

A record the producer or the broker refuses aborts the cycle that holds every partition's work,
and the same command would abort it again after the rewind: the worker would stall. So ids and
metadata have limits at decode, and the batch step knows the size of every record it will write.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import (
    MAX_ENTITY_ID_BYTES,
    MAX_ID_BYTES,
    MAX_METADATA_BYTES,
    decode_dead_letter,
    encode_command,
    new_command,
)
from kes.schemas.errors import ConfigurationError
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode, Reply
from kes.streams.config.settings import Settings
from kes.streams.core.behavior import EventSourcedBehavior
from kes.streams.core.decision import Rejection, reject
from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.records import MAX_TEXT, CommandRecord, record_size
from kes.streams.cycle.result import reply_records
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for

TOPICS = AggregateTopics("account", partitions=1)
LIMIT = 20_000


def _step() -> BatchStep:
    return BatchStep(
        account, TOPICS, 0, {}.get, max_command_bytes=LIMIT - 10, max_record_bytes=LIMIT
    )


def _record(offset: int, entity: str, command: object, **kw: object) -> CommandRecord:
    env = new_command(entity, command, aggregate="account", reply_wanted=True, **kw)  # type: ignore[arg-type]
    value, headers = encode_command(env)
    return CommandRecord(offset, entity.encode()[:2000], value, headers)


def _replies(step_result: object) -> list[Reply]:
    return [Reply.FromString(r.value) for r in reply_records(step_result, [0] * 10, "r", 0)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "size"),
    [("command_id", MAX_ID_BYTES + 1), ("correlation_id", MAX_ID_BYTES + 1)],
)
def test_ids_over_their_limit_are_dead_letters_without_a_reply(field: str, size: int) -> None:
    result = _step().run(
        [_record(0, "acc-1", bank_pb2.OpenAccount(owner="a"), **{field: "x" * size})]
    )
    assert (result.accepted, len(result.events), result.replies) == (0, 0, [])
    (letter,) = [decode_dead_letter(r.value) for r in result.dead_letters]
    assert letter.reason == "TOO_LARGE" and field in letter.error
    assert result.next_command_offset == 1


def test_a_long_entity_id_or_too_much_metadata_is_refused_at_decode() -> None:
    long_id = "e" * (MAX_ENTITY_ID_BYTES + 1)
    metadata = {f"k{i}": "v" * 1000 for i in range(MAX_METADATA_BYTES // 1000 + 1)}
    result = _step().run(
        [
            _record(0, long_id, bank_pb2.OpenAccount(owner="a")),
            _record(1, "acc-1", bank_pb2.OpenAccount(owner="a"), metadata=metadata),
        ]
    )
    reasons = [decode_dead_letter(r.value) for r in result.dead_letters]
    assert [(r.reason, "entity id" in r.error or "metadata" in r.error) for r in reasons] == [
        ("TOO_LARGE", True),
        ("TOO_LARGE", True),
    ]
    assert result.events == [] and result.changed == {}


def test_a_command_whose_event_would_not_fit_is_rejected_and_dead_lettered() -> None:
    step = _step()
    result = step.run(
        [
            _record(0, "acc-1", bank_pb2.OpenAccount(owner="x" * (LIMIT - 250))),
            _record(1, "acc-2", bank_pb2.OpenAccount(owner="ok")),
        ]
    )
    assert [r.key for r in result.events] == [b"acc-2@" + b"1".rjust(20, b"0")]
    assert "acc-1" not in result.changed
    (letter,) = [decode_dead_letter(r.value) for r in result.dead_letters]
    assert letter.reason == "TOO_LARGE" and letter.offset == 0 and "event" in letter.error
    first, second = _replies(result)
    assert first.rejected.code == RejectionCode.POISON
    assert second.WhichOneof("outcome") == "accepted"
    assert all(record_size(r) <= LIMIT for r in (*result.events, *result.dead_letters))


def test_an_entity_whose_snapshot_would_outgrow_the_limit_stops_growing() -> None:
    step = _step()
    owner = "o" * (LIMIT // 3)
    first = step.run([_record(0, "acc-1", bank_pb2.OpenAccount(owner=owner))])
    step.commit(first)
    assert first.accepted == 1
    # Each credit's event is small, but the state keeps the owner: the snapshot stays bounded.
    later = step.run([_record(1, "acc-1", bank_pb2.CreditAccount(amount=1))])
    assert later.accepted == 1
    assert later.changed["acc-1"].snapshot().ByteSize() <= LIMIT


def test_a_dead_letter_keeps_the_head_of_a_value_too_large_to_copy_whole() -> None:
    value = b"\x08" + b"z" * (LIMIT + 5000)  # not an envelope, and larger than the record limit
    step = BatchStep(
        account, TOPICS, 0, {}.get, max_command_bytes=LIMIT * 2, max_record_bytes=LIMIT
    )
    result = step.run([CommandRecord(0, b"acc-1", value, [])])
    (record,) = result.dead_letters
    letter = decode_dead_letter(record.value)
    assert record_size(record) <= LIMIT
    assert value.startswith(letter.original_value) and len(letter.original_value) > LIMIT // 2
    assert "truncated from" in letter.error


def test_a_reply_leaves_out_a_state_that_would_not_fit() -> None:
    step = BatchStep(
        account, TOPICS, 0, {}.get, max_command_bytes=LIMIT - 10, max_record_bytes=LIMIT
    )
    owner = "o" * (LIMIT - 3000)  # the event and snapshot fit; the reply's room does not
    result = step.run([_record(0, "acc-1", bank_pb2.OpenAccount(owner=owner))])
    assert result.accepted == 1
    (reply,) = _replies(result)
    assert reply.accepted.revision == 1 and not reply.accepted.HasField("state")


def test_settings_keep_commands_below_the_record_limit() -> None:
    assert Settings().max_command_bytes < Settings().max_record_bytes
    with pytest.raises(ConfigurationError, match="below max_record_bytes"):
        Settings(max_command_bytes=2_000_000)
    assert Settings.from_env({"KES_MAX_RECORD_BYTES": "3000000"}).max_record_bytes == 3_000_000
    assert partition_for("acc-1", 1) == 0


def test_a_huge_rejection_message_or_handler_error_is_cut_to_a_bounded_length() -> None:
    wordy = EventSourcedBehavior("account", bank_pb2.Account)

    @wordy.command(bank_pb2.OpenAccount)
    def refuse(state: bank_pb2.Account, cmd: bank_pb2.OpenAccount, ctx: object) -> Rejection:
        return reject("no " * 1_000_000)

    @wordy.command(bank_pb2.CreditAccount)
    def explode(state: bank_pb2.Account, cmd: bank_pb2.CreditAccount, ctx: object) -> list[Message]:
        raise RuntimeError("boom " * 1_000_000)

    acc = "acc-1"
    step = BatchStep(wordy, AggregateTopics("account", partitions=1), 0, lambda _: None)
    result = step.run(
        [
            _record(0, acc, bank_pb2.OpenAccount(owner="a")),
            _record(1, acc, bank_pb2.CreditAccount()),
        ]
    )
    refused, failed = (p.reply for p in result.replies)
    assert len(refused.rejected.message) < MAX_TEXT + 100
    assert refused.rejected.message.endswith("characters, truncated)")
    assert len(failed.rejected.message) < MAX_TEXT + 100
    (letter,) = result.dead_letters
    assert len(decode_dead_letter(letter.value).error) < MAX_TEXT + 100
    assert all(record_size(r) < 20_000 for r in reply_records(result, [], "r", 0))
