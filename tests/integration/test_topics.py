"""`kes topics` against a real broker: create, stay idempotent, report mismatches, fix drift."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from kes.schemas.errors import TopologyError
from kes.topology.admin import apply, describe, plan, run_topics, verify_layout
from kes.topology.layout import AggregateTopics
from kes.topology.plans import ConfigDrift, TopicStatus


@pytest.fixture
def client(kafka_bootstrap: str) -> dict[str, str]:
    return {"bootstrap.servers": kafka_bootstrap}


@pytest.fixture
def topics(unique_name: Callable[[str], str]) -> AggregateTopics:
    return AggregateTopics(unique_name("account"), partitions=4)


def _configs(client: dict[str, str], topic: str) -> dict[str, str]:
    admin = AdminClient(client)  # kept alive until the future resolves
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(30)
    return {key: entry.value for key, entry in entries.items()}


def _eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    """Brokers publish metadata and configs asynchronously: wait until `check` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the cluster never showed the change"
        time.sleep(0.1)


def _partitions(client: dict[str, str], topic: str) -> int:
    return len(AdminClient(client).list_topics(topic, timeout=10).topics[topic].partitions)


def test_plan_of_a_fresh_aggregate_lists_six_to_create_and_exits_zero(
    topics: AggregateTopics, client: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    found = plan(topics, client)
    assert [s.name for s in found.to_create] == [s.name for s in topics.specs()]
    assert found.problems == []
    assert not found.ok
    assert run_topics("plan", topics, client) == 0
    assert "6 to create, run `kes topics apply`" in capsys.readouterr().out  # with .keys


def test_apply_creates_every_topic_with_its_declared_config(
    topics: AggregateTopics, client: dict[str, str]
) -> None:
    result = apply(topics, client)
    assert result.created == tuple(s.name for s in topics.specs())
    assert result.ok and result.problems == [] and result.altered == ()

    events = _configs(client, topics.events)
    assert (events["cleanup.policy"], events["retention.ms"], events["retention.bytes"]) == (
        "compact",
        "-1",
        "-1",
    )
    assert events["min.insync.replicas"] == "1"
    snapshots = _configs(client, topics.snapshots)
    assert (snapshots["cleanup.policy"], snapshots["retention.ms"]) == ("compact", "-1")
    replies = _configs(client, topics.replies)
    assert (replies["cleanup.policy"], replies["retention.ms"]) == ("delete", "3600000")
    dlq = _configs(client, topics.dlq)
    assert (dlq["cleanup.policy"], dlq["retention.ms"]) == ("delete", "-1")
    assert _configs(client, topics.commands)["cleanup.policy"] == "delete"
    for spec in topics.specs():
        assert _partitions(client, spec.name) == 4
    verify_layout(topics, client)  # does not raise


def test_second_apply_changes_nothing(
    topics: AggregateTopics, client: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    apply(topics, client)
    again = apply(topics, client)
    assert again.created == () and again.altered == ()
    assert all(c.statuses == (TopicStatus.OK,) for c in again.checks)
    assert run_topics("apply", topics, client) == 0
    assert "all 6 topics as declared" in capsys.readouterr().out


def test_describe_shows_the_layout_on_the_cluster(
    topics: AggregateTopics, client: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    apply(topics, client)
    text = describe(topics, client)
    assert f"{topics.events}: 4 partitions, replication factor 1" in text
    assert "    cleanup.policy = compact" in text
    assert "    retention.ms = 3600000" in text
    assert "commands 4, events 4, snapshots 4: co-partitioned" in text
    assert "every existing topic has its declared count" in text
    assert run_topics("describe", topics, client) == 0
    assert capsys.readouterr().out.strip() == text


def test_events_topic_with_another_partition_count_is_reported_not_fixed(
    topics: AggregateTopics, client: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    admin = AdminClient(client)
    admin.create_topics([NewTopic(topics.events, 6, 1)])[topics.events].result(30)
    _eventually(lambda: not any(s.name == topics.events for s in plan(topics, client).to_create))

    assert run_topics("plan", topics, client) == 1
    assert run_topics("apply", topics, client) == 1
    out = capsys.readouterr().out
    assert f"problem: {topics.events}: has 6 partitions, declared 4" in out
    assert "PARTITION_MISMATCH" in out
    assert _partitions(client, topics.events) == 6  # never "fixed"
    assert _partitions(client, topics.commands) == 4  # the rest was created

    with pytest.raises(TopologyError) as raised:
        verify_layout(topics, client)
    assert topics.events in str(raised.value)
    assert any(p.startswith(f"{topics.events}: has 6 partitions") for p in raised.value.problems)
    assert "NOT co-partitioned" in describe(topics, client)


def test_missing_topics_fail_verify_layout_naming_them(
    topics: AggregateTopics, client: dict[str, str]
) -> None:
    with pytest.raises(TopologyError) as raised:
        verify_layout(topics, client)
    assert f"{topics.dlq}: missing (run `kes topics apply`)" in raised.value.problems


def test_config_drift_is_reported_and_apply_sets_only_declared_keys(
    topics: AggregateTopics, client: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    apply(topics, client)
    admin = AdminClient(client)
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topics.replies,
        incremental_configs=[
            ConfigEntry("retention.ms", "600000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(30)
    _eventually(lambda: _configs(client, topics.replies)["retention.ms"] == "600000")

    drifted = plan(topics, client)
    (check,) = [c for c in drifted.checks if c.spec.name == topics.replies]
    assert check.statuses == (TopicStatus.CONFIG_DRIFT,)
    assert check.drift == (ConfigDrift("retention.ms", "3600000", "600000"),)
    assert drifted.problems == [f"{topics.replies}: retention.ms=600000 (wanted 3600000)"]
    assert run_topics("plan", topics, client) == 1

    fixed = apply(topics, client)
    assert fixed.altered == ((topics.replies, ConfigDrift("retention.ms", "3600000", "600000")),)
    assert fixed.ok
    assert f"changed {topics.replies}: retention.ms 600000 -> 3600000" in fixed.render()
    configs = _configs(client, topics.replies)
    assert configs["retention.ms"] == "3600000"
    assert configs["segment.ms"] == "7200000"  # not declared, so not touched
    capsys.readouterr()


def test_retention_settings_reach_the_topics_and_a_short_commands_retention_warns(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    client: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """KES_COMMANDS_RETENTION_MS and KES_REPLIES_RETENTION_MS become the topics' retention.ms;
    a commands retention shorter than the outcome horizon is a warning, not a refusal."""
    from kes.streams.cli import main

    prefix = unique_name("ret") + "-"
    monkeypatch.setenv("KES_COMMANDS_RETENTION_MS", str(2 * 3_600_000))
    monkeypatch.setenv("KES_REPLIES_RETENTION_MS", "60000")
    monkeypatch.setenv("KES_OUTCOME_HORIZON_SECONDS", str(24 * 3600))
    cli = ["kes.examples.bank", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]
    assert main(["topics", "plan", *cli]) == 0
    planned = capsys.readouterr()
    assert "warning: the commands topic keeps commands 2 h, less than the outcome horizon" in (
        planned.out
    )
    assert main(["topics", "apply", *cli]) == 0
    capsys.readouterr()
    topics = AggregateTopics("account", prefix=prefix)
    commands = _configs(client, topics.commands)
    assert (commands["cleanup.policy"], commands["retention.ms"]) == ("delete", "7200000")
    replies = _configs(client, topics.replies)
    assert (replies["cleanup.policy"], replies["retention.ms"]) == ("delete", "60000")
    assert _configs(client, topics.events)["retention.ms"] == "-1"  # events are kept for good

    monkeypatch.setenv("KES_COMMANDS_RETENTION_MS", str(24 * 3_600_000))  # = the horizon
    assert main(["topics", "plan", *cli]) == 1  # the change is drift until applied
    replanned = capsys.readouterr().out
    assert "warning" not in replanned
    assert "retention.ms=7200000 (wanted 86400000)" in replanned
    assert main(["topics", "apply", *cli]) == 0
    _eventually(lambda: _configs(client, topics.commands)["retention.ms"] == "86400000")
    assert main(["topics", "plan", *cli]) == 0
