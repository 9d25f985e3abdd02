"""The worker's offsets reader runs in a child process: a crash there costs one reading."""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kes.schemas.errors import AdminError
from kes.streams.operations.groupoffsets import IsolatedOffsetsReader, OffsetsReader
from kes.streams.operations.lag import LagTarget


def test_the_isolated_reader_reads_what_the_reader_reads_and_survives_its_childs_death(
    kafka_bootstrap: str,
) -> None:
    topic = f"iso-{uuid.uuid4().hex[:8]}"
    config = {"bootstrap.servers": kafka_bootstrap}
    admin = AdminClient(config)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer(config)
    for i in range(10):
        producer.produce(topic, b"v", partition=i % 2)
    assert producer.flush(30) == 0
    group = f"{topic}-g"
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    consumer.close()
    target = LagTarget(group, topic)

    isolated = IsolatedOffsetsReader(config)
    try:
        (direct,) = OffsetsReader(config).read([target])
        (apart,) = isolated.read([target])
        assert [(p.committed, p.log_end) for p in apart.partitions] == [(3, 5), (None, 5)]
        assert apart.partitions == direct.partitions
        first = isolated._process.pid
        os.kill(first, signal.SIGABRT)  # as librdkafka's assertion would
        isolated._process.join(10)
        (again,) = isolated.read([target])  # a new child answers
        assert again.partitions == direct.partitions and isolated._process.pid != first
        isolated._conn.send(("no_such_method", ()))  # a failing call is an AdminError, not an end
        isolated._conn.recv()
        with pytest.raises(AdminError, match="owners"):
            isolated.owners(None)  # type: ignore[arg-type]
        assert isolated._process.pid != first and isolated._process.is_alive()
    finally:
        isolated.close()
