"""Reading an aggregate's event log, for downstream services, tools and the `kes events` command.

Reads `<aggregate>.events` with `isolation.level=read_committed`, so only events of committed
worker transactions are seen, and without a consumer group (partitions are assigned; nothing is
committed), so reading never disturbs anyone. Events come out decoded, with event adapters
applied. Order: by offset within a partition, and so by revision within an entity; partitions
interleave. Tombstones (an erased entity's events, see `kes erase`) are skipped; with a keyring,
sealed personal fields are opened before the adapters run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping

from confluent_kafka import Consumer, KafkaError, TopicPartition

from kes.schemas.codec import decode_event, parse_event_key
from kes.schemas.errors import DecodeError, KesError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.keyring import Keyring
from kes.streams.kafka.watermarks import watermarks
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for

__all__ = ["read_events"]

_POLL_SECONDS = 0.5


def read_events(
    topics: AggregateTopics,
    bootstrap_servers: str,
    *,
    entity_id: str | None = None,
    from_beginning: bool = True,
    follow: bool = False,
    adapters: EventAdapters | None = None,
    client_config: Mapping[str, str] | None = None,
    start_offsets: Mapping[int, int] | None = None,
    timeout: float = 30.0,
    keys: Keyring | None = None,
) -> Iterator[EventEnvelope]:
    """Yield the aggregate's committed events, decoded and adapted.

    - `entity_id`: read only that entity's partition and yield only its events.
    - `from_beginning`: start at each partition's first offset, else at its end (new events
      only, which makes sense only with `follow`).
    - `start_offsets`: `{partition: offset}` to start at instead, where known (for example from
      an index of where an entity's events begin); overrides `from_beginning` for those partitions.
    - `follow`: keep waiting for new events forever; otherwise stop at the end offsets taken when
      reading starts (the last stable offsets, so an open transaction never holds reading up).
    - `timeout`: seconds to wait for the broker's offsets and, when not following, for the next
      record before raising KesError.
    - `keys`: opens sealed personal fields (kes.streams.kafka.keyreader.keyring_for); without it
      they stay sealed (empty in the payload, the ciphertext in `sealed`).

    The consumer is created on the first `next()` and closed when the iterator is exhausted or
    closed. Raises DecodeError (naming topic, partition and offset) for a record that is not an
    event envelope, and TopologyError when the events topic does not exist.
    """
    topic = topics.events
    wanted = (
        [partition_for(entity_id, topics.partitions)]
        if entity_id is not None
        else list(range(topics.partitions))
    )
    consumer = Consumer(
        {
            **(client_config or {}),
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"kes-reader-{uuid.uuid4().hex}",  # required; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        marks = watermarks(consumer, topic, topics.partitions, timeout)
        starts = {p: _start(p, marks[p], from_beginning, start_offsets) for p in wanted}
        ends = {p: marks[p][1] for p in wanted}
        active = set(wanted) if follow else {p for p in wanted if starts[p] < ends[p]}
        if not active:
            return
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(active)])
        last_progress = time.monotonic()
        while active:
            record = consumer.poll(_POLL_SECONDS)
            if record is None:
                if not follow and time.monotonic() - last_progress > timeout:
                    raise KesError(
                        f"reading {topic} stalled: nothing arrived for {timeout:g}s before the "
                        f"end offsets {ends} (is the broker reachable?)"
                    )
                continue
            last_progress = time.monotonic()
            partition: int = record.partition() or 0
            error = record.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if not follow:
                        active.discard(partition)
                    continue
                if error.fatal():
                    raise KesError(f"reading {topic} failed: {error.str()}")
                continue
            if partition not in active:
                continue
            offset: int = record.offset() or 0
            if not follow:
                if offset >= ends[partition]:
                    active.discard(partition)
                    continue
                if offset >= ends[partition] - 1:
                    active.discard(partition)
            env = _event(record.key(), record.value(), entity_id, topic, partition, offset)
            if env is None:
                continue
            if keys is not None:
                keys.open_event(env)
            yield adapters.adapt(env) if adapters is not None else env
    finally:
        consumer.close()


def _start(
    partition: int,
    marks: tuple[int, int],
    from_beginning: bool,
    start_offsets: Mapping[int, int] | None,
) -> int:
    low, high = marks
    if start_offsets is not None and partition in start_offsets:
        return min(max(start_offsets[partition], low), high)
    return low if from_beginning else high


def _event(
    key: bytes | None,
    value: bytes | None,
    entity_id: str | None,
    topic: str,
    partition: int,
    offset: int,
) -> EventEnvelope | None:
    """Decode one record; None for a tombstone, or when it belongs to another entity than the
    one wanted."""
    if value is None:
        return None
    if entity_id is not None and key:
        try:
            if parse_event_key(key)[0] != entity_id:
                return None
        except DecodeError:
            pass  # Not a kes event key: the envelope decides below.
    try:
        env = decode_event(value)
    except DecodeError as exc:
        raise DecodeError(exc.reason, f"{topic}[{partition}]@{offset}: {exc.detail}") from exc
    if entity_id is not None and env.entity_id != entity_id:
        return None
    return env
