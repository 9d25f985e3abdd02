"""A LocalBroker restarts on its data dir and ports, as the chaos suite's broker restart needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer

from kes.streams.kafka.readback import read_topic
from kes.topology.localbroker import LocalBroker

pytestmark = pytest.mark.long  # minutes of scenario: make chaos runs it


def test_stop_then_start_keeps_the_data_and_the_ports(tmp_path: Path) -> None:
    broker = LocalBroker(data_dir=tmp_path / "broker")
    try:
        before = broker.start()
        producer = Producer({"bootstrap.servers": before})
        for i in range(10):
            producer.produce("kept", str(i).encode())
        assert producer.flush(30) == 0
        broker.stop()  # its clients leave the listening port in TIME_WAIT
        after = broker.start()
        assert after == before
        values = [v for _, _, v in read_topic("kept", 1, {"bootstrap.servers": after})]
        assert values == [str(i).encode() for i in range(10)]
    finally:
        broker.stop()
