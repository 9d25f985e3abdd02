"""Two deployments (different app ids) on the same topics: the second refuses to write.

Both would write events keyed `<entity>@<revision>`, two different events under one key, and
the compacted events topic would keep only one of them. The partition's checkpoint names the
group that wrote it; a worker of another group stops with a clear error (exit 78) unless it is
told to take over.
"""

from __future__ import annotations

from collections.abc import Callable

from kes.schemas.bank.v1 import bank_pb2
from kes.streams.runtime.engine import EXIT_CONFIGURATION
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster


def test_a_second_app_id_refuses_to_write_unless_told_to_take_over(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    first = cluster.worker("w1")
    first.wait_ready()
    accounts = [f"own-{i}" for i in range(10)]  # lands on both partitions
    ids = produce(bootstrap, topics, [(a, bank_pb2.OpenAccount(owner=a)) for a in accounts])
    collect_replies(bootstrap, topics, ids, timeout=60)
    first.stop()

    other = cluster.worker("other", KES_APP_ID=cluster.settings.app_id + "-other")
    assert other.proc is not None
    other.proc.wait(60)
    assert other.proc.returncode == EXIT_CONFIGURATION, other.log_tail()
    log = other.log_path.read_text(errors="replace")
    assert f"written by consumer group {cluster.settings.app_id!r}" in log
    assert "--take-over" in log

    taker = cluster.worker("taker", KES_APP_ID=cluster.settings.app_id + "-new", KES_TAKE_OVER="1")
    taker.wait_ready(60)
    more = produce(bootstrap, topics, [(a, bank_pb2.CreditAccount(amount=1)) for a in accounts])
    replies = collect_replies(bootstrap, topics, more, timeout=60)
    assert {replies[i][0].accepted.revision for i in more} == {2}
