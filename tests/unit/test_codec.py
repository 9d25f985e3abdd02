"""The wire codec: round trips, the content-type header, and every way a record can be bad."""

import pytest
from google.protobuf import any_pb2, json_format

from kes.schemas import codec
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.errors import DeadLetterReason, DecodeError
from kes.schemas.kes.v1 import envelopes_pb2 as kes

PB = [(codec.CONTENT_TYPE_HEADER, codec.PROTOBUF.encode())]
JS = [(codec.CONTENT_TYPE_HEADER, codec.JSON.encode())]


def a_command(**kwargs: object) -> kes.CommandEnvelope:
    return codec.new_command(
        "acc-1",
        bank_pb2.OpenAccount(account_id="acc-1", owner="Ada", opening_balance=1_000),
        aggregate="bank.account",
        **kwargs,  # type: ignore[arg-type]
    )


def reason_of(value: bytes | None, headers: object = None, **kwargs: object) -> DeadLetterReason:
    with pytest.raises(DecodeError) as info:
        codec.decode_command(value, headers, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [codec.PROTOBUF, codec.JSON])
@pytest.mark.parametrize("expected_revision", [None, 0, 7])
def test_command_round_trips(content_type: str, expected_revision: int | None) -> None:
    env = a_command(
        expected_revision=expected_revision,
        reply_wanted=True,
        correlation_id="corr-9",
        metadata={"user": "ada", "trace": "t-1"},
    )
    value, headers = codec.encode_command(env, content_type)
    assert headers == [("content-type", content_type.encode())]
    decoded = codec.decode_command(value, headers)
    assert decoded == env
    assert decoded.HasField("expected_revision") == (expected_revision is not None)


def test_json_from_message_to_json_decodes_like_binary() -> None:
    env = a_command(expected_revision=3)
    text = json_format.MessageToJson(env)
    assert '"@type": "type.googleapis.com/bank.v1.OpenAccount"' in text
    from_json = codec.decode_command(text.encode(), JS)
    from_binary = codec.decode_command(env.SerializeToString(), None)
    assert from_json == from_binary == env


@pytest.mark.parametrize(
    "header_value",
    [b"application/json; charset=utf-8", b"Application/JSON", b"  application/json ;q=1"],
)
def test_json_content_type_parameters_and_case(header_value: bytes) -> None:
    env = a_command()
    value, _ = codec.encode_command(env, codec.JSON)
    assert codec.decode_command(value, [("Content-Type", header_value)]) == env


@pytest.mark.parametrize("headers", [None, [], [("other", b"x")], [("content-type", b"")]])
def test_protobuf_is_the_default(headers: list[tuple[str, bytes]] | None) -> None:
    env = a_command()
    assert codec.decode_command(env.SerializeToString(), headers) == env


def test_last_content_type_header_wins() -> None:
    env = a_command()
    value, _ = codec.encode_command(env, codec.JSON)
    headers = [("content-type", codec.PROTOBUF.encode()), ("content-type", codec.JSON.encode())]
    assert codec.decode_command(value, headers) == env


def test_new_command_defaults() -> None:
    env = a_command()
    assert len(env.command_id) == 32
    assert env.correlation_id == env.command_id
    assert not env.HasField("expected_revision")
    assert not env.reply_wanted
    assert env.timestamp.seconds > 0
    assert codec.type_name(env.payload) == "bank.v1.OpenAccount"


def test_pack_unpack_and_type_name() -> None:
    msg = bank_pb2.AccountCredited(account_id="a", amount=5, balance=10)
    packed = codec.pack(msg)
    assert packed.type_url == "type.googleapis.com/bank.v1.AccountCredited"
    assert codec.unpack(packed) == msg
    assert codec.unpack_as(packed, bank_pb2.AccountCredited) == msg
    assert codec.type_name(msg) == codec.type_name(packed) == "bank.v1.AccountCredited"
    with pytest.raises(DecodeError):
        codec.unpack_as(packed, bank_pb2.AccountDebited)


def test_unpack_unknown_type() -> None:
    with pytest.raises(DecodeError) as info:
        codec.unpack(any_pb2.Any(type_url="type.googleapis.com/nope.v1.Missing", value=b""))
    assert info.value.reason is DeadLetterReason.UNKNOWN_TYPE


def test_unpack_bad_payload_bytes() -> None:
    bad = any_pb2.Any(type_url="type.googleapis.com/bank.v1.OpenAccount", value=b"\xff\xff")
    with pytest.raises(DecodeError) as info:
        codec.unpack(bad)
    assert info.value.reason is DeadLetterReason.UNDECODABLE


