"""read_events against a real broker: committed events only, entity filter, adapters, follow.

Events are written here the way the worker writes them (transactional producer, key
`event_key(entity, revision)`, the entity's partition, the kes headers), since the worker is not
part of these tests.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import unpack
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.client.reading import read_events
from kes.streams.core.adapters import EventAdapters
from kes.topology.admin import apply
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.standins import EventWriter, event

PARTITIONS = 4
LEGACY = "kestest.reading.LegacyCredited"


@pytest.fixture
def topics(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> AggregateTopics:
    declared = AggregateTopics(unique_name("acct"), partitions=PARTITIONS)
    apply(declared, {"bootstrap.servers": kafka_bootstrap})
    return declared


def same_partition_ids() -> tuple[str, str]:
    """Two entity ids on one partition, so filtering by entity is more than picking a partition."""
    ids = (f"acc-{i}" for i in itertools.count())
    first = next(ids)
    other = next(i for i in ids if partition_for(i, PARTITIONS) == partition_for(first, PARTITIONS))
    return first, other


A, B = same_partition_ids()


def credited(amount: int) -> bank_pb2.AccountCredited:
    return bank_pb2.AccountCredited(amount=amount, balance=amount)


@pytest.fixture
def history(kafka_bootstrap: str, topics: AggregateTopics) -> Iterator[EventWriter]:
    """A, B and C's events in two committed transactions around an aborted one."""
    writer = EventWriter(kafka_bootstrap, topics)
    writer.write(
        event(A, 1, bank_pb2.AccountOpened(owner="Ann")),
        event(B, 1, bank_pb2.AccountOpened(owner="Bob")),
        event("acc-c", 1, bank_pb2.AccountOpened(owner="Cy")),
        event(A, 2, credited(5)),
    )
    writer.write(event(A, 3, credited(666)), event(B, 2, credited(666)), commit=False)
    legacy = any_pb2.Any(type_url=f"type.googleapis.com/{LEGACY}", value=b"7")
    writer.write(event(A, 3, legacy), event(B, 2, credited(9)))
    yield writer


def summary(envs: Iterator[EventEnvelope]) -> list[tuple[str, int, str]]:
    return [(e.entity_id, e.revision, e.event_type) for e in envs]


def test_reads_committed_events_and_stops_at_the_end(
    kafka_bootstrap: str, topics: AggregateTopics, history: EventWriter
) -> None:
    events = list(read_events(topics, kafka_bootstrap, timeout=10))
    assert len(events) == 6
    for entity in (A, B, "acc-c"):
        revisions = [e.revision for e in events if e.entity_id == entity]
        assert revisions == sorted(revisions)
    assert all(e.payload.value != credited(666).SerializeToString() for e in events)
    assert ("acc-c", 1, "bank.v1.AccountOpened") in summary(iter(events))


def test_entity_filter_reads_one_entity_from_a_shared_partition(
    kafka_bootstrap: str, topics: AggregateTopics, history: EventWriter
) -> None:
    assert summary(read_events(topics, kafka_bootstrap, entity_id=B, timeout=10)) == [
        (B, 1, "bank.v1.AccountOpened"),
        (B, 2, "bank.v1.AccountCredited"),
    ]
    a_events = list(read_events(topics, kafka_bootstrap, entity_id=A, timeout=10))
    assert [e.revision for e in a_events] == [1, 2, 3]
    assert a_events[2].event_type == LEGACY


def test_adapters_are_applied(
    kafka_bootstrap: str, topics: AggregateTopics, history: EventWriter
) -> None:
    adapters = EventAdapters()

    @adapters.adapter(LEGACY, packed=True)
    def legacy_credited(old: Message) -> Message:
        assert isinstance(old, any_pb2.Any)
        return credited(int(old.value.decode()))

    events = list(read_events(topics, kafka_bootstrap, entity_id=A, adapters=adapters, timeout=10))
    assert unpack(events[2].payload) == credited(7)
    assert events[2].event_type == "bank.v1.AccountCredited"
    assert (events[2].revision, events[2].command_id) == (3, f"cmd-{A}-3")


def test_start_offsets_skip_what_is_known(
    kafka_bootstrap: str, topics: AggregateTopics, history: EventWriter
) -> None:
    partition = partition_for(A, PARTITIONS)
    everything = list(read_events(topics, kafka_bootstrap, entity_id=A, timeout=10))
    assert len(everything) == 3
    # A's partition: A1 B1 A2, marker, aborted A3 B2, marker, A3 B2, marker; A2 is at offset 2.
    later = read_events(
        topics, kafka_bootstrap, entity_id=A, start_offsets={partition: 2}, timeout=10
    )
    assert [e.revision for e in later] == [2, 3]


def test_not_following_ignores_an_open_transaction_and_later_events(
    kafka_bootstrap: str, topics: AggregateTopics, history: EventWriter
) -> None:
    history.producer.begin_transaction()
    history.produce([event(A, 4, credited(1))])
    history.producer.flush(30)
    try:
        events = list(read_events(topics, kafka_bootstrap, entity_id=A, timeout=10))
        assert [e.revision for e in events] == [1, 2, 3]
        assert list(read_events(topics, kafka_bootstrap, from_beginning=False, timeout=10)) == []
    finally:
        history.producer.abort_transaction(30)


def test_follow_sees_events_written_later(
    kafka_bootstrap: str, topics: AggregateTopics, history: EventWriter
) -> None:
    seen: list[EventEnvelope] = []
    got_history = threading.Event()

    def follow() -> None:
        events = read_events(topics, kafka_bootstrap, entity_id=A, follow=True)
        for env in events:
            seen.append(env)
            if len(seen) == 3:
                got_history.set()
            if len(seen) == 5:
                break
        events.close()  # type: ignore[attr-defined]

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert got_history.wait(30)
    history.write(event(A, 4, credited(1)), event(B, 3, credited(1)))
    history.write(event(A, 5, credited(2)))
    reader.join(30)
    assert not reader.is_alive()
    assert [e.revision for e in seen] == [1, 2, 3, 4, 5]
