"""Hostile input through the decode-and-route path (kes.streams.cycle.batch), without a broker.

Whatever records arrive, in any mix with valid commands: no exception escapes the batch step;
each bad record ends as a dead letter with a reason code (and a rejection reply when one was
wanted and the envelope could be read); every partition's next command offset moves past every
record (the partition keeps flowing); and kes.streams.operations.outcomes finds exactly one outcome
per record.
"""

from __future__ import annotations

import json

from google.protobuf import any_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import JSON, decode_dead_letter, encode_command, new_command
from kes.schemas.errors import DeadLetterReason
from kes.schemas.kes.v1.envelopes_pb2 import CommandEnvelope
from kes.streams.operations.outcomes import check_outcomes
from kes.topology.layout import AggregateTopics
from tests.apps.faulty import account
from tests.fixtures.simulation import Simulation

TOPICS = AggregateTopics("account", partitions=3)
MAX_BYTES = 400

Record = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]

entities = st.sampled_from(["acc-1", "acc-2", "acc-3", "é", "boom-ü"])
commands = st.one_of(
    st.builds(bank_pb2.OpenAccount, owner=st.sampled_from(["ann", "boom", ""])),
    st.builds(bank_pb2.OpenAccount, owner=st.text(min_size=MAX_BYTES, max_size=MAX_BYTES + 50)),
    st.just(bank_pb2.AccountOpened(owner="an event, not a command")),
)
partitions = st.integers(0, TOPICS.partitions - 1)
header_lists = st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=16)), max_size=3)


def _envelope(draw: st.DrawFn) -> CommandEnvelope:
    env = new_command(
        draw(entities),
        draw(commands),
        aggregate=draw(st.sampled_from(["account", "account", "", "other"])),
        command_id=draw(st.sampled_from(["c1", "c2"]) | st.uuids().map(str)),
        reply_wanted=draw(st.booleans()),
        expected_revision=draw(st.none() | st.integers(0, 3)),
    )
    env.ClearField("timestamp")  # the same draws must give the same bytes
    return env


@st.composite
def valid(draw: st.DrawFn) -> Record:
    env = _envelope(draw)
    value, headers = encode_command(env, draw(st.sampled_from(["application/x-protobuf", JSON])))
    key = draw(st.sampled_from([env.entity_id.encode(), b"", None]))
    return draw(partitions), key, value, headers


@st.composite
def random_bytes(draw: st.DrawFn) -> Record:
    key = draw(st.none() | st.binary(max_size=12))
    return draw(partitions), key, draw(st.none() | st.binary(max_size=64)), draw(header_lists)


@st.composite
def truncated(draw: st.DrawFn) -> Record:
    p, key, value, headers = draw(valid())
    assert value is not None
    return p, key, value[: draw(st.integers(0, max(0, len(value) - 1)))], headers


@st.composite
def unknown_type(draw: st.DrawFn) -> Record:
    env = _envelope(draw)
    name = draw(st.sampled_from(["nope.v1.Missing", "", "bank.v1.", "type.googleapis.com/"]))
    env.payload.CopyFrom(any_pb2.Any(type_url=f"type.googleapis.com/{name}", value=b"\x08\x01"))
    return draw(partitions), env.entity_id.encode(), env.SerializeToString(), []


@st.composite
def mismatched_json(draw: st.DrawFn) -> Record:
    body = draw(
        st.one_of(
            st.just(
                {
                    "entityId": "acc-1",
                    "payload": {"@type": "type.googleapis.com/bank.v1.OpenAccount", "owner": 5},
                }
            ),
            st.just({"entityId": "acc-1", "replyWanted": "yes"}),
            st.just([1, 2, 3]),
            st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4),
        )
    )
    value = json.dumps(body).encode()
    return draw(partitions), b"acc-1", value, [("content-type", JSON.encode())]


@st.composite
def bad_headers(draw: st.DrawFn) -> Record:
    p, key, value, _ = draw(valid())
    content_type = draw(
        st.sampled_from([b"\xff\xfe", b"application/json\xc3", b"text/xml", "é".encode("latin-1")])
    )
    return p, key, value, [("content-type", content_type)]


records = st.lists(
    st.one_of(
        valid(), random_bytes(), truncated(), unknown_type(), mismatched_json(), bad_headers()
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=records, batch=st.integers(1, 10))
def test_any_mix_of_records_flows_and_each_has_exactly_one_outcome(
    records: list[Record], batch: int
) -> None:
    sim = Simulation(account, TOPICS, max_command_bytes=MAX_BYTES)
    for partition, key, value, headers in records:
        sim.append(TOPICS.commands, partition, key, value, headers)
    sim.run(batch)  # no exception escapes the step

    for partition, log in sim.logs[TOPICS.commands].items():
        assert sim.next_offsets.get(partition, 0) == len(log), "the partition stopped flowing"
    reasons = {r.value for r in DeadLetterReason}
    for record in sim.records(TOPICS.dlq):
        letter = decode_dead_letter(record.value)
        assert letter.reason in reasons and letter.error
        assert dict(record.headers)["reason"] == letter.reason.encode()
    found = check_outcomes(
        TOPICS,
        "account",
        sim.next_offsets,
        sim.records(TOPICS.commands),
        sim.records(TOPICS.events),
        sim.records(TOPICS.replies),
        sim.records(TOPICS.dlq),
        max_command_bytes=MAX_BYTES,
    )
    assert found.ok, found.summary()
    assert found.pending == 0


def test_each_kind_of_hostile_record_gets_its_reason_code() -> None:
    sim = Simulation(account, AggregateTopics("account", partitions=1), max_command_bytes=MAX_BYTES)
    env = new_command("acc-1", bank_pb2.OpenAccount(owner="ann"), aggregate="account")
    good, headers = encode_command(env)
    big, _ = encode_command(
        new_command("acc-1", bank_pb2.OpenAccount(owner="x" * MAX_BYTES), aggregate="account")
    )
    stranger = CommandEnvelope.FromString(good)
    stranger.payload.type_url = "type.googleapis.com/nope.v1.Missing"
    nobody = new_command("", bank_pb2.OpenAccount(owner="ann"), aggregate="account")
    cases = [
        (b"acc-1", b"\x0a\xff\xff garbage", [], "UNDECODABLE"),
        (b"acc-1", good[: len(good) // 2], [], "UNDECODABLE"),
        (b"acc-1", stranger.SerializeToString(), [], "UNKNOWN_TYPE"),
        (b"acc-1", b'{"entityId": 5}', [("content-type", JSON.encode())], "UNDECODABLE"),
        (b"acc-1", big, [], "TOO_LARGE"),
        (None, nobody.SerializeToString(), [], "MISSING_KEY"),
        (b"\xff\xfe", nobody.SerializeToString(), [], "UNDECODABLE"),
        (b"acc-1", good, [("content-type", b"\xff\xfe")], "WRONG_CONTENT_TYPE"),
        (b"acc-1", good, headers, None),  # and a valid one still applies after them all
    ]
    for key, value, hdrs, _ in cases:
        sim.append("account.commands", 0, key, value, hdrs)
    sim.run(batch=4)
    letters = [decode_dead_letter(r.value) for r in sim.records("account.dlq")]
    assert [(x.offset, x.reason) for x in letters] == [
        (i, reason) for i, (_, _, _, reason) in enumerate(cases) if reason
    ]
    assert len(sim.records("account.events")) == 1
    assert sim.next_offsets[0] == len(cases)
