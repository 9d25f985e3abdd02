"""Through a real worker: a command whose records would be too large never stalls the worker.

The issue's example: a command with a 300 KB command id would become an event of over 1 MB (the
id is copied into the envelope and its headers); the producer refuses it, the cycle aborts, and
after the rewind the same command aborts it again: every partition of the worker stalls. Now it
is refused at decode (ids have limits) and dead-lettered, and what follows flows.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Producer

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_dead_letter, encode_command, new_command
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode
from kes.streams.kafka.readback import read_topic
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster


def test_a_huge_command_id_is_a_dead_letter_and_the_worker_goes_on(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    cluster.worker("w1").wait_ready()
    huge = new_command(
        "big-1",
        bank_pb2.OpenAccount(owner="o" * 200_000),
        aggregate="account",
        command_id="i" * 300_000,
        reply_wanted=True,
    )
    value, headers = encode_command(huge)
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000})
    producer.produce(
        topics.commands, value, b"big-1", partition=partition_for("big-1", 2), headers=headers
    )
    assert producer.flush(30) == 0
    after = produce(
        bootstrap, topics, [(f"fine-{i}", bank_pb2.OpenAccount(owner="f")) for i in range(20)]
    )
    replies = collect_replies(bootstrap, topics, after, timeout=60)
    assert {replies[i][0].WhichOneof("outcome") for i in after} == {"accepted"}
    letters = [
        decode_dead_letter(v)
        for _, _, v in read_topic(topics.dlq, topics.partitions, {"bootstrap.servers": bootstrap})
    ]
    assert [(d.reason, "command_id is 300000 bytes" in d.error) for d in letters] == [
        ("TOO_LARGE", True)
    ]


def test_records_at_and_just_past_every_limit(app_cluster: Callable[..., AppCluster]) -> None:
    """Each limit at its value (answered) and one past it (exactly one dead letter with its
    reason, no reply); an output over the record limit is dead-lettered and rejected; the worker
    never exits and every partition flows afterwards. The worker runs with a 200,000-byte record
    limit so that outputs can outgrow it from a command under the 199,000-byte command limit."""
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=3)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    worker = cluster.worker("w1", KES_MAX_COMMAND_BYTES="199000", KES_MAX_RECORD_BYTES="200000")
    worker.wait_ready()
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 1_000_000})
    valid: list[str] = []
    bad: list[str] = []  # the expected dead-letter reasons, one per bad record

    def send(entity: str, owner: str = "o", *, ok: bool, reason: str = "", **kw: object) -> None:
        env = new_command(
            entity, bank_pb2.OpenAccount(owner=owner), aggregate="account", reply_wanted=True,
            **kw,  # type: ignore[arg-type]
        )  # fmt: skip
        value, headers = encode_command(env)
        partition = partition_for(entity, topics.partitions)
        producer.produce(topics.commands, value, entity.encode(), partition, headers=headers)
        (valid if ok else bad).append(env.command_id if ok else reason)

    for i, (name, limit) in enumerate([("command_id", 256), ("correlation_id", 256)]):
        send(f"id-{i}-ok", ok=True, **{name: "c" * limit})
        send(f"id-{i}-over", ok=False, reason="TOO_LARGE", **{name: "c" * (limit + 1)})
    send("e" * 1024, ok=True)
    send("e" * 1025, ok=False, reason="TOO_LARGE")
    send("nul\x00id", ok=False, reason="UNDECODABLE")
    send("meta-ok", ok=True, metadata={"k": "v" * (16 * 1024 - 1)})
    send("meta-over", ok=False, reason="TOO_LARGE", metadata={"k": "v" * (16 * 1024)})
    send("size-ok", "o" * 190_000, ok=True)
    send("size-over", "o" * 199_500, ok=False, reason="TOO_LARGE")
    # Under the command limit, but its event (ids and entity id copied into headers) is not.
    long_id = "x" * 1024
    send(long_id, "o" * 197_000, ok=True, command_id="d" * 256, correlation_id="r" * 256)
    assert producer.flush(30) == 0
    last = produce(
        bootstrap, topics, [(f"after-{i}", bank_pb2.OpenAccount(owner="a")) for i in range(12)]
    )

    replies = collect_replies(bootstrap, topics, [*valid, *last], timeout=90)
    outcomes = {c: replies[c][0].WhichOneof("outcome") for c in [*valid, *last]}
    (output_too_large,) = [c for c in valid if c == "d" * 256]
    assert replies[output_too_large][0].rejected.code == RejectionCode.POISON
    assert all(outcomes[c] == "accepted" for c in [*valid, *last] if c != output_too_large)
    letters = [
        decode_dead_letter(v)
        for _, _, v in read_topic(topics.dlq, topics.partitions, {"bootstrap.servers": bootstrap})
    ]
    assert sorted(d.reason for d in letters) == sorted([*bad, "TOO_LARGE"]), [
        (d.reason, d.error[:80]) for d in letters
    ]
    assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
