"""A lost snapshot changelog is rebuilt from the events: history is never rewritten."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_event
from kes.streams.kafka.readback import read_records
from kes.streams.operations.verify import verify
from kes.topology.admin import apply
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.workers import ROOT, AppCluster


def _recreate(bootstrap: str, topic: str, cluster: AppCluster) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([topic]).values():
        future.result(30)
    deadline = time.monotonic() + 60
    while True:  # deletion finishes asynchronously; creating too early is refused
        plan = apply(cluster.settings.topics("account"), {"bootstrap.servers": bootstrap})
        if plan.ok or time.monotonic() > deadline:
            assert plan.ok, plan.render()
            return
        time.sleep(1)


def test_a_deleted_and_recreated_changelog_is_rebuilt_and_entities_go_on(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=3)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    worker = cluster.worker("w1")
    worker.wait_ready()
    first = produce(bootstrap, topics, bank_commands(600, accounts=30, seed=5))
    collect_replies(bootstrap, topics, first)
    before = verify(account, topics, config)
    assert before.ok, before.summary()
    worker.stop()

    _recreate(bootstrap, topics.snapshots, cluster)
    assert list(read_records(topics.snapshots, topics.partitions, config)) == []
    cluster.worker("w1").wait_ready(120)  # its local files are ahead of the new topic: cold

    more = [(f"acc-{i:04d}", bank_pb2.CreditAccount(amount=1)) for i in range(30)]
    ids = produce(bootstrap, topics, more)
    replies = collect_replies(bootstrap, topics, ids)
    after = verify(account, topics, config)
    assert after.ok, after.summary()  # revisions 1..n, no key twice, snapshots == fold
    for (entity, _), command_id in zip(more, ids, strict=True):
        reply = replies[command_id][0]
        assert reply.accepted.revision == before.revisions[entity] + 1, entity
    assert after.events == before.events + len(more)
    keys = [r.key for r in read_records(topics.events, topics.partitions, config)]
    assert len(keys) == len(set(keys)) == after.events  # every old event still there, once
    assert {decode_event(r.value).entity_id for r in read_records(topics.events, 3, config)} == {
        f"acc-{i:04d}" for i in range(30)
    }


def _rebuild(cluster: AppCluster, wait: float) -> subprocess.CompletedProcess[str]:
    args = ["snapshots", "rebuild", "kes.examples.bank", "account", "--wait", str(wait)]
    return subprocess.run(
        [sys.executable, "-m", "kes.streams.cli", *args],
        cwd=ROOT, env=cluster.env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.long  # make chaos runs it (CI time)
def test_kes_snapshots_rebuild_refuses_running_workers_then_refolds_every_partition(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    worker = cluster.worker("w1")
    worker.wait_ready()
    collect_replies(bootstrap, topics, produce(bootstrap, topics, bank_commands(200, 10, seed=9)))
    refused = _rebuild(cluster, wait=1)
    assert refused.returncode == 1 and "stop the workers first" in refused.stdout
    worker.stop()
    done = _rebuild(cluster, wait=30)  # the stopped worker leaves after its session
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("rebuilt from the events") == 2
    cluster.worker("w1").wait_ready()
    ids = produce(bootstrap, topics, [("acc-0001", bank_pb2.CreditAccount(amount=1))])
    collect_replies(bootstrap, topics, ids)
    checked = verify(account, topics, config)
    assert checked.ok, checked.summary()
