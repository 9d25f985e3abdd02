"""Through a real worker: a command whose records would be too large never stalls the worker.

The issue's example: a command with a 300 KB command id would become an event of over 1 MB (the
id is copied into the envelope and its headers); the producer refuses it, the cycle aborts, and
after the rewind the same command aborts it again: every partition of the worker stalls. Now it
is refused at decode (ids have limits) and dead-lettered, and what follows flows.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Producer

from schemas.bank.v1 import bank_pb2
from schemas.codec import decode_dead_letter, encode_command, new_command
from streams.verify import read_topic
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster
from topology.partitioning import partition_for


def test_a_huge_command_id_is_a_dead_letter_and_the_worker_goes_on(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("examples.bank", ["account"], partitions=2)
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
