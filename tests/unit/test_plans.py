"""A Plan compares declared topics with what the cluster has, and says so in plain lines."""

from __future__ import annotations

from kes.topology.layout import AggregateTopics, TopicSpec
from kes.topology.plans import ConfigDrift, Plan, TopicCheck, TopicState, TopicStatus

EVENTS = TopicSpec("account.events", 12, 3, {"cleanup.policy": "compact", "retention.ms": "-1"})


def _state(partitions: int = 12, rf: int = 3, **config: str) -> TopicState:
    declared = {"cleanup.policy": "compact", "retention.ms": "-1"}
    return TopicState("account.events", partitions, rf, {**declared, **config})


def test_a_topic_as_declared_is_ok() -> None:
    check = TopicCheck(EVENTS, _state())
    assert check.statuses == (TopicStatus.OK,)
    assert check.problems == []
    assert Plan((check,)).ok


def test_a_missing_topic_is_to_create_not_a_problem() -> None:
    found = Plan((TopicCheck(EVENTS, None),))
    assert found.to_create == [EVENTS]
    assert found.problems == []
    assert not found.ok
    assert found.render().endswith("1 to create, run `kes topics apply`")


def test_every_mismatch_is_named() -> None:
    check = TopicCheck(EVENTS, _state(partitions=6, rf=1, **{"retention.ms": "604800000"}))
    assert check.statuses == (
        TopicStatus.PARTITION_MISMATCH,
        TopicStatus.REPLICATION_MISMATCH,
        TopicStatus.CONFIG_DRIFT,
    )
    assert check.drift == (ConfigDrift("retention.ms", "-1", "604800000"),)
    assert check.problems == [
        "account.events: has 6 partitions, declared 12",
        "account.events: replication factor is 1, declared 3",
        "account.events: retention.ms=604800000 (wanted -1)",
    ]
    text = Plan((check,)).render()
    assert "6 (want 12)" in text
    assert "kes never changes a partition count" in text


def test_only_declared_keys_count_as_drift() -> None:
    state = TopicState("account.events", 12, 3, {"cleanup.policy": "compact", "retention.ms": None})
    assert TopicCheck(EVENTS, state).drift == (ConfigDrift("retention.ms", "-1", None),)


def test_render_lists_topics_and_what_apply_did() -> None:
    specs = AggregateTopics("account").specs()
    checks = tuple(
        TopicCheck(s, TopicState(s.name, s.partitions, s.replication_factor, dict(s.config)))
        for s in specs
    )
    done = Plan(
        checks,
        created=("account.dlq",),
        altered=(("account.replies", ConfigDrift("retention.ms", "3600000", "60000")),),
    )
    lines = done.render().splitlines()
    assert lines[0].split() == ["TOPIC", "PARTITIONS", "RF", "STATUS"]
    assert lines[1].split() == ["account.commands", "12", "1", "OK"]
    assert "created account.dlq" in lines
    assert "changed account.replies: retention.ms 60000 -> 3600000" in lines
    assert lines[-1] == "all 6 topics as declared"  # .keys joined the layout


def test_only_partition_counts_and_cleanup_policies_block_a_worker() -> None:
    from kes.topology.layout import AggregateTopics
    from kes.topology.plans import Plan, TopicCheck, TopicState

    declared = AggregateTopics("account", partitions=4, replication_factor=3, min_insync_replicas=2)
    by_name = {s.name: s for s in declared.specs()}
    events, replies = by_name[declared.events], by_name[declared.replies]
    checks = (
        TopicCheck(
            events, TopicState(events.name, 4, 1, {**events.config, "min.insync.replicas": "1"})
        ),
        TopicCheck(
            replies, TopicState(replies.name, 4, 3, {**replies.config, "retention.ms": "5"})
        ),
    )
    plan = Plan(checks)
    assert len(plan.problems) == 3 and plan.blocking == []
    wrong = (
        TopicCheck(
            events, TopicState(events.name, 6, 3, {**events.config, "cleanup.policy": "delete"})
        ),
    )
    assert [line.split(": ", 1)[1] for line in Plan(wrong).blocking] == [
        "has 6 partitions, declared 4",
        "cleanup.policy=delete (wanted compact)",
    ]
