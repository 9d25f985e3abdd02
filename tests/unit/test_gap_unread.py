"""A gap that cannot be read (the broker away, a timeout) is no verdict: the batch waits.

A worker whose batch starts past its next expected offset reads the offsets in between before
deciding anything. After a transactional producer's commit marker that is nearly every batch, so
a read that fails must not stop the worker (exit 70, a crash loop while a broker is away): the
partition's batch is refused with GapUnreadError, nothing decided, and read again later.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from faust.types import TP

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_command, new_command
from kes.schemas.errors import GapUnreadError
from kes.stores.snapshots import MemorySnapshotStore
from kes.streams.config.settings import Settings
from kes.streams.cycle.records import CommandRecord
from kes.streams.runtime import processor as processor_module
from kes.streams.runtime.engine import Engine
from kes.streams.runtime.gaps import GapReader
from kes.streams.runtime.processor import PartitionProcessor
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when this returns: nothing listens there


async def test_a_gap_that_cannot_be_read_refuses_the_batch_and_decides_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processor_module, "_GAP_RETRY_SECONDS", 0.0)
    topics = AggregateTopics("account", partitions=1)
    settings = Settings(bootstrap_servers=f"127.0.0.1:{_closed_port()}", partitions=1)
    store = MemorySnapshotStore().partition(topics.snapshots, 0)
    processor = PartitionProcessor(account, topics, 0, settings, store)
    processor.next_offset = 5  # as if offsets below 5 were applied
    value, headers = encode_command(
        new_command("acc-1", bank_pb2.OpenAccount(owner="o"), aggregate="account")
    )
    records = [CommandRecord(7, b"acc-1", value, headers)]
    with pytest.raises(
        GapUnreadError, match=r"account\.commands\[0\]: could not read offsets 5\.\.6"
    ):
        await processor.handle(records)
    assert processor.next_offset == 5 and processor.stats.batches == 0
    assert processor.step.entity("acc-1").revision == 0  # nothing decided, nothing cached


class _Actors:
    """Runs each partition's work at once (the real ones are Faust actors)."""

    def submit(self, tp: object, work: Callable[[], Awaitable[Any]]) -> asyncio.Future[Any]:
        return asyncio.ensure_future(work())


class _Consumer:
    """Records the seeks of the engine's rewind."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


async def test_the_engine_reads_that_slice_again_and_writes_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(processor_module, "_GAP_RETRY_SECONDS", 0.0)
    settings = Settings(
        bootstrap_servers=f"127.0.0.1:{_closed_port()}", partitions=2, data_dir=tmp_path
    )
    engine = Engine(settings, {"account": account}, _Actors(), None, "test")  # type: ignore[arg-type]
    consumer = engine._consumer = _Consumer()  # type: ignore[assignment]
    topics = settings.topics("account")
    slices = {}
    for partition, (entity, offset) in enumerate([("acc-2", 7), ("acc-1", 0)]):
        assert partition_for(entity, 2) == partition
        store = MemorySnapshotStore().partition(topics.snapshots, partition)
        processor = PartitionProcessor(account, topics, partition, settings, store)
        processor.next_offset = 5 if partition == 0 else -1  # partition 0: a gap at 5..6
        tp = TP(topics.commands, partition)
        engine._ready[tp] = processor
        value, headers = encode_command(
            new_command(entity, bank_pb2.OpenAccount(owner="o"), aggregate="account")
        )
        slices[tp] = [CommandRecord(offset, entity.encode(), value, headers)]
    try:
        work = await engine._decide(slices)
    finally:
        engine._kafka.shutdown(wait=True)
    assert [(w.partition, w.result.accepted) for w in work] == [(1, 1)]
    assert consumer.seeks == [(topics.commands, 0, 7)]  # read again from the slice's start


async def test_the_kept_reader_closes_after_a_failed_read_and_opens_again() -> None:
    reader = GapReader(Settings(bootstrap_servers=f"127.0.0.1:{_closed_port()}"), timeout=5)
    for _ in range(2):  # a failed read leaves no reader behind; the next one starts anew
        with pytest.raises(Exception, match=r"127\.0\.0\.1"):
            await reader.read("account.commands", 0, 5, 7)
        assert reader._consumer is None
