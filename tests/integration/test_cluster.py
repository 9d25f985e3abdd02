"""A replicated three-broker cluster: kes makes replicated topics; losing one broker loses nothing.

Each test that stops a broker starts it again before it ends (the cluster is the session's).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from kes.streams.cli import main
from kes.streams.config.settings import Settings
from kes.streams.kafka.readback import read_topic
from kes.topology.localbroker import LocalBroker
from kes.topology.localcluster import LocalCluster
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.kafka import KafkaCluster
from tests.fixtures.workers import Supervisor, replicated_app
from tests.integration.test_engine import assert_invariants


def _admin(cluster: KafkaCluster) -> AdminClient:
    return AdminClient({"bootstrap.servers": cluster.bootstrap})


def _create(cluster: KafkaCluster, topic: str) -> None:
    """A one-partition topic with the brokers' defaults (replication factor 3, min.insync.replicas
    2), once every broker has it in sync."""
    admin = _admin(cluster)
    admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(30)
    _eventually(lambda: _isr(cluster, topic) == {1, 2, 3})


def _isr(cluster: KafkaCluster, topic: str) -> set[int]:
    """Partition 0's in-sync replicas (none while the broker asked does not know the topic)."""
    meta = _admin(cluster).list_topics(topic, timeout=10).topics[topic]
    return set(meta.partitions[0].isrs) if 0 in meta.partitions else set()


def _replicated(cluster: KafkaCluster, topic: str, replicas: int, insync: str) -> bool:
    """Every partition has `replicas` replicas and the topic that `min.insync.replicas`, as far
    as the brokers asked know (one that has not heard of the topic yet knows nothing)."""
    admin = _admin(cluster)
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    if {len(p.replicas) for p in meta.partitions.values()} != {replicas}:
        return False
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource])[resource].result(30)
    except KafkaException:
        return False
    return bool(configs["min.insync.replicas"].value == insync)


def _eventually(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the cluster never got there"
        time.sleep(0.2)


@contextmanager
def _killed(local: LocalCluster, node: LocalBroker) -> Iterator[LocalBroker]:
    """SIGKILL `node`; afterwards start it again on its data and wait until it is back."""
    node.kill()
    try:
        yield node
    finally:
        node.start()
        local.wait_for_brokers(local.size)


def test_the_cluster_has_three_brokers(kafka_cluster: KafkaCluster) -> None:
    brokers = _admin(kafka_cluster).list_topics(timeout=10).brokers
    assert len(brokers) == 3


def test_topics_apply_creates_topics_with_three_replicas_and_two_in_sync(
    kafka_cluster: KafkaCluster,
    unique_name: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = unique_name("t") + "-"
    argv = ["--bootstrap", kafka_cluster.bootstrap, "--topic-prefix", prefix, "--partitions", "2"]
    assert main(["topics", "apply", "kes.examples.bank", *argv]) == 0
    assert "created" in capsys.readouterr().out
    topics = Settings(topic_prefix=prefix, partitions=2).topics("account")
    for name in [spec.name for spec in topics.specs()]:
        _eventually(partial(_replicated, kafka_cluster, name, replicas=3, insync="2"))


def test_with_one_broker_of_three_killed_a_transactional_round_trip_works_and_it_rejoins(
    kafka_cluster: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    """Consume, produce and commit the offsets in one transaction while the input's leader is
    down; restarted on its data, the broker catches up on what was written meanwhile."""
    local = kafka_cluster.nodes()
    source, sink, group = unique_name("in"), unique_name("out"), unique_name("g")
    _create(kafka_cluster, source)
    _create(kafka_cluster, sink)
    config = {"bootstrap.servers": kafka_cluster.bootstrap}
    producer = Producer({**config, "enable.idempotence": True})
    for i in range(50):
        producer.produce(source, str(i).encode(), str(i).encode())
    assert producer.flush(30) == 0

    with _killed(local, local.leader_of(source, 0)) as down:
        consumer = Consumer(
            {
                **config,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        consumer.subscribe([source])
        records = []
        deadline = time.monotonic() + 60
        while len(records) < 50 and time.monotonic() < deadline:
            msg = consumer.poll(1)
            if msg is not None and msg.error() is None:
                records.append(msg)
        assert len(records) == 50
        txn = Producer({**config, "transactional.id": unique_name("tx")})
        txn.init_transactions(60)
        txn.begin_transaction()
        for msg in records:
            txn.produce(sink, msg.value(), msg.key())
        txn.send_offsets_to_transaction(
            [TopicPartition(source, 0, records[-1].offset() + 1)],
            consumer.consumer_group_metadata(),
            60,
        )
        txn.commit_transaction(60)
        committed = consumer.committed([TopicPartition(source, 0)], timeout=30)
        consumer.close()
        assert committed[0].offset == 50
        values = [v for _, _, v in read_topic(sink, 1, config)]
        assert values == [str(i).encode() for i in range(50)]
        _eventually(lambda: down.node_id not in _isr(kafka_cluster, sink))  # two wrote it

    # Restarted (by _killed), it is a broker again and catches up: back in the ISR.
    _eventually(lambda: local.brokers() == {1, 2, 3})
    _eventually(lambda: _isr(kafka_cluster, sink) == {1, 2, 3})


def test_a_worker_answers_every_command_once_while_the_commands_leader_is_killed(
    kafka_cluster: KafkaCluster, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    local = kafka_cluster.nodes()
    app = replicated_app(kafka_cluster.bootstrap, unique_name, tmp_path, partitions=2)
    settings = app.settings
    try:
        # The harness's 6 s session is shorter than a coordinator failover (the controller
        # fences a dead broker after 9 s): the consumer may rejoin under its static
        # group.instance.id during the failover and be fenced for good (librdkafka #3437); the
        # worker then exits 70 (tests/integration/test_fenced.py) and is restarted below.
        worker = app.worker("w1")
        worker.wait_ready(90)
        topics = settings.topics("account")
        commands = bank_commands(2000, accounts=50, seed=3)
        with Supervisor() as supervisor:  # restarts a worker that exits, as systemd would
            supervisor.worker(worker)
            ids = produce(settings.bootstrap_servers, topics, commands[:1000])
            with _killed(local, local.leader_of(topics.commands, 0)):
                ids += produce(settings.bootstrap_servers, topics, commands[1000:])
                replies = collect_replies(settings.bootstrap_servers, topics, ids, timeout=120)
        assert_invariants(app, replies, ids)
        exits = [e.code for e in supervisor.exits]
        if exits:
            warnings.warn(
                f"the worker exited with {exits} during the failover and was restarted",
                stacklevel=1,
            )
    finally:
        app.close()
