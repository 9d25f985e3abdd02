"""Fuzzed commands interleaved with valid ones, through a real worker and broker.

Valid ones all have exactly one outcome (their reply) and the accepted ones are applied once;
every fuzzed record ends in the dead-letter topic, at its own partition and offset, with a reason
code; nothing else is written (no event, reply or dead letter beyond those). 2,000 fuzzed records
in the default run; `KES_FUZZ_COMMANDS=10000` (as `make chaos` sets) for the full run.

Ids, entity ids and metadata past their limits and NUL in ids are among the fuzzed kinds;
records at and just past every limit (and outputs past the record limit) are in
tests/integration/test_record_limits.py.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Producer
from google.protobuf import any_pb2

from kes.examples.bank import account
from kes.schemas.codec import JSON, decode_command, decode_dead_letter, encode_command, new_command
from kes.schemas.errors import DeadLetterReason, DecodeError
from kes.streams.kafka.readback import read_records
from kes.streams.operations.outcomes import read_outcomes
from kes.streams.operations.verify import verify
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import bank_commands, collect_replies
from tests.fixtures.workers import AppCluster

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def _valid(entity: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    from kes.schemas.bank.v1 import bank_pb2

    env = new_command(entity, bank_pb2.CreditAccount(amount=1), aggregate="account")
    return encode_command(env)


def _fuzzed(rng: random.Random) -> Record:
    """One record the worker must dead-letter: garbage, truncated, unknown type, bad JSON, ..."""
    while True:
        entity = f"acc-{rng.randrange(100):04d}"
        value, headers = _valid(entity)
        kind = rng.randrange(11)
        key: bytes | None = entity.encode()
        if kind == 0:  # random bytes (0xff: an invalid protobuf tag, so never a valid envelope)
            value = b"\xff" + rng.randbytes(rng.randrange(200))
        elif kind == 1:  # truncated protobuf
            value = value[: rng.randrange(1, len(value))]
        elif kind == 2:  # a valid envelope whose payload type nobody registered
            env = decode_command(value, headers)
            env.payload.CopyFrom(any_pb2.Any(type_url=f"type.googleapis.com/x.v1.T{kind}"))
            value = env.SerializeToString()
        elif kind == 3:  # JSON that does not match the envelope
            body = rng.choice([{"entityId": 5}, {"payload": "x"}, [1, 2], {"commandId": {}}])
            value, headers = json.dumps(body).encode(), [("content-type", JSON.encode())]
        elif kind == 4:  # no key, no entity id
            env = decode_command(value, headers)
            env.entity_id = ""
            value, key = env.SerializeToString(), rng.choice([None, b""])
        elif kind == 5:  # a content-type header that is not UTF-8, or not a type kes reads
            headers = [("content-type", rng.choice([b"\xff\xfe", b"text/xml", b"\xc3("]))]
        elif kind == 6:  # a key that is not UTF-8 and an envelope without an entity id
            env = decode_command(value, headers)
            env.entity_id = ""
            value, key = env.SerializeToString(), b"\xff" + rng.randbytes(4)
        else:  # over a size limit, or a NUL where an id cannot have one
            env = decode_command(value, headers)
            if kind == 7:
                env.command_id = "c" * rng.randrange(257, 2_000)
            elif kind == 8:
                env.metadata["k"] = "v" * rng.randrange(16 * 1024, 20_000)
            elif kind == 9:
                env.entity_id = entity[:3] + "\x00" + entity[3:]
            else:
                env.entity_id = "e" * rng.randrange(1_025, 3_000)
                key = env.entity_id.encode()
            value = env.SerializeToString()
        try:
            env = decode_command(value, headers)
            entity_id = env.entity_id or (key or b"").decode()
        except (DecodeError, UnicodeDecodeError):
            return key, value, headers
        if not entity_id:
            return key, value, headers


def test_fuzzed_commands_all_dead_letter_and_valid_ones_apply_once(
    app_cluster: Callable[..., AppCluster],
) -> None:
    fuzzed = int(os.environ.get("KES_FUZZ_COMMANDS", "2000"))
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    cluster.worker("w1").wait_ready()
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    rng = random.Random(13)
    valid = bank_commands(fuzzed, accounts=100, seed=13)
    plan = ["valid"] * len(valid) + ["bad"] * fuzzed
    rng.shuffle(plan)
    plan = ["valid"] * 100 + plan  # open every account first, so credits and debits apply
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    bad_at: list[tuple[int, int]] = []
    ids: list[str] = []
    commands = iter(bank_commands(fuzzed + 100, accounts=100, seed=13))
    for kind in plan:
        if kind == "valid":
            entity, msg = next(commands)
            env = new_command(entity, msg, aggregate="account", reply_wanted=True)
            value, headers = encode_command(env)
            producer.produce(
                topics.commands, value, entity.encode(),
                partition=partition_for(entity, topics.partitions), headers=headers,
            )  # fmt: skip
            ids.append(env.command_id)
        else:
            key, value, headers = _fuzzed(rng)

            def delivered(err: object, msg: object) -> None:
                assert err is None, err
                bad_at.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

            producer.produce(
                topics.commands, value, key, partition=rng.randrange(topics.partitions),
                headers=headers, on_delivery=delivered,
            )  # fmt: skip
        producer.poll(0)
    assert producer.flush(60) == 0

    replies = collect_replies(bootstrap, topics, ids, timeout=180)
    config = {"bootstrap.servers": bootstrap}
    assert sorted(replies) == sorted(ids), "a reply for something that was not a valid command"
    assert all(len(r) == 1 for r in replies.values())
    accepted = sum(r[0].WhichOneof("outcome") == "accepted" for r in replies.values())
    checked = verify(account, topics, config)
    assert checked.ok, checked.summary()
    assert checked.events == accepted
    letters = [decode_dead_letter(r.value) for r in read_records(topics.dlq, 4, config)]
    assert sorted((d.partition, d.offset) for d in letters) == sorted(bad_at)
    reasons = Counter(d.reason for d in letters)
    assert set(reasons) <= {r.value for r in DeadLetterReason} and len(reasons) >= 4, reasons
    outcomes = read_outcomes(topics, "account", config)
    assert outcomes.ok and outcomes.pending == 0, outcomes.summary()
    assert outcomes.dead_lettered == fuzzed
