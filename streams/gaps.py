"""Gap checks: are there commands between the offset a partition expects and the one it got?

Offsets on a commands topic are not contiguous: transaction markers (of forwarded commands, or of
clients that produce transactionally) take offsets no consumer ever sees. So a batch that starts
after the expected offset is usually fine, but it could also mean commands were skipped, which
must never happen silently. This reads the gap itself (read_uncommitted: every data record,
markers excluded) and counts what is in it.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafkaconfig import aiokafka_options
from streams.settings import Settings

__all__ = ["records_between"]


async def records_between(
    settings: Settings, topic: str, partition: int, start: int, end: int, timeout: float = 30.0
) -> int:
    """How many data records (not transaction markers) lie at offsets `start` <= o < `end`."""
    if end <= start:
        return 0
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, isolation_level="read_uncommitted", **aiokafka_options(settings)
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        found = 0
        async with asyncio.timeout(timeout):
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=end - start)
                found += sum(1 for record in batch.get(tp, ()) if start <= record.offset < end)
        return found
    finally:
        await consumer.stop()
