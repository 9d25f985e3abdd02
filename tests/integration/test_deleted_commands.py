"""Commands deleted by retention before they were applied: a named stop, then an operator's skip."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.streams.operations.verify import verify
from kes.streams.runtime.engine import EXIT_CONFIGURATION
from kes.topology.admin import apply
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster


def _skip(cluster: AppCluster) -> str:
    args = ["skip-deleted", "kes.examples.bank", "--aggregate", "account", "--partition", "0"]
    done = cluster.kes(*args, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _five_applied(app_cluster: Callable[..., AppCluster]) -> AppCluster:
    """One partition, acc-1 opened and credited 4 times (offsets 0..4) by a worker, stopped."""
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=1)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    worker = cluster.worker("w1")
    worker.wait_ready()
    opened = produce(bootstrap, topics, [("acc-1", bank_pb2.OpenAccount(owner="a"))])
    credits = [("acc-1", bank_pb2.CreditAccount(amount=1))] * 4
    collect_replies(bootstrap, topics, opened + produce(bootstrap, topics, credits))
    worker.stop()
    return cluster


def test_a_partition_whose_unapplied_commands_were_deleted_stops_until_skipped(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = _five_applied(app_cluster)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers

    later = produce(bootstrap, topics, [("acc-1", bank_pb2.CreditAccount(amount=10))] * 5)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(topics.commands, 0, 8)]).values():
        future.result(30)  # offsets 5, 6, 7 deleted before any worker applied them

    stopped = cluster.worker("w1")
    assert stopped.proc is not None
    assert stopped.proc.wait(90) == EXIT_CONFIGURATION, stopped.log_tail()
    log = stopped.log_tail(200)
    assert "offsets 5..7 were deleted by retention" in log and "kes skip-deleted" in log

    assert "skipped offsets 5..7" in _skip(cluster)
    resumed = cluster.worker("w1")
    resumed.wait_ready()
    replies = collect_replies(bootstrap, topics, later[3:])  # the two still on the log
    assert [r[0].accepted.revision for r in (replies[c] for c in later[3:])] == [6, 7]
    assert "nothing to skip" in _skip(cluster)
    checked = verify(account, topics, {"bootstrap.servers": bootstrap})
    assert checked.ok and checked.events == 7, checked.summary()


def _recreate(cluster: AppCluster, topic: str) -> None:
    """Delete `topic` and create it again as the layout declares (empty, offsets from 0)."""
    config = {"bootstrap.servers": cluster.settings.bootstrap_servers}
    admin = AdminClient(config)  # kept until the future resolves
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 60
    while not apply(cluster.settings.topics("account"), config).ok:  # until deletion is done
        assert time.monotonic() < deadline, f"{topic} not created again"
        time.sleep(0.5)


def _commit_when_empty(cluster: AppCluster, offset: TopicPartition) -> None:
    """Commit `offset` for the workers' group once its stopped member's session has ended."""
    config = {"bootstrap.servers": cluster.settings.bootstrap_servers}
    group = Consumer({**config, "group.id": cluster.settings.group_id})
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                group.commit(offsets=[offset], asynchronous=False)
                return
            except KafkaException:  # a stopped static member stays for its session timeout
                assert time.monotonic() < deadline, "the group did not empty"
                time.sleep(1)
    finally:
        group.close()


@pytest.mark.parametrize(
    "stale_offset",
    [False, pytest.param(True, marks=pytest.mark.long)],  # 20 s more: make chaos runs it
    ids=["recreated", "truncated"],
)
def test_a_recreated_commands_topic_stops_the_worker_until_skipped(
    app_cluster: Callable[..., AppCluster], stale_offset: bool
) -> None:
    """Its new commands take the offsets of applied ones: without the stop they would be passed
    over as applied, silently. `truncated`: the group's committed offset stays past the end, as
    after an unclean leader election (Kafka deletes it with a deleted topic): it is forgotten."""
    cluster = _five_applied(app_cluster)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers

    _recreate(cluster, topics.commands)
    if stale_offset:
        _commit_when_empty(cluster, TopicPartition(topics.commands, 0, 5))
    later = produce(bootstrap, topics, [("acc-1", bank_pb2.CreditAccount(amount=10))] * 2)
    stopped = cluster.worker("w1")
    assert stopped.proc is not None
    assert stopped.proc.wait(90) == EXIT_CONFIGURATION, stopped.log_tail()
    log = stopped.log_tail(200)
    assert "below offset 5 were applied, but the partition ends at 2" in log, log
    assert "kes skip-deleted" in log

    said = _skip(cluster)
    assert "past the partition's end 2" in said and "goes on from 0" in said, said
    resumed = cluster.worker("w1")
    resumed.wait_ready()
    replies = collect_replies(bootstrap, topics, later)
    assert [replies[c][0].accepted.revision for c in later] == [6, 7]
    checked = verify(account, topics, {"bootstrap.servers": bootstrap})
    assert checked.ok and checked.events == 7, checked.summary()
