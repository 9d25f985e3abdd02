"""A worker that loses many partitions at once keeps running (regression: it used to exit).

Faust cancels the actor of each revoked isolated partition; that cancellation counted as a crash,
and mode's supervisor allows one restart per 10 ms, so a rebalance revoking several partitions
at once ended in MaxRestartsExceeded and SystemExit(1).
"""

from __future__ import annotations

from collections.abc import Callable

from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.workers import AppCluster


def test_losing_six_partitions_at_once_is_not_a_crash(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("examples.bank", ["account"], partitions=12)
    first = cluster.worker("w1")
    assert len(first.wait_ready()["partitions"]) == 12
    second = cluster.worker("w2")
    owned_second = set(second.wait_ready(90)["partitions"])
    topics = cluster.settings.topics("account")
    ids = produce(cluster.settings.bootstrap_servers, topics, bank_commands(500, accounts=50))
    replies = collect_replies(cluster.settings.bootstrap_servers, topics, ids, timeout=90)
    assert all(len(replies[c]) == 1 for c in ids)
    assert first.proc is not None and first.proc.poll() is None, first.log_tail()
    owned_first = set(first.wait_ready()["partitions"])
    assert owned_first and owned_second and owned_first.isdisjoint(owned_second)
    assert len(owned_first | owned_second) == 12
    assert "MaxRestartsExceeded" not in first.log_path.read_text()
