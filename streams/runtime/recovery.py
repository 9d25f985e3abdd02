"""Recovery of newly assigned partitions: the committed changelog into the local stores.

One reader (outside the group's membership) recovers every partition of an assignment at once,
beside the worker's cycle, which goes on with the partitions it already holds. The snapshot
changelog is the truth, the local store its cache. With a snapshot interval, the checkpoint
recovered here names the events low-water, from which kes.streams.runtime.tailfold then folds each
entity's unsnapshotted events (kes.streams.cycle.snapshotpolicy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from kes.schemas.errors import CommandsTruncatedError, OwnershipError
from kes.stores.snapshots import Checkpoint, PartitionSnapshots
from kes.streams.config.settings import Settings
from kes.streams.cycle.records import CHECKPOINT_KEY, decode_checkpoint
from kes.streams.cycle.snapshotpolicy import events_from_header
from kes.streams.kafka.config import aiokafka_options, confluent_config

__all__ = ["RecoveryRequest", "recover"]

log = logging.getLogger(__name__)

_CHUNK = 5_000
"""Changelog records per local write: bounds what recovery holds in memory per partition."""


@dataclass
class RecoveryRequest:
    """One partition to recover: its commands partition, its changelog, its local store."""

    commands: str
    snapshots: str
    partition: int
    store: PartitionSnapshots
    checkpoint: Checkpoint | None = None
    """Filled by `recover`: what the local store reflects afterwards."""
    owner: str = ""
    """Filled by `recover`: the group named by the changelog's last checkpoint record."""
    committed: int = -1
    """Filled by `recover`: the group's committed offset of the commands partition (-1: none)."""


async def recover(settings: Settings, requests: Sequence[RecoveryRequest], timeout: float) -> None:
    """Bring each request's local store up to its committed changelog.

    1. fetch the group's committed offsets of the commands partitions: read_committed makes the
       broker answer only once no transaction holds pending offsets for them, so a predecessor's
       open transaction (a zombie, a killed worker) is finished before anything is read;
    2. per partition, read the local checkpoint; if it is past the changelog's end (another
       cluster, a recreated topic), start cold;
    3. replay the committed changelog records after it (aborted data is skipped) into the local
       store in chunks, each chunk with its checkpoint in one atomic write, until the reader
       reaches the partition's end (its last stable offset);
    4. raise OwnershipError if the last checkpoint names another group and take-over is off,
       and CommandsTruncatedError if the checkpoint's next command offset is past the commands
       partition's end (its last stable offset, which never goes back but for a recreated or
       truncated topic): commands at those offsets would be passed over as applied. A committed
       offset past the end (a truncated partition, once `kes skip-deleted` moved the checkpoint
       back) is forgotten: it names commands that are no longer there.
    Each request's checkpoint then carries the events low-water of the last checkpoint record
    read (or the local one's, when none was read): the tail still to fold.

    Step 1 uses confluent-kafka (librdkafka asks for stable offsets); step 3 aiokafka, whose
    batch decoding reads a changelog about three times as fast as a confluent-kafka consumer
    does from Python on this kind of machine.
    """
    if not requests:
        return
    began = time.monotonic()
    committed = await asyncio.to_thread(_committed_offsets, settings, requests, timeout)
    for request, offset in zip(requests, committed, strict=True):
        request.committed = offset
    reader = AIOKafkaConsumer(
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=4 * 1024 * 1024,
        max_partition_fetch_bytes=1024 * 1024,
        **aiokafka_options(settings),
    )
    await reader.start()
    try:
        tps = [AioTopicPartition(r.snapshots, r.partition) for r in requests]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        commands = [AioTopicPartition(r.commands, r.partition) for r in requests]
        command_ends = await reader.end_offsets(commands)
        replays: dict[AioTopicPartition, _Replay] = {}
        for tp, request in zip(tps, requests, strict=True):
            replay = _Replay(request)
            if replay.begin(ends[tp]):
                replays[tp] = replay
                reader.seek(tp, replay.checkpoint.changelog_offset + 1)
        while replays:
            for tp in [tp for tp in replays if await reader.position(tp) >= ends[tp]]:
                replays.pop(tp).flush()
            if not replays:
                break
            batches = await reader.getmany(*replays, timeout_ms=1000, max_records=_CHUNK)
            for tp, records in batches.items():
                replay = replays[tp]
                pending = replay.pending
                for record in records:
                    key = record.key
                    if key == CHECKPOINT_KEY:
                        replay.checkpointed(record.value, record.headers)
                    elif key is not None:
                        pending[key.decode()] = record.value
                if records:
                    replay.last = records[-1].offset
                    replay.flush()
    finally:
        await reader.stop()
    for request, tp in zip(requests, commands, strict=True):
        owner = request.owner
        if owner and owner != settings.group_id and not settings.take_over:
            raise OwnershipError(request.snapshots, request.partition, owner, settings.group_id)
        expected = (request.checkpoint or Checkpoint()).next_command_offset
        if expected > command_ends[tp]:
            raise CommandsTruncatedError(tp.topic, tp.partition, expected, command_ends[tp])
        if request.committed > command_ends[tp]:  # a truncated partition's stale offset
            log.warning(
                "%s[%d]: the group's committed offset %d is past the partition's end %d; "
                "going by the checkpoint (%d)",
                tp.topic, tp.partition, request.committed, command_ends[tp], expected,
            )  # fmt: skip
            request.committed = -1
    log.info("recovered %d partitions in %.2fs", len(requests), time.monotonic() - began)


