"""Operating a projection: its progress against the log (lag), and rebuilding its read model.

Both talk to Kafka with confluent-kafka clients that never join the projection's group, so
`status` can run while the projection runs; `rebuild` refuses to (see `rebuild`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from kes.schemas.errors import AdminError, KesError
from kes.stores.readmodels import ReadModelStore
from kes.stores.sqlmodel import SqlReadModel
from kes.streams.config.settings import Settings
from kes.streams.kafka.config import confluent_config
from kes.streams.kafka.watermarks import watermarks
from kes.streams.projections.projection import AnyProjection, Reactor

__all__ = ["PartitionProgress", "dead_letter_count", "rebuild", "status"]

_TIMEOUT = 30.0


@dataclass(frozen=True)
class PartitionProgress:
    """One events partition: where the log ends, and how far the projection got."""

    topic: str
    partition: int
    end: int
    """The log's end (last stable offset) now."""
    stored: int | None
    """The offset stored with the read model (None: unknown here, or nothing applied)."""
    committed: int | None
    """The group's committed offset in Kafka (None: none yet)."""

    @property
    def lag(self) -> int | None:
        """Records between the stored (else committed) offset and the end."""
        done = self.stored if self.stored is not None else self.committed
        return None if done is None else max(0, self.end - done)


def _consumer(settings: Settings, group_id: str | None = None) -> Any:
    return Consumer(
        confluent_config(
            settings,
            **{
                "group.id": group_id or f"kes-admin-{uuid.uuid4().hex}",  # never joined
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
        )
    )


def _partitions(consumer: Any, topic: str) -> int:
    metadata = consumer.list_topics(topic, timeout=_TIMEOUT).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise KesError(f"topic {topic} does not exist: create the aggregate's topics (kes topics)")
    return len(metadata.partitions)


def _ends(consumer: Any, topics: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    found = {}
    for topic in topics:
        for partition, marks in watermarks(consumer, topic, _partitions(consumer, topic)).items():
            found[(topic, partition)] = marks
    return found


def _topics(projection: AnyProjection, settings: Settings) -> list[str]:
    return [settings.topics(aggregate).events for aggregate in projection.aggregates]


def status(
    projection: AnyProjection,
    settings: Settings,
    stored: Mapping[tuple[str, int], int] | None = None,
) -> list[PartitionProgress]:
    """Each partition's end, stored offset (from `stored`, if given) and committed offset."""
    consumer = _consumer(settings, projection.group_id(settings.topic_prefix))
    try:
        ends = _ends(consumer, _topics(projection, settings))
        committed = consumer.committed(
            [TopicPartition(t, p) for t, p in sorted(ends)], timeout=_TIMEOUT
        )
    finally:
        consumer.close()
    in_kafka = {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0}
    return [
        PartitionProgress(t, p, high, (stored or {}).get((t, p)), in_kafka.get((t, p)))
        for (t, p), (_, high) in sorted(ends.items())
    ]


def dead_letter_count(projection: AnyProjection, settings: Settings) -> int:
    """Records in the projection's dead-letter topic (0 when it does not exist yet)."""
    consumer = _consumer(settings)
    topic = projection.dlq_topic(settings.topic_prefix)
    try:
        metadata = consumer.list_topics(topic, timeout=_TIMEOUT).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        marks = watermarks(consumer, topic, len(metadata.partitions))
        return sum(high - low for low, high in marks.values())
    finally:
        consumer.close()


def rebuild(
    projection: AnyProjection,
    settings: Settings,
    store: ReadModelStore | SqlReadModel,
    *,
    from_timestamp_ms: int | None = None,
    refire: bool = False,
) -> dict[tuple[str, int], int]:
    """Empty the read model and rewind the projection, which then catches up when run again.

    1. Refuse while the group has members: every `kes projection run` of it must be stopped
       (the local store is locked by a running process on this machine anyway).
    2. Find where to restart: each partition's first offset, or with `from_timestamp_ms` the
       first offset at or after that time (the end, if nothing is that recent).
    3. Clear the store, then store the restart offsets in it: this is what the projection
       resumes from. (A crash between the two leaves an empty store, which restarts from the
       beginning; run the rebuild again to restart from a time.)
    4. Set the group's committed offsets in Kafka to the same offsets, for lag tools.

    Returns the restart offsets. With several processes (each its own data dir), rebuild in
    each. Raises KesError when the group is active, AdminError when Kafka refuses the reset.
    A reactor's rebuild re-runs its side effects: refused unless `refire` says so.
    """
    group = projection.group_id(settings.topic_prefix)
    if isinstance(projection, Reactor) and not refire:
        raise KesError(
            f"{projection.name} is a reactor: rebuilding it runs its side effects again for "
            "every event from the restart point; pass --refire if that is what you want"
        )
    admin = AdminClient(confluent_config(settings))
    described = admin.describe_consumer_groups([group], request_timeout=_TIMEOUT)[group]
    members = _result(described, f"describe group {group}").members
    if members:
        raise KesError(
            f"projection group {group} has {len(members)} running member(s): stop every "
            "`kes projection run` of it before rebuilding"
        )
    consumer = _consumer(settings)
    try:
        ends = _ends(consumer, _topics(projection, settings))
        restart = {where: low for where, (low, _) in ends.items()}
        if from_timestamp_ms is not None:
            asked = [TopicPartition(t, p, from_timestamp_ms) for t, p in sorted(ends)]
            for tp in consumer.offsets_for_times(asked, timeout=_TIMEOUT):
                where = (tp.topic, tp.partition)
                restart[where] = tp.offset if tp.offset >= 0 else ends[where][1]
    finally:
        consumer.close()
    store.clear()
    store.write({}, restart)
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(t, p, o) for (t, p), o in sorted(restart.items())]
    )
    futures = admin.alter_consumer_group_offsets([request], request_timeout=_TIMEOUT)
    for future in futures.values():
        _result(future, f"reset the offsets of group {group}")
    return restart


def _result(future: Any, what: str) -> Any:
    try:
        return future.result(timeout=_TIMEOUT)
    except Exception as exc:
        raise AdminError(f"{what}: {exc}") from exc
