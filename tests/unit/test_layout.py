"""AggregateTopics declares an aggregate's five topics and refuses a layout that cannot work."""

from __future__ import annotations

import dataclasses

import pytest

from kes.schemas.errors import ConfigurationError
from kes.topology.layout import AggregateTopics, TopicSpec


def test_topic_names_follow_the_aggregate_name() -> None:
    topics = AggregateTopics("account")
    assert (topics.commands, topics.events, topics.snapshots, topics.replies, topics.dlq) == (
        "account.commands",
        "account.events",
        "account.snapshots",
        "account.replies",
        "account.dlq",
    )


def test_defaults() -> None:
    topics = AggregateTopics("account")
    assert topics.partitions == 12
    assert topics.replication_factor == 1
    assert topics.min_insync_replicas == 1
    assert topics.reply_retention_ms == 3_600_000


def test_specs_declare_each_topic_config() -> None:
    specs = {s.name: s for s in AggregateTopics("account", min_insync_replicas=1).specs()}
    assert list(specs) == [
        "account.commands",
        "account.events",
        "account.snapshots",
        "account.replies",
        "account.dlq",
        "account.keys",
    ]
    assert specs["account.commands"].config == {
        "cleanup.policy": "delete",
        "retention.ms": "604800000",  # declared now (was the broker's default, also 7 days)
        "min.insync.replicas": "1",
    }
    compacted_forever = {
        "cleanup.policy": "compact",
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "min.insync.replicas": "1",
    }
    assert specs["account.events"].config == compacted_forever
    assert specs["account.snapshots"].config == compacted_forever
    assert specs["account.replies"].config == {
        "cleanup.policy": "delete",
        "retention.ms": "3600000",
        "min.insync.replicas": "1",
    }
    assert specs["account.dlq"].config == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "min.insync.replicas": "1",
    }
    assert specs["account.keys"].config == {  # an erased key leaves the disks within a day
        **compacted_forever,
        "max.compaction.lag.ms": "86400000",
    }


def test_all_topics_are_co_partitioned_with_the_declared_replication() -> None:
    specs = AggregateTopics("account", partitions=6, replication_factor=3, min_insync_replicas=2)
    for spec in specs.specs():
        assert (spec.partitions, spec.replication_factor) == (6, 3)
        assert spec.config["min.insync.replicas"] == "2"


def test_reply_retention_is_configurable() -> None:
    spec = AggregateTopics("account", reply_retention_ms=60_000).specs()[3]
    assert spec == TopicSpec(
        "account.replies",
        12,
        1,
        {"cleanup.policy": "delete", "retention.ms": "60000", "min.insync.replicas": "1"},
    )


def test_is_frozen() -> None:
    topics = AggregateTopics("account")
    with pytest.raises(dataclasses.FrozenInstanceError):
        topics.partitions = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "aggregate name"),
        ({"name": "acc ount"}, "aggregate name"),
        ({"name": "account/x"}, "aggregate name"),
        ({"name": "a" * 240}, "too long"),
        ({"name": "account", "partitions": 0}, "partitions"),
        ({"name": "account", "replication_factor": 0}, "replication_factor"),
        ({"name": "account", "min_insync_replicas": 2}, "min_insync_replicas"),
        ({"name": "account", "min_insync_replicas": 0}, "min_insync_replicas"),
        ({"name": "account", "reply_retention_ms": 0}, "reply_retention_ms"),
    ],
)
def test_invalid_layouts_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AggregateTopics(**kwargs)  # type: ignore[arg-type]


def test_names_with_dots_dashes_and_underscores_are_fine() -> None:
    assert AggregateTopics("bank.account_v2-eu").events == "bank.account_v2-eu.events"
