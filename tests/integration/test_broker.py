"""The foundation: a real broker answers both Python clients, and `kes dev broker` behaves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic


def _create(bootstrap: str, topic: str, partitions: int = 1, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
    admin.create_topics([new])[topic].result(30)


def test_confluent_kafka_produces_and_consumes(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("ck")
    _create(kafka_bootstrap, topic, partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(50)}
    for key, value in sent.items():
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique_name("g"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got[msg.key()] = msg.value()
    consumer.close()
    assert got == sent


async def test_aiokafka_produces_and_consumes(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("aio")
    _create(kafka_bootstrap, topic, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=f"k{i}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_name("g"),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got = {}
    try:
        deadline = time.monotonic() + 30
        while len(got) < 20 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for rec in records:
                    got[rec.key] = rec.value
    finally:
        await consumer.stop()
    assert got == {f"k{i}".encode(): f"v{i}".encode() for i in range(20)}


def test_compacted_topic_config_reads_back(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("compact")
    _create(
        kafka_bootstrap, topic, partitions=2, **{"cleanup.policy": "compact", "retention.ms": "-1"}
    )
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["retention.ms"].value == "-1"
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 2


def _kes(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kes.streams.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_dev_broker_starts_prints_address_and_cleans_up_on_ctrl_c() -> None:
    proc = _kes("dev", "broker")
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("  log: "):
            break
    bootstrap = next(ln.split()[-1] for ln in lines if ln.startswith("broker ready at"))
    workdir = Path(next(ln for ln in lines if ln.startswith("log: ")).split()[-1]).parent
    assert workdir.exists()
    # It is a real broker: a metadata request answers.
    AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert _processes_mentioning(str(workdir)), "the broker JVM should be running"

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "broker stopped" in out
    assert not workdir.exists(), "the temporary data directory must be removed"
    assert not _processes_mentioning(str(workdir)), "no broker process may be left behind"


def test_dev_broker_port_taken_is_one_clear_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = _kes("dev", "broker", "--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip() == f"kes: error: port {port} on 127.0.0.1 is already in use"


def test_dev_broker_without_java_is_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = _kes("dev", "broker", env=env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [
        "kes: error: Java is not on PATH: install a JDK 17+ to run the local broker"
    ]


def test_dev_broker_with_maven_offline_is_one_clear_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # no cached classpath
        "MAVEN_OPTS": f"-Dmaven.repo.local={tmp_path / 'empty-repo'}",  # no cached jars
        "KES_MAVEN_ARGS": "--offline",
    }
    started = time.monotonic()
    proc = _kes("dev", "broker", env=env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kes: error: Maven could not resolve the Kafka jars (offline?)")
    assert time.monotonic() - started < 120
