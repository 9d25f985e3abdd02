"""Commands from producers that compress (lz4, zstd, snappy, gzip) are applied like any other."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Producer

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_command, new_command
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import collect_replies
from tests.fixtures.workers import AppCluster


def test_compressed_command_batches_are_applied(app_cluster: Callable[..., AppCluster]) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    cluster.worker("w1").wait_ready()
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    ids = []
    for codec in ("lz4", "zstd", "snappy", "gzip"):
        producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec})
        for i in range(20):
            entity = f"{codec}-{i}"
            env = new_command(
                entity, bank_pb2.OpenAccount(owner=codec), aggregate="account", reply_wanted=True
            )
            value, headers = encode_command(env)
            partition = partition_for(entity, topics.partitions)
            producer.produce(topics.commands, value, entity.encode(), partition, headers=headers)
            ids.append(env.command_id)
        assert producer.flush(30) == 0
    replies = collect_replies(bootstrap, topics, ids, timeout=90)
    assert all(replies[c][0].WhichOneof("outcome") == "accepted" for c in ids)
