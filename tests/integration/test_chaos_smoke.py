"""The chaos suite in small (one SIGKILL, one rebalance, 3,000 commands): part of every test run.

12 partitions, so adding the third worker takes two partitions from each of the first two at
once: the regression test of a worker exiting when several partitions were revoked together.

`make chaos` runs the full plan (bench/chaos.py): 100,000 commands, 20 kills, 3 rebalances and
a broker restart on its own broker.
"""

from __future__ import annotations

from collections.abc import Callable

from kes.streams.cli import main
from tests.fixtures.chaos import Chaos, ChaosPlan
from tests.fixtures.workers import AppCluster


def test_one_kill_and_one_rebalance_under_load_keep_every_invariant(
    app_cluster: Callable[..., AppCluster], broker_log: Callable[[], str | None]
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=12)
    plan = ChaosPlan(
        commands=3000, entities=300, kills=1, rebalances=1, broker_restarts=0, projection_kills=0
    )
    report = Chaos(cluster, plan).run()
    assert report.violations == []
    assert (report.kills, report.rebalances, report.unplanned_worker_exits) == (1, 1, 0)
    for worker in cluster.workers:
        assert "MaxRestartsExceeded" not in worker.log_path.read_text(errors="replace")
    assert report.accepted + report.rejected == 3000 and report.rejected > 0
    settings = cluster.settings
    argv = [
        "verify", "kes.examples.bank", "account", "--commands", "-b", settings.bootstrap_servers,
        "--partitions", "12", "--topic-prefix", settings.topic_prefix,
    ]  # fmt: skip
    assert main(argv) == 0
    # The transactions are the command group's only committer: no consumer commits beside them.
    logged = broker_log()
    assert logged is None or "Mixing both types of offset commits" not in logged
