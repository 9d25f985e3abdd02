"""One partition of one aggregate, as its owner runs it: the pure step, its checkpoint, its stats.

The processor decides; it does not write. The worker's cycle (kes.streams.runtime.engine) collects
every partition's `BatchResult` and writes them all in one transaction; then it calls `committed` on
each processor (cache and local store move forward) or, if the transaction aborted, `aborted`
(the decisions are forgotten and the same commands are decided again after a rewind).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kes.schemas.codec import decode_snapshot
from kes.schemas.errors import CommandGapError, CommandsDeletedError, GapUnreadError
from kes.schemas.kes.v1.envelopes_pb2 import Snapshot
from kes.stores.snapshots import Checkpoint, PartitionSnapshots
from kes.streams.config.settings import Settings
from kes.streams.core.behavior import Behavior
from kes.streams.core.keyring import DataKeys
from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.idempotency import OutcomePolicy
from kes.streams.cycle.records import CommandRecord
from kes.streams.cycle.result import BatchResult
from kes.streams.cycle.snapshotpolicy import SnapshotPolicy, TailIndex, interval_for
from kes.streams.runtime.gaps import GapReader, read_gap
from kes.topology.layout import AggregateTopics

__all__ = ["PartitionProcessor", "PartitionStats"]

_GAP_RETRY_SECONDS = 1.0
"""How long a partition whose gap could not be read waits before its batch is read again."""


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
    replayed: int = 0
    """Retries answered from the outcome store (decided no second time)."""
    batches: int = 0
    snapshots: int = 0
    """Entity snapshots written to the changelog (see kes.streams.cycle.snapshotpolicy)."""
    recovery_seconds: float = 0.0


class PartitionProcessor:
    """Owns a commands partition: decides its batches exactly once, from its recovered checkpoint.

    Commands below the checkpoint's next-command offset were applied by an earlier owner (the
    checkpoint travels in the same transaction as their events and the group's offset), so a
    redelivery of them is skipped, never applied twice.
    """

    def __init__(
        self,
        behavior: Behavior[Any],
        topics: AggregateTopics,
        partition: int,
        settings: Settings,
        store: PartitionSnapshots,
        keys: DataKeys | None = None,
        gaps: GapReader | None = None,
    ) -> None:
        self.topics = topics
        self.gaps = gaps
        """The worker's kept gap reader (None: each check opens its own)."""
        self.partition = partition
        self.store = store
        self.stats = PartitionStats()
        self.outcomes = OutcomePolicy(settings.outcome_horizon_s * 1000, settings.max_outcomes)
        self.step = BatchStep(
            behavior,
            topics,
            partition,
            self._load,
            load_outcome=store.get,
            outcomes=self.outcomes,
            max_command_bytes=settings.max_command_bytes,
            max_record_bytes=settings.max_record_bytes,
            recent_command_ids=settings.recent_command_ids,
            keys=keys,
        )
        self.settings = settings
        self.policy = SnapshotPolicy(
            interval_for(behavior, settings.snapshot_every), settings.snapshot_max_tail
        )
        self.tails = TailIndex()
        """Entities whose latest revisions are not in the changelog yet
        (kes.streams.cycle.snapshotpolicy)."""
        self.next_offset = -1
        """The offset of the first command this partition has not applied."""
        self.closed = False

    def _load(self, entity_id: str) -> Snapshot | None:
        raw = self.store.get(entity_id)
        return None if raw is None else decode_snapshot(raw)

    def recovered(
        self, checkpoint: Checkpoint, seconds: float, tails: TailIndex | None = None
    ) -> None:
        """Start from a recovered checkpoint (the local store now holds the changelog's state
        and the tail folded after it; `tails`: the entities with unsnapshotted events)."""
        self.next_offset = checkpoint.next_command_offset
        self.stats.recovery_seconds = seconds
        self.tails = tails or TailIndex()

    async def handle(self, records: Sequence[CommandRecord]) -> BatchResult | None:
        """Decide a batch; None when every record was applied before (nothing to write).

        Raises CommandGapError, before deciding anything, when the batch starts past the next
        expected offset and commands lie in between (not only transaction markers or aborted
        records), CommandsDeletedError when retention deleted commands this partition never
        applied, and GapUnreadError when the gap could not be read (the batch is read again).
        """
        fresh = [r for r in records if r.offset >= self.next_offset]
        self.stats.skipped += len(records) - len(fresh)
        if not fresh:
            return None
        if 0 <= self.next_offset < fresh[0].offset:
            await self._check_gap(fresh[0].offset)
        result = self.step.run(fresh)
        self.policy.plan(result, self.tails, self.step.entity)
        if self.outcomes.enabled:
            policy = self.outcomes
            expired = self.store.expired(
                result.decided_ms - policy.horizon_ms, policy.max_per_partition, policy.prune_batch
            )
            result.expired = [key for key in expired if key not in result.outcomes]
        for entity_id in result.erased:  # an erased entity's outcomes go with it
            known = set(result.expired)
            result.expired += [k for k in self.store.outcome_keys(entity_id) if k not in known]
        return result

    def committed(
        self, result: BatchResult, snapshots: dict[str, bytes | None], changelog: int
    ) -> None:
        """The batch's transaction committed: write the local store, move the checkpoint on.

        1. the snapshots (every changed entity's latest, logged or not) and the checkpoint with
           the batch's events low-water go to the local store in one atomic write (a crash
           before it only leaves the cache behind; recovery replays the changelog and folds the
           events from the low-water);
        2. the changed entities enter the step's cache, the tail index moves on;
        3. the next command offset moves past the batch.
        """
        checkpoint = Checkpoint(
            changelog, result.next_command_offset, self.settings.group_id, result.events_from
        )
        self.store.write(snapshots, checkpoint, result.new_outcomes())
        self.step.commit(result)
        self.tails.commit(result)
        self.next_offset = result.next_command_offset
        stats = self.stats
        stats.batches += 1
        stats.commands += result.commands
        stats.accepted += result.accepted
        stats.rejected += result.rejected
        stats.replayed += result.replayed
        stats.events += len(result.events)
        stats.dead_letters += len(result.dead_letters)
        stats.forwarded += len(result.forwards)
        stats.snapshots += len(result.changed) - len(result.unlogged)

    def aborted(self) -> None:
        """The batch's transaction aborted: forget cached decisions; the batch is decided again."""
        self.step.forget()

    async def _check_gap(self, first: int) -> None:
        expected = self.next_offset
        topic, partition = self.topics.commands, self.partition
        try:
            if self.gaps is not None:
                gap = await self.gaps.read(topic, partition, expected, first)
            else:
                gap = await read_gap(self.settings, topic, partition, expected, first)
        except Exception as exc:  # not a gap: a read that failed (broker away, timeout)
            await asyncio.sleep(_GAP_RETRY_SECONDS)
            raise GapUnreadError(topic, partition, expected, first, repr(exc)) from exc
        if expected < gap.log_start:
            raise CommandsDeletedError(topic, partition, expected, gap.log_start)
        if gap.records:
            raise CommandGapError(topic, partition, expected, first, gap.records)
        self.next_offset = first  # only markers and aborted records in between

    def close(self) -> None:
        """Stop deciding for this partition and drop cached entities."""
        self.closed = True
        self.step.forget()