def test_other_envelopes_round_trip() -> None:
    state = codec.pack(bank_pb2.Account(account_id="a", owner="Ada", balance=5, open=True))
    event = kes.EventEnvelope(
        entity_id="a",
        revision=2,
        payload=codec.pack(bank_pb2.AccountCredited(account_id="a", amount=5, balance=5)),
        command_id="c",
        event_type="bank.v1.AccountCredited",
        source_partition=3,
        source_offset=99,
    )
    accepted = kes.Reply(
        command_id="c",
        entity_id="a",
        accepted=kes.Accepted(revision=2, state=state, event_offsets=[10, 11], partition=3),
    )
    duplicate = kes.Reply(
        command_id="c",
        rejected=kes.Rejected(code=kes.DUPLICATE, message="seen", current_revision=2),
    )
    snapshot = kes.Snapshot(
        entity_id="a", revision=2, state=state, recent_command_ids=["c"], source_offset=99
    )
    letter = codec.new_dead_letter(
        key=b"a",
        value=b"\x00garbage",
        headers=[("content-type", b"text/plain"), ("empty", None)],
        topic="commands",
        partition=1,
        offset=42,
        reason=DeadLetterReason.WRONG_CONTENT_TYPE,
        error="unsupported",
    )
    assert codec.decode_event(codec.encode_event(event)) == event
    assert codec.decode_reply(codec.encode_reply(accepted)) == accepted
    assert codec.decode_reply(codec.encode_reply(duplicate)).WhichOneof("outcome") == "rejected"
    assert codec.decode_snapshot(codec.encode_snapshot(snapshot)) == snapshot
    decoded = codec.decode_dead_letter(codec.encode_dead_letter(letter))
    assert decoded == letter
    assert decoded.reason == "WRONG_CONTENT_TYPE"
    assert [(h.key, h.value) for h in decoded.headers] == [
        ("content-type", b"text/plain"),
        ("empty", b""),
    ]


# --- decode failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, b""])
def test_empty_value(value: bytes | None) -> None:
    assert reason_of(value) is DeadLetterReason.UNDECODABLE


def test_truncated_bytes() -> None:
    value = a_command().SerializeToString()
    for cut in (1, 5, len(value) // 2, len(value) - 1):
        assert reason_of(value[:cut]) is DeadLetterReason.UNDECODABLE


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xff\xff\xff", b"hello world", b"\x00\x01\x02", b"\x08\x96\x01", bytes(range(256))],
)
def test_random_garbage(garbage: bytes) -> None:
    assert reason_of(garbage) is DeadLetterReason.UNDECODABLE


@pytest.mark.parametrize("garbage", [b"not json", b"[1, 2]", b'{"commandId": 5', b"\xff\xfe"])
def test_garbage_json(garbage: bytes) -> None:
    assert reason_of(garbage, JS) is DeadLetterReason.UNDECODABLE


def test_json_with_unknown_field() -> None:
    assert reason_of(b'{"commandId": "c", "bogus": 1}', JS) is DeadLetterReason.UNDECODABLE


def test_missing_command_id_or_payload() -> None:
    env = a_command()
    env.command_id = ""
    assert reason_of(env.SerializeToString()) is DeadLetterReason.UNDECODABLE
    env = a_command()
    env.ClearField("payload")
    assert reason_of(env.SerializeToString()) is DeadLetterReason.UNDECODABLE


def test_unknown_type_url_binary_and_json() -> None:
    env = a_command()
    env.payload.type_url = "type.googleapis.com/nope.v1.Missing"
    assert reason_of(env.SerializeToString()) is DeadLetterReason.UNKNOWN_TYPE
    text = json_format.MessageToJson(a_command()).replace("bank.v1.OpenAccount", "nope.v1.Missing")
    assert reason_of(text.encode(), JS) is DeadLetterReason.UNKNOWN_TYPE


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/xml", b"avro/binary"])
def test_wrong_content_type(content_type: bytes) -> None:
    value = a_command().SerializeToString()
    assert reason_of(value, [("content-type", content_type)]) is DeadLetterReason.WRONG_CONTENT_TYPE


def test_non_utf8_content_type_header() -> None:
    value = a_command().SerializeToString()
    reason = reason_of(value, [("content-type", b"application/\xff\xfe")])
    assert reason is DeadLetterReason.WRONG_CONTENT_TYPE


def test_too_large() -> None:
    env = a_command()
    value = env.SerializeToString()
    assert codec.decode_command(value, None, max_bytes=len(value)) == env
    assert reason_of(value, None, max_bytes=len(value) - 1) is DeadLetterReason.TOO_LARGE


def test_binary_envelope_decoders_reject_bad_bytes() -> None:
    for decode in (
        codec.decode_event,
        codec.decode_reply,
        codec.decode_snapshot,
        codec.decode_dead_letter,
    ):
        for bad in (None, b"", b"\xff\xff\xff"):
            with pytest.raises(DecodeError) as info:
                decode(bad)
            assert info.value.reason is DeadLetterReason.UNDECODABLE


def test_encode_command_rejects_unknown_content_type() -> None:
    with pytest.raises(ValueError, match="content_type"):
        codec.encode_command(a_command(), "text/plain")


# --- event keys ---------------------------------------------------------------------------------


def test_event_key_is_unique_and_sorts_by_revision() -> None:
    revisions = [1, 2, 9, 10, 11, 100, 2**63, 2**64 - 1]
    keys = [codec.event_key("acc-1", r) for r in revisions]
    assert len(set(keys)) == len(keys)
    assert sorted(keys) == keys
    assert codec.event_key("acc-1", 7) == b"acc-1@00000000000000000007"


@pytest.mark.parametrize("entity_id", ["acc-1", "user@example.com", "ünïcødé", ""])
def test_parse_event_key_inverts_event_key(entity_id: str) -> None:
    assert codec.parse_event_key(codec.event_key(entity_id, 42)) == (entity_id, 42)


@pytest.mark.parametrize(
    "key", [b"", b"acc-1", b"acc-1@12", b"acc-1@0000000000000000000x", b"\xff@" + b"0" * 20]
)
def test_parse_event_key_rejects_bad_keys(key: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.parse_event_key(key)


def test_event_key_rejects_negative_revision() -> None:
    with pytest.raises(ValueError):
        codec.event_key("a", -1)
