"""The per-partition Kafka adapter: one transactional producer, recovery, and the batch write.

The snapshot changelog is the truth and the local store its cache. A partition's producer has a
transactional id derived from the group and the partition, so a new owner's `init_transactions`
fences the old one (a zombie after a rebalance or a pause cannot write) and aborts whatever it
left open before this owner reads the changelog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from schemas.errors import TransactionError
from stores.snapshots import Checkpoint, PartitionSnapshots
from streams.batch import CHECKPOINT_KEY, BatchResult, Entity, OutRecord, reply_records
from streams.kafkaconfig import aiokafka_options
from streams.settings import Guarantee, Settings
from topology.layout import AggregateTopics

__all__ = ["PartitionWriter", "transactional_id"]

log = logging.getLogger(__name__)

_RECOVERY_CHUNK = 5_000
"""Changelog records per local write during recovery. With the small fetches below, it bounds
what a partition's recovery holds in memory: every partition of a worker recovers at once."""


def transactional_id(group_id: str, topic: str, partition: int) -> str:
    """Stable per (group, commands partition): the next owner of the partition fences the last."""
    return f"{group_id}-{topic}-{partition}"


class PartitionWriter:
    """Writes one partition's batches atomically: events, snapshots, replies, offsets."""

    def __init__(
        self,
        settings: Settings,
        topics: AggregateTopics,
        partition: int,
        store: PartitionSnapshots,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.partition = partition
        self.store = store
        self.exactly_once = settings.guarantee is Guarantee.EXACTLY_ONCE
        self._producer: AIOKafkaProducer | None = None
        self.closed = False

    async def start(self) -> None:
        """Create the producer; with exactly-once, `init_transactions` fences any older owner."""
        options: dict[str, Any] = aiokafka_options(self.settings)
        if self.exactly_once:
            options["transactional_id"] = transactional_id(
                self.settings.group_id, self.topics.commands, self.partition
            )
            options["transaction_timeout_ms"] = self.settings.transaction_timeout_ms
        producer = AIOKafkaProducer(
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=512 * 1024,
            **options,
        )
        await producer.start()
        self._producer = producer

    async def recover(self) -> Checkpoint:
        """Bring the local store up to the committed changelog; returns the resulting checkpoint.

        1. read the local checkpoint (the changelog offset the local files reflect);
        2. if it is past the changelog's end (another cluster, a recreated topic), start cold;
        3. replay committed changelog records after it (read_committed; aborted data is skipped)
           into the local store in chunks, each chunk with its checkpoint in one atomic write.
        """
        tp = TopicPartition(self.topics.snapshots, self.partition)
        consumer = AIOKafkaConsumer(
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=4 * 1024 * 1024,
            max_partition_fetch_bytes=1024 * 1024,
            **aiokafka_options(self.settings),
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            checkpoint = self.store.checkpoint()
            if checkpoint.changelog_offset >= end:
                log.warning("%s: local state is ahead of the changelog; rebuilding cold", tp)
                self.store.clear()
                checkpoint = Checkpoint()
            start = checkpoint.changelog_offset + 1
            if start >= end:
                return checkpoint
            consumer.seek(tp, start)
            began, replayed = time.monotonic(), 0
            pending: dict[str, bytes | None] = {}
            next_command = checkpoint.next_command_offset
            last = checkpoint.changelog_offset
            while await consumer.position(tp) < end:
                batches = await consumer.getmany(tp, timeout_ms=1000, max_records=_RECOVERY_CHUNK)
                for record in batches.get(tp, ()):
                    last = record.offset
                    if record.key == CHECKPOINT_KEY:
                        next_command = int.from_bytes(record.value or b"", "big", signed=True)
                    elif record.key is not None:
                        pending[record.key.decode()] = record.value
                    replayed += 1
                if pending or last != checkpoint.changelog_offset:
                    checkpoint = Checkpoint(last, next_command)
                    self.store.write(pending, checkpoint)
                    pending = {}
            log.info(
                "%s: replayed %d changelog records in %.2fs",
                tp, replayed, time.monotonic() - began,
            )  # fmt: skip
            return checkpoint
        finally:
            await consumer.stop()

    async def write(self, result: BatchResult) -> None:
        """Write one batch; on return it is committed to Kafka and to the local store.

        1. begin the partition's transaction;
        2. send the events, dead letters, forwarded commands and the snapshots of entities that
           existed before the batch, and add the next command offset to the transaction (the
           group's committed offset) without waiting: those two round trips to the
           coordinators overlap the records' delivery;
        3. only if the batch needs the events' offsets (a new entity's snapshot records its
           first event's offset; replies carry them), wait for them, then send those snapshots
           and the replies;
        4. send the checkpoint record (next command offset), the batch's last changelog record;
        5. commit once every record and the offsets are in: all of it becomes visible to
           read_committed readers at once;
        6. write the snapshots and the checkpoint to the local store in one atomic write
           (a crash between 5 and 6 only leaves the cache behind; recovery replays it).
        Raises TransactionError when the transaction failed and was aborted, or was fenced.
        """
        producer = self._producer
        if producer is None or self.closed:
            raise TransactionError(self.topics.commands, self.partition, "partition is closed")
        offsets_added: asyncio.Future[None] | None = None
        try:
            if self.exactly_once:
                await producer.begin_transaction()
            out = _Outbox(producer)
            events = [await out.add(r) for r in result.events]
            for record in (*result.dead_letters, *result.forwards):
                await out.add(record)
            snapshots: dict[str, bytes] = {}
            for entity_id, entity in result.changed.items():
                if entity_id not in result.first_events:
                    await out.add(self._snapshot(snapshots, entity_id, entity))
            if self.exactly_once:
                commands_tp = TopicPartition(self.topics.commands, self.partition)
                offsets_added = asyncio.ensure_future(
                    producer.send_offsets_to_transaction(
                        {commands_tp: result.next_command_offset}, self.settings.group_id
                    )
                )
            if result.first_events or result.replies:
                await out.flush()
                offsets = [await out.offset(slot) for slot in events]
                for entity_id, index in result.first_events.items():
                    entity = result.changed[entity_id]
                    entity.first_event_offset = offsets[index]
                    await out.add(self._snapshot(snapshots, entity_id, entity))
                for reply in reply_records(result, offsets, self.topics.replies, self.partition):
                    await out.add(reply)
            marker = await out.add(
                OutRecord(
                    self.topics.snapshots,
                    self.partition,
                    CHECKPOINT_KEY,
                    result.next_command_offset.to_bytes(8, "big", signed=True),
                    [],
                )
            )
            await out.flush()
            await asyncio.gather(*out.sent)
            changelog_offset = await out.offset(marker)
            if offsets_added is not None:
                await offsets_added
                await producer.commit_transaction()
        except ProducerFenced as exc:
            _discard(offsets_added)
            self.closed = True
            raise TransactionError(
                self.topics.commands, self.partition, f"fenced by a newer owner: {exc}"
            ) from exc
        except (KafkaError, OSError) as exc:
            _discard(offsets_added)
            await self._abort(producer)
            raise TransactionError(
                self.topics.commands, self.partition, f"transaction aborted: {exc!r}"
            ) from exc
        except BaseException:  # cancelled (the partition's actor stops): no loose task behind
            _discard(offsets_added)
            raise
        if self.closed:  # revoked while committing: the next owner replays the changelog
            raise TransactionError(self.topics.commands, self.partition, "closed during commit")
        self.store.write(snapshots, Checkpoint(changelog_offset, result.next_command_offset))

    def _snapshot(self, encoded: dict[str, bytes], entity_id: str, entity: Entity) -> OutRecord:
        """An entity's snapshot record for the changelog; its bytes are kept for the local store."""
        value = encoded[entity_id] = entity.snapshot().SerializeToString()
        return OutRecord(self.topics.snapshots, self.partition, entity_id.encode(), value, [])

    async def _abort(self, producer: AIOKafkaProducer) -> None:
        if not self.exactly_once:
            return
        try:
            if producer._txn_manager is not None and producer._txn_manager.is_in_transaction():
                await producer.abort_transaction()
        except Exception as exc:  # the producer is being torn down anyway
            log.warning("%s[%d]: abort failed: %r", self.topics.commands, self.partition, exc)

    async def close(self) -> None:
        """Abort an open transaction and stop the producer; the partition no longer writes."""
        self.closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._abort(producer)
            await producer.stop()


class _Slot(NamedTuple):
    """Where a record went: its batch and its place in it (its offset is the batch's + index)."""

    batch: _Batch
    position: int


class _Batch:
    """One aiokafka record batch for a topic-partition, and its future once it is sent."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.future: asyncio.Future[Any] | None = None


class _Outbox:
    """A transaction's records, appended to one batch per topic-partition, sent with send_batch.

    `producer.send` costs a coroutine, a metadata check and a future per record; a batch has
    one future, and a record's offset is the batch's base offset plus its index in the batch.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], _Batch] = {}
        self.sent: list[asyncio.Future[Any]] = []

    async def add(self, record: OutRecord) -> _Slot:
        """Append a record to its topic-partition's open batch (sending a full one first)."""
        where = (record.topic, record.partition)
        for _ in range(2):
            batch = self._open.get(where)
            if batch is None:
                batch = self._open[where] = _Batch(self._producer.create_batch())
            headers: Sequence[tuple[str, bytes]] = record.headers
            meta = batch.builder.append(
                timestamp=None, key=record.key, value=record.value, headers=list(headers)
            )
            if meta is not None:
                return _Slot(batch, meta.offset)
            await self._send(where)
        raise KafkaError(f"a record of {len(record.value)} bytes does not fit in a batch")

    async def flush(self) -> None:
        """Send every open batch."""
        for where in list(self._open):
            await self._send(where)

    async def offset(self, slot: _Slot) -> int:
        """A sent record's offset, once its batch is written."""
        assert slot.batch.future is not None, "flush before asking for offsets"
        metadata = await slot.batch.future
        return int(metadata.offset) + slot.position

    async def _send(self, where: tuple[str, int]) -> None:
        batch = self._open.pop(where)
        batch.builder.close()
        topic, partition = where
        batch.future = await self._producer.send_batch(batch.builder, topic, partition=partition)
        self.sent.append(batch.future)


def _discard(future: asyncio.Future[None] | None) -> None:
    """Stop waiting for a transaction step whose transaction is being given up."""
    if future is not None and not future.done():
        future.cancel()
    elif future is not None and not future.cancelled():
        future.exception()  # retrieved: the error that matters is being raised
