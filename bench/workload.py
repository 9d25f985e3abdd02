"""The bank workload: commands encoded once, produced as a backlog; a group's progress watched.

Every system under test reads the same pre-loaded commands topic (each with its own consumer
group), so a run produces its backlog once. Progress is what a group has *committed*: every
system here commits its input offsets in the transaction that writes its output, so a committed
offset means "applied, and its events are visible to read_committed readers".
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from google.protobuf.message import Message

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_command, new_command, pack
from kes.schemas.kes.v1.envelopes_pb2 import Snapshot
from kes.streams.cycle.records import CHECKPOINT_KEY
from kes.topology.partitioning import partition_for

__all__ = [
    "EncodedCommand",
    "Progress",
    "bank_commands",
    "end_offsets",
    "produce",
    "produce_snapshots",
    "watch",
]

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class EncodedCommand:
    """One command record as produced: key (entity id), value, headers, partition."""

    key: bytes
    value: bytes
    headers: Headers
    partition: int


def bank_commands(
    n: int, accounts: int, partitions: int, *, reply_wanted: bool = False, seed: int = 7
) -> list[EncodedCommand]:
    """n commands: each account opened first, then random credits and (sometimes failing) debits."""
    rng = random.Random(seed)
    ids = [f"acc-{i:06d}" for i in range(accounts)]
    plan: list[tuple[str, Message]] = [
        (a, bank_pb2.OpenAccount(owner=a, opening_balance=100)) for a in ids
    ]
    while len(plan) < n:
        acc = rng.choice(ids)
        amount = rng.randint(1, 60)
        credit = rng.random() < 0.5
        cmd: Message = (
            bank_pb2.CreditAccount(amount=amount)
            if credit
            else bank_pb2.DebitAccount(amount=amount)
        )
        plan.append((acc, cmd))
    out = []
    for entity, msg in plan[:n]:
        env = new_command(entity, msg, aggregate="account", reply_wanted=reply_wanted)
        value, headers = encode_command(env)
        out.append(
            EncodedCommand(entity.encode(), value, list(headers), partition_for(entity, partitions))
        )
    return out


def produce(bootstrap: str, topic: str, commands: Sequence[EncodedCommand]) -> float:
    """Produce the commands (idempotent, acks=all); returns the seconds it took."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    began = time.monotonic()
    for i, cmd in enumerate(commands):
        producer.produce(topic, cmd.value, cmd.key, partition=cmd.partition, headers=cmd.headers)
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} commands were not delivered to {topic}")
    return time.monotonic() - began


def produce_snapshots(bootstrap: str, topic: str, entities: int, partitions: int) -> float:
    """Fill a snapshot changelog with `entities` opened accounts and a checkpoint per partition.

    This is what a worker would have written after opening them, without running the commands:
    recovery benchmarks need the changelog, not the history that made it. Returns seconds.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 2_000_000,
        }
    )
    began = time.monotonic()
    for i in range(entities):
        entity = f"acc-{i:07d}"
        state = bank_pb2.Account(account_id=entity, owner=entity, balance=100, open=True)
        snap = Snapshot(entity_id=entity, revision=1, state=pack(state), source_offset=i)
        snap.recent_command_ids.append(f"{i:032x}")
        while True:
            try:
                producer.produce(
                    topic,
                    snap.SerializeToString(),
                    entity.encode(),
                    partition=partition_for(entity, partitions),
                )
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    for p in range(partitions):  # no command applied yet: the next command offset is 0
        producer.produce(topic, (0).to_bytes(8, "big", signed=True), CHECKPOINT_KEY, partition=p)
    left = producer.flush(300)
    if left:
        raise RuntimeError(f"{left} snapshots were not delivered to {topic}")
    return time.monotonic() - began


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The high watermark of each partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


@dataclass(frozen=True)
class Progress:
    """How a group worked through a backlog, from committed offsets polled every few ms."""

    commands: int
    first_seconds: float
    """From the watch's start to the last poll that saw nothing committed (the first poll, if
    something was committed already)."""
    first_done: int
    """Commands committed at that poll (not part of the rate): 0 unless the watch began late."""
    last_seconds: float
    """From the watch's start to the poll that saw every command committed."""
    cpu_seconds: float = float("nan")
    """CPU time (user + system) the process under test spent between those two polls."""
    broker_cpu_seconds: float = float("nan")
    """CPU time the broker spent between those two polls (the cost put on the cluster)."""

    @property
    def rate(self) -> float:
        """Commands per second from just before the first commit to the last one (± a poll)."""
        span = self.last_seconds - self.first_seconds
        return (self.commands - self.first_done) / span if span > 0 else float("nan")

    @property
    def cpu_micros_per_command(self) -> float:
        """CPU microseconds per command in that window: less noisy than a rate on a busy box."""
        done = self.commands - self.first_done
        return self.cpu_seconds / done * 1e6 if done > 0 else float("nan")

    @property
    def broker_cpu_micros_per_command(self) -> float:
        """The broker's CPU microseconds per command in that window."""
        done = self.commands - self.first_done
        return self.broker_cpu_seconds / done * 1e6 if done > 0 else float("nan")

    @property
    def cpu_share(self) -> float:
        """Cores kept busy in that window (1.0 = one core all the time)."""
        span = self.last_seconds - self.first_seconds
        return self.cpu_seconds / span if span > 0 else float("nan")


def watch(
    bootstrap: str,
    group: str,
    topic: str,
    ends: dict[int, int],
    *,
    timeout: float,
    interval: float = 0.05,
    alive: Callable[[], bool] | None = None,
    cpu: Callable[[], float] | None = None,
    broker_cpu: Callable[[], float] | None = None,
) -> Progress:
    """Poll `group`'s committed offsets on `topic` until they reach `ends`.

    `alive`, if given, is called each poll (False aborts with an error): it lets the caller
    notice a system under test that died. `cpu`, if given, returns the CPU seconds used so far
    by the system under test, read at the first and the last poll; `broker_cpu` the same for
    the broker.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    tps = [TopicPartition(topic, p) for p in sorted(ends)]
    total = sum(ends.values())
    began = time.monotonic()
    first: tuple[float, int, float, float] | None = None
    try:
        while True:
            now = time.monotonic()
            if now - began > timeout:
                raise TimeoutError(f"group {group} did not finish {topic} in {timeout:.0f}s")
            if alive is not None and not alive():
                raise RuntimeError(f"the process of group {group} died")
            try:
                committed = consumer.committed(tps, timeout=10)
            except KafkaException:  # the coordinator is loading or moving: ask again
                time.sleep(interval)
                continue
            done = sum(max(0, tp.offset) for tp in committed)
            seen = time.monotonic() - began
            used = cpu() if cpu is not None else float("nan")
            brokers = broker_cpu() if broker_cpu is not None else float("nan")
            if first is None or (done == 0 and first[1] == 0):
                first = (seen, done, used, brokers)  # moves on while nothing is committed
            if done >= total:
                return Progress(
                    total, first[0], first[1], seen, used - first[2], brokers - first[3]
                )
            time.sleep(interval)
    finally:
        consumer.close()
