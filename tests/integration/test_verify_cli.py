"""`kes verify` against a real broker: a clean log passes, a corrupted one names its entities."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from google.protobuf.message import Message

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import event_key, pack
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Snapshot
from kes.streams.cli import main
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.workers import AppCluster


def _event(topics: AggregateTopics, entity: str, revision: int, event: Message, cid: str) -> tuple:
    env = EventEnvelope(
        entity_id=entity,
        revision=revision,
        payload=pack(event),
        command_id=cid,
        aggregate="account",
    )
    p = partition_for(entity, topics.partitions)
    return topics.events, env.SerializeToString(), event_key(entity, revision), p


def _snapshot(topics: AggregateTopics, entity: str, revision: int, state: Message) -> tuple:
    snap = Snapshot(entity_id=entity, revision=revision, state=pack(state))
    p = partition_for(entity, topics.partitions)
    return topics.snapshots, snap.SerializeToString(), entity.encode(), p


def _write(bootstrap: str, records: list[tuple]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for topic, value, key, partition in records:
        producer.produce(topic, value, key, partition=partition)
    assert producer.flush(30) == 0


def test_verify_passes_a_clean_log_and_names_entities_with_a_repeat_or_a_gap(
    app_cluster: Callable[..., AppCluster], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    settings = cluster.settings
    topics = settings.topics("account")
    argv = [
        "verify", "kes.examples.bank", "account", "-b", settings.bootstrap_servers,
        "--partitions", "2", "--topic-prefix", settings.topic_prefix,
    ]  # fmt: skip
    opened = bank_pb2.AccountOpened(account_id="a", owner="ann", balance=100)
    credited = bank_pb2.AccountCredited(account_id="a", amount=5, balance=105)
    state = bank_pb2.Account(account_id="a", owner="ann", balance=105, open=True)
    clean = [
        _event(topics, "a", 1, opened, "c1"),
        _event(topics, "a", 2, credited, "c2"),
        _snapshot(topics, "a", 2, state),
    ]
    _write(settings.bootstrap_servers, clean)
    assert main(argv) == 0
    assert "1 entities, 2 events, 1 snapshots: OK" in capsys.readouterr().out

    b_opened = bank_pb2.AccountOpened(account_id="b", owner="bob", balance=1)
    corrupt = [
        _event(topics, "a", 2, credited, "c3"),  # a second revision 2, from another command
        _event(topics, "b", 1, b_opened, "c4"),
        _event(topics, "b", 3, credited, "c5"),  # a gap: no revision 2
        _snapshot(topics, "b", 3, bank_pb2.Account(account_id="b")),
    ]
    _write(settings.bootstrap_servers, corrupt)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "a: revisions are not 1..n: 1,2,2" in out
    assert "b: revisions are not 1..n: 1,3" in out
    assert "violations in 2 entities: a, b" in out
