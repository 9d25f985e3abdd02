"""One entity's history (the seeds' ReadStream), without scanning the whole events topic.

The worker records, in each entity's snapshot, the offset of its first event. The snapshot
changelog is compacted to one record per entity, so finding that offset reads the entity's
changelog partition (one record per entity), and its history is then read from that offset of
its events partition instead of from the beginning.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from kes.schemas.codec import decode_snapshot
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Snapshot
from kes.streams.client.reading import read_events
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.keyring import Keyring
from kes.streams.kafka.readback import read_topic
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for

__all__ = ["find_snapshot", "read_history"]


def find_snapshot(
    topics: AggregateTopics, entity_id: str, client_config: Mapping[str, str]
) -> Snapshot | None:
    """The entity's latest committed snapshot from the snapshot changelog, or None."""
    partition = partition_for(entity_id, topics.partitions)
    key = entity_id.encode()
    latest: bytes | None = None
    for p, record_key, value in read_topic(
        topics.snapshots, topics.partitions, client_config, only=[partition]
    ):
        if p == partition and record_key == key:
            latest = value
    return None if latest is None else decode_snapshot(latest)


def read_history(
    topics: AggregateTopics,
    bootstrap_servers: str,
    entity_id: str,
    *,
    follow: bool = False,
    adapters: EventAdapters | None = None,
    client_config: Mapping[str, str] | None = None,
    keys: Keyring | None = None,
) -> Iterator[EventEnvelope]:
    """The entity's events in revision order, read from its first event's offset onwards."""
    config = {"bootstrap.servers": bootstrap_servers, **(client_config or {})}
    snapshot = find_snapshot(topics, entity_id, config)
    starts = None
    if snapshot is not None and snapshot.first_event_offset >= 0:
        starts = {partition_for(entity_id, topics.partitions): snapshot.first_event_offset}
    return read_events(
        topics,
        bootstrap_servers,
        entity_id=entity_id,
        from_beginning=True,
        follow=follow,
        adapters=adapters,
        client_config=client_config,
        start_offsets=starts,
        keys=keys,
    )
