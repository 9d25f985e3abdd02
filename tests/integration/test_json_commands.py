"""Any Kafka client can send commands: protobuf canonical JSON with a content-type header."""

from __future__ import annotations

import json
from collections.abc import Callable

from confluent_kafka import Producer
from google.protobuf import json_format

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_command, new_command
from kes.streams.kafka.readback import read_records
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import collect_replies
from tests.fixtures.workers import AppCluster


def test_json_from_a_plain_producer_decodes_like_binary_and_is_applied(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    cluster.worker("w1").wait_ready()
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    env = new_command(
        "acc-json", bank_pb2.OpenAccount(owner="jo", opening_balance=7),
        aggregate="account", reply_wanted=True,
    )  # fmt: skip
    as_json = json.dumps(json_format.MessageToDict(env)).encode()  # what kcat or Go would send
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    producer.produce(
        topics.commands, as_json, b"acc-json", headers=[("content-type", b"application/json")]
    )
    producer.produce(topics.commands, env.SerializeToString(), b"acc-json")  # binary, same id
    assert producer.flush(30) == 0

    records = list(
        read_records(topics.commands, topics.partitions, {"bootstrap.servers": bootstrap})
    )
    assert {r.partition for r in records} == {partition_for("acc-json", topics.partitions)}
    decoded = [decode_command(r.value, r.headers) for r in records]
    assert decoded[0] == decoded[1] == env

    (first, second) = collect_replies(bootstrap, topics, [env.command_id])[env.command_id]
    assert first.accepted.revision == 1  # the JSON one, applied
    # The binary copy: same id, so a retry, answered with the JSON one's outcome (was a
    # DUPLICATE rejection before the outcome store).
    assert second.replay and second.accepted.revision == 1
