"""Commands deleted by retention before they were applied: a named stop, then an operator's skip."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.streams.operations.verify import verify
from kes.streams.runtime.engine import EXIT_CONFIGURATION
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import ROOT, AppCluster


def _skip(cluster: AppCluster) -> str:
    args = ["skip-deleted", "kes.examples.bank", "--aggregate", "account", "--partition", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "kes.streams.cli", *args],
        cwd=ROOT, env=cluster.env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_partition_whose_unapplied_commands_were_deleted_stops_until_skipped(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=1)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    worker = cluster.worker("w1")
    worker.wait_ready()
    opened = produce(bootstrap, topics, [("acc-1", bank_pb2.OpenAccount(owner="a"))])
    credits = [("acc-1", bank_pb2.CreditAccount(amount=1))] * 4
    applied = opened + produce(bootstrap, topics, credits)  # offsets 0..4
    collect_replies(bootstrap, topics, applied)
    worker.stop()

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
