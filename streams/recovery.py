"""Recovery of newly assigned partitions: the committed changelog into the local stores.

One reader (a confluent-kafka consumer outside the group's membership) recovers every partition
of an assignment at once, in a thread of its own, so the worker's cycle goes on with the
partitions it already holds. The snapshot changelog is the truth, the local store its cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, TopicPartition

from schemas.errors import OwnershipError
from stores.snapshots import Checkpoint, PartitionSnapshots
from streams.batch import CHECKPOINT_KEY, decode_checkpoint
from streams.kafkaconfig import confluent_config
from streams.settings import Settings

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


def recover(settings: Settings, requests: Sequence[RecoveryRequest], timeout: float) -> None:
    """Bring each request's local store up to its committed changelog.

    1. fetch the group's committed offsets of the commands partitions: read_committed makes the
       broker answer only once no transaction holds pending offsets for them, so a predecessor's
       open transaction (a zombie, a killed worker) is finished before anything is read;
    2. per partition, read the local checkpoint; if it is past the changelog's end (another
       cluster, a recreated topic), start cold;
    3. replay the committed changelog records after it (aborted data is skipped) into the local
       store in chunks, each chunk with its checkpoint in one atomic write, until the reader
       reaches the partition's end (its last stable offset);
    4. raise OwnershipError if the last checkpoint names another group and take-over is off.
    """
    if not requests:
        return
    began = time.monotonic()
    reader = Consumer(
        confluent_config(
            settings,
            **{
                "group.id": settings.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "fetch.max.bytes": 4 * 1024 * 1024,
                "max.partition.fetch.bytes": 1024 * 1024,
                "queued.max.messages.kbytes": 16 * 1024,
            },
        )
    )
    try:
        committed = reader.committed(
            [TopicPartition(r.commands, r.partition) for r in requests], timeout=timeout
        )
        for request, tp in zip(requests, committed, strict=True):
            request.committed = tp.offset if tp.offset >= 0 else -1
        by_tp: dict[tuple[str, int], _Replay] = {}
        start: list[TopicPartition] = []
        for request in requests:
            replay = _Replay(request)
            _, high = reader.get_watermark_offsets(
                TopicPartition(request.snapshots, request.partition), timeout=timeout
            )
            if replay.begin(high):
                by_tp[(request.snapshots, request.partition)] = replay
                first = replay.checkpoint.changelog_offset + 1
                start.append(TopicPartition(request.snapshots, request.partition, first))
        if start:
            reader.assign(start)
        deadline = time.monotonic() + max(timeout, 60.0) * 10
        while by_tp:
            if time.monotonic() > deadline:
                raise TimeoutError(f"recovery of {sorted(by_tp)} did not reach the end")
            for message in reader.consume(_CHUNK, 0.5):
                where = (str(message.topic()), int(message.partition() or 0))
                found = by_tp.get(where)
                if found is None:
                    continue
                replay = found
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"recovery of {where}: {error}")
                    replay.flush()
                    del by_tp[where]
                    continue
                replay.add(int(message.offset() or 0), message.key(), message.value())
            for replay in by_tp.values():
                replay.flush()
        for request in requests:
            owner = request.owner
            if owner and owner != settings.group_id and not settings.take_over:
                raise OwnershipError(request.snapshots, request.partition, owner, settings.group_id)
        log.info("recovered %d partitions in %.2fs", len(requests), time.monotonic() - began)
    finally:
        reader.close()


class _Replay:
    """One partition's replay: pending snapshots and the checkpoint they lead to."""

    def __init__(self, request: RecoveryRequest) -> None:
        self.request = request
        self.checkpoint = request.store.checkpoint()
        self.pending: dict[str, bytes | None] = {}
        self.last = self.checkpoint.changelog_offset
        self.next_command = self.checkpoint.next_command_offset
        self.owner = self.checkpoint.owner

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
            self.last, self.next_command, self.owner = -1, -1, ""
        request.checkpoint, request.owner = self.checkpoint, self.owner
        return self.checkpoint.changelog_offset + 1 < end and end != OFFSET_INVALID

    def add(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        """One changelog record."""
        self.last = offset
        if key == CHECKPOINT_KEY:
            self.next_command, self.owner = decode_checkpoint(value or b"")
        elif key is not None:
            self.pending[key.decode()] = value
        if len(self.pending) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write what was read so far, with its checkpoint, in one atomic local write."""
        if not self.pending and self.last == self.checkpoint.changelog_offset:
            return
        self.checkpoint = Checkpoint(self.last, self.next_command, self.owner)
        self.request.store.write(self.pending, self.checkpoint)
        self.pending = {}
        self.request.checkpoint, self.request.owner = self.checkpoint, self.owner
