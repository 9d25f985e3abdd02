"""Gap checks: are there commands between the offset a partition expects and the one it got?

Offsets on a commands topic are not contiguous: transaction markers (of forwarded commands, or of
clients that produce transactionally) take offsets no consumer ever sees, and so do the records
of an aborted transaction (a process runner or a forwarding worker killed mid-cycle): they were
never commands. So a batch that starts after the expected offset is usually fine, but it could
also mean commands were skipped, which must never happen silently. This reads the gap itself
(read_committed, as the worker reads: every committed data record, markers and aborted records
excluded) and counts what is in it. The gap lies below a record the worker was just given under
read_committed, so every transaction in it is decided: the read never waits on an open one.

A gap that starts below the partition's log start was deleted by retention: those commands can
never be applied. That is a named error (CommandsDeletedError); `skip_deleted` records an
operator's decision to go on without them, as a checkpoint record on the snapshot changelog.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from kes.schemas.errors import KesError
from kes.streams.config.settings import Settings
from kes.streams.cycle.records import CHECKPOINT_KEY, decode_checkpoint, encode_checkpoint
from kes.streams.cycle.snapshotpolicy import EVENTS_FROM_HEADER
from kes.streams.kafka.config import aiokafka_options, confluent_config
from kes.streams.kafka.readback import read_records
from kes.topology.layout import AggregateTopics

__all__ = ["Gap", "GapReader", "SkipDecision", "read_gap", "records_between", "skip_deleted"]


def _reader(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="none",  # a deleted start raises, never jumps to the end
        **aiokafka_options(settings),
    )


async def _count(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int, timeout: float
) -> int:
    consumer.assign([tp])
    consumer.seek(tp, start)
    found = 0
    async with asyncio.timeout(timeout):
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=end - start)
            found += sum(1 for record in batch.get(tp, ()) if start <= record.offset < end)
    return found


async def records_between(
    settings: Settings, topic: str, partition: int, start: int, end: int, timeout: float = 30.0
) -> int:
    """How many committed data records lie at offsets `start` <= o < `end` (transaction
    markers and the records of aborted transactions are not counted: they are never commands)."""
    if end <= start:
        return 0
    consumer = _reader(settings)
    await consumer.start()
    try:
        return await _count(consumer, TopicPartition(topic, partition), start, end, timeout)
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Gap:
    """What lies between the offset a partition expects and the one it got."""

    log_start: int
    """The partition's first offset still on the log."""
    records: int
    """Committed data records in the gap (0 when its start was deleted: see `log_start`)."""


async def read_gap(
    settings: Settings, topic: str, partition: int, start: int, end: int, timeout: float = 30.0
) -> Gap:
    """The log start and, when `start` is still on the log, the committed data records at
    `start` <= o < `end`, with a reader of its own (a worker keeps one: `GapReader`)."""
    reader = GapReader(settings, timeout)
    try:
        return await reader.read(topic, partition, start, end)
    finally:
        await reader.close()


class GapReader:
    """Reads gaps (`read_gap`) with one reader kept open (a worker's: its partitions' checks
    take turns).

    Starting a reader costs ~0.1 s against a local broker, and a worker fed by a process runner
    checks a gap before nearly every batch; a kept reader answers in milliseconds. After an
    error the reader is closed and the next check starts a new one.
    """

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._lock: asyncio.Lock | None = None

    async def read(self, topic: str, partition: int, start: int, end: int) -> Gap:
        """The log start and, when `start` is still on the log, the committed data records at
        `start` <= o < `end` (markers and aborted records are never commands)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            tp = TopicPartition(topic, partition)
            try:
                if self._consumer is None:
                    self._consumer = _reader(self.settings)
                    await self._consumer.start()
                consumer = self._consumer
                async with asyncio.timeout(self.timeout):
                    low = int((await consumer.beginning_offsets([tp]))[tp])
                if start < low or end <= start:
                    return Gap(low, 0)
                return Gap(low, await _count(consumer, tp, start, end, self.timeout))
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        """Close the reader (a later `read` opens a new one)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


@dataclass(frozen=True)
class SkipDecision:
    """What `skip_deleted` found and did."""

    next_command_offset: int
    """The partition's next command offset before the decision (its last checkpoint)."""
    log_start: int
    """The first command offset still on the log: the partition goes on from here."""
    written: bool
    """False when there was nothing to skip (no checkpoint record was written)."""
    end: int = -1
    """The partition's end offset (its high watermark)."""

    def summary(self, topic: str, partition: int) -> str:
        """One line for the operator."""
        if not self.written:
            return (
                f"{topic}[{partition}]: nothing to skip: next command offset "
                f"{self.next_command_offset}, log start {self.log_start}, end {self.end}"
            )
        if self.next_command_offset > self.end:
            return (
                f"{topic}[{partition}]: the checkpoint's next command offset "
                f"{self.next_command_offset} was past the partition's end {self.end} (the topic "
                f"was recreated or truncated); the partition goes on from {self.log_start}"
            )
        return (
            f"{topic}[{partition}]: skipped offsets {self.next_command_offset}.."
            f"{self.log_start - 1} (deleted by retention); the partition goes on from "
            f"{self.log_start}"
        )


def skip_deleted(
    settings: Settings, topics: AggregateTopics, partition: int, timeout: float = 30.0
) -> SkipDecision:
    """Record that a partition goes on without the commands retention deleted before it applied
    them, or from the start of a commands topic that was recreated or truncated below its
    checkpoint: a checkpoint record at the log start, on the snapshot changelog.

    1. read the partition's last checkpoint from the changelog (committed records only);
    2. read the commands partition's log start and end;
    3. only if the checkpoint is below the start or past the end (and names this group, unless
       take-over is set),
       write a checkpoint record whose next command offset is the log start, with the last
       checkpoint's events low-water (kes.streams.cycle.snapshotpolicy: no unsnapshotted event may
       be left behind it).
    The worker that owns the partition reads it on its next recovery (it stopped with
    CommandsDeletedError, so it holds no newer state for that partition).
    """
    config = confluent_config(settings)
    last: tuple[int, str] = (-1, "")
    headers: list[tuple[str, str | bytes | None]] = []
    for record in read_records(topics.snapshots, topics.partitions, config, only=[partition]):
        if record.key == CHECKPOINT_KEY and record.value:
            last = decode_checkpoint(record.value)
            headers = [(k, v) for k, v in record.headers if k == EVENTS_FROM_HEADER]
    next_offset, owner = last
    if owner and owner != settings.group_id and not settings.take_over:
        raise KesError(
            f"{topics.snapshots}[{partition}]: the last checkpoint names group {owner!r}, not "
            f"{settings.group_id!r}; pass --app-id {owner} (or --take-over)"
        )
    reader = Consumer({**config, "group.id": f"{settings.group_id}-skip"})
    try:
        low, high = reader.get_watermark_offsets(
            ConfluentTopicPartition(topics.commands, partition), timeout=timeout
        )
    finally:
        reader.close()
    if next_offset < 0 or low <= next_offset <= high:
        return SkipDecision(next_offset, low, written=False, end=high)
    producer = Producer({**config, "enable.idempotence": True, "acks": "all"})
    value = encode_checkpoint(low, settings.group_id)
    producer.produce(
        topics.snapshots, value, CHECKPOINT_KEY, partition=partition, headers=headers or None
    )
    if producer.flush(timeout) != 0:
        raise KesError(f"{topics.snapshots}[{partition}]: the checkpoint was not written")
    return SkipDecision(next_offset, low, written=True, end=high)
