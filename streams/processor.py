"""One partition of one aggregate, as its owner runs it: the pure step plus the Kafka writer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas.codec import decode_snapshot
from schemas.errors import CommandGapError, TransactionError
from schemas.kes.v1.envelopes_pb2 import Snapshot
from stores.snapshots import PartitionSnapshots
from streams.batch import BatchStep, CommandRecord
from streams.behavior import Behavior
from streams.gaps import records_between
from streams.settings import Settings
from streams.transaction import PartitionWriter
from topology.layout import AggregateTopics

__all__ = ["PartitionProcessor", "PartitionStats"]


@dataclass
class PartitionStats:
    """Counters of one partition since this worker took it."""

    commands: int = 0
    accepted: int = 0
    rejected: int = 0
    events: int = 0
    dead_letters: int = 0
    forwarded: int = 0
    skipped: int = 0
    batches: int = 0
    recovery_seconds: float = 0.0


class PartitionProcessor:
    """Owns a commands partition: recovers its snapshots, then applies batches exactly once.

    Commands below the recovered checkpoint's next-command offset were applied by an earlier
    owner (the checkpoint travels in the same transaction as their events), so a redelivery of
    them, for example after the group offset moved backwards, is skipped, never applied twice.
    """

    def __init__(
        self,
        behavior: Behavior[Any],
        topics: AggregateTopics,
        partition: int,
        settings: Settings,
        store: PartitionSnapshots,
    ) -> None:
        self.topics = topics
        self.partition = partition
        self.store = store
        self.stats = PartitionStats()
        self.step = BatchStep(
            behavior,
            topics,
            partition,
            self._load,
            max_command_bytes=settings.max_command_bytes,
            recent_command_ids=settings.recent_command_ids,
        )
        self.settings = settings
        self.writer = PartitionWriter(settings, topics, partition, store)
        self.ready = asyncio.Event()
        self.next_offset = -1

    def _load(self, entity_id: str) -> Snapshot | None:
        raw = self.store.get(entity_id)
        return None if raw is None else decode_snapshot(raw)

    @property
    def closed(self) -> bool:
        """True once revoked or fenced: this worker must not write for the partition any more."""
        return self.writer.closed

    async def start(self) -> None:
        """Fence older owners, replay the committed changelog, then accept batches."""
        began = time.monotonic()
        await self.writer.start()
        checkpoint = await self.writer.recover()
        self.next_offset = checkpoint.next_command_offset
        self.stats.recovery_seconds = time.monotonic() - began
        self.ready.set()

    async def handle(self, records: Sequence[CommandRecord]) -> None:
        """Apply a batch in one transaction; raises TransactionError when it did not apply.

        Raises CommandGapError, before applying anything, when the batch starts past the next
        expected offset and commands lie in between (not only transaction markers).
        """
        fresh = [r for r in records if r.offset >= self.next_offset]
        self.stats.skipped += len(records) - len(fresh)
        if not fresh:
            return
        if 0 <= self.next_offset < fresh[0].offset:
            await self._check_gap(fresh[0].offset)
        result = self.step.run(fresh)
        try:
            await self.writer.write(result)
        except TransactionError:
            self.step.forget()
            raise
        self.step.commit(result)
        self.next_offset = result.next_command_offset
        stats = self.stats
        stats.batches += 1
        stats.commands += len(fresh)
        stats.accepted += result.accepted
        stats.rejected += result.rejected
        stats.events += len(result.events)
        stats.dead_letters += len(result.dead_letters)
        stats.forwarded += len(result.forwards)

    async def _check_gap(self, first: int) -> None:
        expected = self.next_offset
        missed = await records_between(
            self.settings, self.topics.commands, self.partition, expected, first
        )
        if missed:
            raise CommandGapError(self.topics.commands, self.partition, expected, first, missed)
        self.next_offset = first  # only markers in between

    async def close(self) -> None:
        """Stop writing (abort an open transaction) and drop cached entities."""
        await self.writer.close()
        self.step.forget()