def _committed_offsets(
    settings: Settings, requests: Sequence[RecoveryRequest], timeout: float
) -> list[int]:
    """The group's committed offsets of the requests' commands partitions (-1: none)."""
    reader = Consumer(
        confluent_config(
            settings,
            **{
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
        )
    )
    try:
        found = _committed(
            reader, [TopicPartition(r.commands, r.partition) for r in requests], timeout
        )
        return [tp.offset if tp.offset >= 0 else -1 for tp in found]
    finally:
        reader.close()


def _committed(
    reader: Consumer, partitions: list[TopicPartition], timeout: float
) -> list[TopicPartition]:
    """The group's committed offsets, asked again while the coordinator moves or loads, or
    while a predecessor's transaction keeps them pending: the coordinator aborts such a
    transaction only after its timeout (`timeout`) plus its clean-up interval, so the wait
    lasts up to twice the timeout and a minute more."""
    deadline = time.monotonic() + 2 * timeout + 60
    while True:
        try:
            return reader.committed(partitions, timeout=min(timeout, 10.0))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            transient = error.retriable() or error.code() in _TRANSIENT
            if not transient or time.monotonic() > deadline:
                raise
            log.info("committed offsets not stable yet (%s); asking again", error)
            time.sleep(0.2)


_TRANSIENT = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
}


class _Replay:
    """One partition's replay: pending snapshots and the checkpoint they lead to."""

    def __init__(self, request: RecoveryRequest) -> None:
        self.request = request
        self.checkpoint = request.store.checkpoint()
        self.pending: dict[str, bytes | None] = {}
        self.last = self.checkpoint.changelog_offset
        self.next_command = self.checkpoint.next_command_offset
        self.owner = self.checkpoint.owner
        self.events_from = self.checkpoint.events_from

    def begin(self, end: int) -> bool:
        """True when records after the local checkpoint remain to be read (end: exclusive)."""
        request = self.request
        if self.checkpoint.changelog_offset >= end:
            log.warning(
                "%s[%d]: local state is ahead of the changelog; rebuilding cold",
                request.snapshots, request.partition,
            )  # fmt: skip
            request.store.clear()
            self.checkpoint = Checkpoint()
            self.last, self.next_command, self.owner, self.events_from = -1, -1, "", -1
        request.checkpoint, request.owner = self.checkpoint, self.owner
        return self.checkpoint.changelog_offset + 1 < end

    def checkpointed(
        self, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> None:
        """A checkpoint record: the next command offset, the owning group and the events
        low-water (-1 when its headers carry none) from here on."""
        self.next_command, self.owner = decode_checkpoint(value or b"")
        self.events_from = events_from_header(headers)

    def flush(self) -> None:
        """Write what was read so far, with its checkpoint, in one atomic local write."""
        if not self.pending and self.last == self.checkpoint.changelog_offset:
            return
        self.checkpoint = Checkpoint(self.last, self.next_command, self.owner, self.events_from)
        self.request.store.write(self.pending, self.checkpoint)
        self.pending = {}
        self.request.checkpoint, self.request.owner = self.checkpoint, self.owner
