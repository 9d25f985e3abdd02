"""The worker's consumer on KIP-848 (`KES_GROUP_PROTOCOL=consumer`, brokers 4.0+) against the
classic protocol: workers join and leave under a steady load, every command is answered exactly
once, and how long the partitions that move stop being answered (the rebalance pause).

Run with `-s` to see the pauses; bench/notes.md records a run. Skipped on a broker whose group
coordinator does not offer the consumer protocol (Kafka 3.9 by default).
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from kes.schemas.codec import decode_reply, encode_command, new_command
from kes.schemas.kes.v1.envelopes_pb2 import Reply
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import bank_commands
from tests.fixtures.workers import AppCluster
from tests.integration.test_engine import assert_invariants

RATE = 100
"""Commands per second, sent evenly through every phase."""
SETTLE = 8.0
"""Seconds of load after each change before the next one."""


def _offers_consumer_protocol(bootstrap: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    broker = min(admin.list_topics(timeout=10).brokers)
    resource = ConfigResource(ResourceType.BROKER, str(broker))
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    entry = configs.get("group.coordinator.rebalance.protocols")
    return entry is not None and "consumer" in (entry.value or "")


@pytest.fixture(scope="module")
def kip848(kafka_bootstrap: str) -> None:
    if not _offers_consumer_protocol(kafka_bootstrap):
        pytest.skip("the broker's group coordinator does not offer the consumer protocol (4.0+)")


@dataclass
class Load:
    """Commands sent at RATE per second from a thread until stopped; when each was sent."""

    bootstrap: str
    topics: AggregateTopics
    sent: dict[str, float] = field(default_factory=dict)
    partition_of: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        return list(self.sent)

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 1})
        commands = itertools.cycle(bank_commands(5_000, accounts=200, seed=3))
        began = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = began + n / RATE
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            entity, msg = next(commands)
            env = new_command(entity, msg, aggregate=self.topics.name, reply_wanted=True)
            value, headers = encode_command(env)
            partition = partition_for(entity, self.topics.partitions)
            producer.produce(
                self.topics.commands, value, entity.encode(), partition=partition, headers=headers
            )
            self.sent[env.command_id] = time.time()
            self.partition_of[env.command_id] = partition
            producer.poll(0)
            n += 1
        assert producer.flush(30) == 0


def _replies(
    bootstrap: str, topics: AggregateTopics, want: set[str], timeout: float = 180
) -> dict[str, list[tuple[float, Reply]]]:
    """Every committed reply with its timestamp (when the worker wrote it), until each of
    `want` has one: `{command id: [(seconds, Reply), ...]}`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "kes-test-replies",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    found: dict[str, list[tuple[float, Reply]]] = defaultdict(list)
    consumer.assign([TopicPartition(topics.replies, p, 0) for p in range(topics.partitions)])
    deadline = time.monotonic() + timeout
    try:
        while not want <= found.keys() and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is not None:
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    continue
                reply = decode_reply(msg.value())
                found[reply.command_id].append((msg.timestamp()[1] / 1000, reply))
    finally:
        consumer.close()
    missing = want - found.keys()
    assert not missing, f"{len(missing)} of {len(want)} commands lack replies"
    return found


def _pause(load: Load, answered: dict[str, float], start: float, end: float) -> float:
    """The longest time, over the partitions, that no command sent to it was answered while
    commands were waiting, between `start` and `end` (wall clock)."""
    longest = 0.0
    by_partition: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for cid, sent in load.sent.items():
        if start <= sent <= end:
            by_partition[load.partition_of[cid]].append((sent, answered[cid]))
    for pairs in by_partition.values():
        last = start
        for sent, replied in sorted(pairs, key=lambda p: p[1]):
            longest = max(longest, replied - max(last, sent))
            last = replied
    return longest


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["consumer", "classic"])
def test_join_and_leave_under_load_answer_every_command_once(
    kip848: None, app_cluster: Callable[..., AppCluster], protocol: str
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=6)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    env = {"KES_GROUP_PROTOCOL": protocol}
    first = cluster.worker("w1", **env)
    first.wait_ready()
    load = Load(bootstrap, topics).start()
    marks: dict[str, float] = {}
    try:
        time.sleep(SETTLE / 2)
        marks["join"] = time.time()
        second = cluster.worker("w2", **env)
        second.wait_ready(90)
        time.sleep(SETTLE)
        marks["leave"] = time.time()
        first.stop()
        assert first.proc is not None and first.proc.returncode == 0, first.log_tail()
        time.sleep(SETTLE + 4)
        marks["rejoin"] = time.time()
        third = cluster.worker("w3", **env)
        third.wait_ready(90)
        time.sleep(SETTLE)
        marks["end"] = time.time()
    finally:
        ids = load.stop()
    found = _replies(bootstrap, topics, set(ids))
    replies = {cid: [reply for _, reply in found[cid]] for cid in ids}
    assert_invariants(cluster, replies, ids)
    owned = [set(w.wait_ready()["partitions"]) for w in (second, third)]
    assert all(owned) and owned[0].isdisjoint(owned[1])
    answered = {cid: found[cid][0][0] for cid in ids}
    latency = [answered[cid] - load.sent[cid] for cid in ids]
    quiet = [answered[c] - s for c, s in load.sent.items() if s < marks["join"]]
    figures = {
        "join": _pause(load, answered, marks["join"], marks["leave"]),
        "leave": _pause(load, answered, marks["leave"], marks["rejoin"]),
        "rejoin": _pause(load, answered, marks["rejoin"], marks["end"]),
    }
    print(
        f"\n{protocol}: {len(ids)} commands at {RATE}/s; longest pause of a partition: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in figures.items())
        + f"; latency p50 before the first join {statistics.median(quiet) * 1000:.0f} ms, "
        f"max overall {max(latency):.2f} s"
    )
