"""Decoder robustness: whatever bytes and headers arrive, only DecodeError comes out."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kes.schemas import codec
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.errors import DecodeError
from kes.schemas.kes.v1 import envelopes_pb2 as kes

header_values = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.sampled_from([b"application/json", b"application/x-protobuf", b"APPLICATION/JSON; x=y"]),
)
header_keys = st.one_of(st.text(max_size=20), st.just("content-type"), st.just("Content-Type"))
headers = st.one_of(st.none(), st.lists(st.tuples(header_keys, header_values), max_size=5))

no_nul = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
ids = st.text(no_nul, min_size=1, max_size=40)
"""Valid ids: a NUL in an entity or command id is a decode error (NUL starts outcome keys)."""
commands = st.one_of(
    st.builds(
        bank_pb2.OpenAccount,
        account_id=ids,
        owner=st.text(),
        opening_balance=st.integers(-(2**63), 2**63 - 1),
    ),
    st.builds(bank_pb2.CreditAccount, account_id=ids, amount=st.integers(-(2**63), 2**63 - 1)),
    st.builds(bank_pb2.DebitAccount, account_id=ids, amount=st.integers(-(2**63), 2**63 - 1)),
)


@st.composite
def envelopes(draw: st.DrawFn) -> kes.CommandEnvelope:
    return codec.new_command(
        draw(st.text(no_nul, max_size=40)),
        draw(commands),
        aggregate=draw(st.text(max_size=20)),
        command_id=draw(ids),
        expected_revision=draw(st.none() | st.integers(0, 2**64 - 1)),
        reply_wanted=draw(st.booleans()),
        correlation_id=draw(st.none() | st.text(max_size=20)),
        metadata=draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4)),
    )


def decode_or_decode_error(value: bytes | None, hdrs: object, max_bytes: int | None = None) -> None:
    with contextlib.suppress(DecodeError):
        codec.decode_command(value, hdrs, max_bytes=max_bytes)  # type: ignore[arg-type]


@settings(max_examples=500)
@given(
    value=st.one_of(st.none(), st.binary(max_size=512)),
    hdrs=headers,
    max_bytes=st.none() | st.integers(0, 600),
)
def test_arbitrary_bytes_and_headers_raise_only_decode_error(
    value: bytes | None, hdrs: object, max_bytes: int | None
) -> None:
    decode_or_decode_error(value, hdrs, max_bytes)


@settings(max_examples=300)
@given(text=st.text(max_size=300))
def test_arbitrary_json_text_raises_only_decode_error(text: str) -> None:
    decode_or_decode_error(
        text.encode("utf-8", "surrogatepass"), [("content-type", b"application/json")]
    )


@settings(max_examples=200)
@given(
    env=envelopes(),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
)
def test_corrupted_valid_envelopes_raise_only_decode_error(
    env: kes.CommandEnvelope, flips: list[tuple[int, int]]
) -> None:
    for content_type in (codec.PROTOBUF, codec.JSON):
        value, hdrs = codec.encode_command(env, content_type)
        data = bytearray(value)
        for at, byte in flips:
            data[at % len(data)] = byte
        decode_or_decode_error(bytes(data), hdrs)


@settings(max_examples=200)
@given(env=envelopes(), content_type=st.sampled_from([codec.PROTOBUF, codec.JSON]))
def test_valid_envelopes_round_trip(env: kes.CommandEnvelope, content_type: str) -> None:
    value, hdrs = codec.encode_command(env, content_type)
    decoded = codec.decode_command(value, hdrs)
    assert decoded == env
    assert codec.unpack(decoded.payload) == codec.unpack(env.payload)


@given(before=ids, after=ids, field=st.sampled_from(["entity_id", "command_id"]))
def test_a_nul_in_an_entity_or_command_id_is_a_decode_error(
    before: str, after: str, field: str
) -> None:
    env = codec.new_command("acc", bank_pb2.OpenAccount(owner="a"), aggregate="account")
    setattr(env, field, before + "\x00" + after)
    value, hdrs = codec.encode_command(env)
    with pytest.raises(DecodeError, match="NUL"):
        codec.decode_command(value, hdrs)


@given(
    entity_id=st.text(max_size=40),
    revisions=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20),
)
def test_event_keys_sort_by_revision_and_parse_back(entity_id: str, revisions: list[int]) -> None:
    keys = [codec.event_key(entity_id, r) for r in sorted(revisions)]
    assert keys == sorted(keys)
    assert [codec.parse_event_key(k) for k in keys] == [(entity_id, r) for r in sorted(revisions)]


@given(value=st.one_of(st.none(), st.binary(max_size=256)))
def test_binary_envelope_decoders_raise_only_decode_error(value: bytes | None) -> None:
    for decode in (
        codec.decode_event,
        codec.decode_reply,
        codec.decode_snapshot,
        codec.decode_dead_letter,
    ):
        with contextlib.suppress(DecodeError):
            decode(value)
