"""Real producers put each key where `partition_for` says, unless librdkafka keeps its default."""

from __future__ import annotations

import zlib
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kes.topology.partitioning import MURMUR2_PARTITIONER, partition_for

PARTITIONS = 12
KEYS = [f"account-{i}" for i in range(60)] + ["21", "foobar", "kontø-ü", "a-little-bit-long-string"]


def _topic(bootstrap: str, name: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(30)
    return name


def _produce_with_librdkafka(bootstrap: str, topic: str, **config: str) -> dict[str, int]:
    landed: dict[str, int] = {}

    def delivered(err: object, msg: Message) -> None:
        assert err is None, err
        landed[msg.key().decode()] = msg.partition()

    producer = Producer({"bootstrap.servers": bootstrap, **config})
    for key in KEYS:
        producer.produce(topic, b"v", key.encode(), on_delivery=delivered)
    assert producer.flush(30) == 0
    return landed


def test_confluent_kafka_murmur2_random_lands_on_partition_for(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = _topic(kafka_bootstrap, unique_name("part-ck"))
    landed = _produce_with_librdkafka(kafka_bootstrap, topic, partitioner=MURMUR2_PARTITIONER)
    assert landed == {key: partition_for(key, PARTITIONS) for key in KEYS}


async def test_aiokafka_default_partitioner_lands_on_partition_for(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = _topic(kafka_bootstrap, unique_name("part-aio"))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        landed = {}
        for key in KEYS:
            meta = await producer.send_and_wait(topic, b"v", key=key.encode())
            landed[key] = meta.partition
    finally:
        await producer.stop()
    assert landed == {key: partition_for(key, PARTITIONS) for key in KEYS}


def test_librdkafka_default_consistent_random_would_misroute(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """Why kes always sets `partitioner: murmur2_random`: the default hashes with CRC32."""
    topic = _topic(kafka_bootstrap, unique_name("part-crc"))
    landed = _produce_with_librdkafka(kafka_bootstrap, topic)
    assert landed == {key: zlib.crc32(key.encode()) % PARTITIONS for key in KEYS}
    misrouted = [key for key in KEYS if landed[key] != partition_for(key, PARTITIONS)]
    assert misrouted, "consistent_random should disagree with the Java client for some key"
