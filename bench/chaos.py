"""`make chaos`: the full chaos run on its own local broker (restartable), with a JSON report.

    .venv/bin/python -m bench.chaos [--commands 100000] [--entities 10000] [--kills 20]
        [--rebalances 3] [--broker-restarts 1] [--seed 1] [--snapshot-every 1]
        [--report chaos-report.json]

`--snapshot-every N` runs the workers with KES_SNAPSHOT_EVERY=N (kes.streams.cycle.snapshotpolicy).

`make chaos-cluster`: the broker faults of tests/fixtures/clusterchaos.py on a three-node
LocalCluster (topics with 3 replicas, min.insync.replicas 2), with the same checks:

    .venv/bin/python -m bench.chaos --cluster [--leader-kills 1] [--coordinator-kills 1]
        [--rolling-restarts 1] [--outages 1] [--outage-seconds 20] [--report ...]

Exit status 0 when every invariant held (see tests/fixtures/chaos.py for the scenario and the
checks), 1 otherwise. The brokers, workers and logs live in a temporary directory kept on failure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kes.streams.cli import main as kes
from kes.streams.config.settings import Settings
from kes.topology.admin import apply
from kes.topology.localbroker import LocalBroker
from kes.topology.localcluster import LocalCluster
from tests.fixtures.chaos import Chaos, ChaosPlan, ChaosReport
from tests.fixtures.clusterchaos import ClusterChaos, ClusterChaosPlan
from tests.fixtures.workers import AppCluster


def main() -> int:
    """Run one plan; print a timeline and the report."""
    parser = argparse.ArgumentParser(prog="bench.chaos")
    defaults = ChaosPlan()
    parser.add_argument("--commands", type=int, default=defaults.commands)
    parser.add_argument("--entities", type=int, default=defaults.entities)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--rebalances", type=int, default=defaults.rebalances)
    parser.add_argument("--broker-restarts", type=int, default=defaults.broker_restarts)
    parser.add_argument("--projection-kills", type=int, default=defaults.projection_kills)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--snapshot-every", type=int, default=1, help="KES_SNAPSHOT_EVERY")
    parser.add_argument("--report", default="chaos-report.json")
    cluster_defaults = ClusterChaosPlan()
    parser.add_argument("--cluster", action="store_true", help="broker faults on 3 brokers")
    parser.add_argument("--leader-kills", type=int, default=cluster_defaults.leader_kills)
    parser.add_argument("--coordinator-kills", type=int, default=cluster_defaults.coordinator_kills)
    parser.add_argument("--rolling-restarts", type=int, default=cluster_defaults.rolling_restarts)
    parser.add_argument("--outages", type=int, default=cluster_defaults.outages)
    parser.add_argument("--outage-seconds", type=float, default=cluster_defaults.outage_seconds)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) on success")
    args = parser.parse_args()
    if args.cluster:
        return run_cluster(args)
    plan = ChaosPlan(
        commands=args.commands,
        entities=args.entities,
        kills=args.kills,
        rebalances=args.rebalances,
        broker_restarts=args.broker_restarts,
        projection_kills=args.projection_kills,
        seed=args.seed,
    )
    workdir, say = _begin("kes-chaos-")

    broker = LocalBroker(data_dir=workdir / "broker")
    cluster: AppCluster | None = None
    ok = False
    try:
        bootstrap = broker.start()
        say(f"broker at {bootstrap}; work dir {workdir}")

        def restart_broker() -> None:
            broker.stop()
            broker.start(timeout=120)

        settings = Settings(
            bootstrap_servers=bootstrap,
            partitions=args.partitions,
            app_id="chaos",
            snapshot_every=args.snapshot_every,
        )
        assert apply(settings.topics("account"), {"bootstrap.servers": bootstrap}).ok
        cluster = AppCluster("kes.examples.bank", settings, workdir)
        chaos = Chaos(cluster, plan, restart_broker, say)
        try:
            report = chaos.run()
        finally:
            chaos.close()
        ok = write_report(report, args, say)
    finally:
        if cluster is not None:
            cluster.close()
        broker.stop()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir} for inspection")
    return 0 if ok else 1


def _begin(prefix: str) -> tuple[Path, Callable[[str], None]]:
    """A work directory, and a `say` that prints a line with the seconds since now; SIGTERM
    exits through the caller's cleanup."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    began = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {line}", flush=True)

    return workdir, say


def write_report(report: ChaosReport, args: argparse.Namespace, say: Callable[[str], None]) -> bool:
    """Write the JSON report, print it and the first violations; True when there are none."""
    figures = report.as_dict()
    figures["violations"] = len(report.violations)
    figures["plan"] = vars(args)
    Path(args.report).write_text(json.dumps(figures, indent=2) + "\n")
    say("report: " + json.dumps(figures))
    for violation in report.violations[:50]:
        say(f"VIOLATION {violation}")
    return not report.violations


def run_cluster(args: argparse.Namespace) -> int:
    """The cluster plan on a three-node LocalCluster of its own; prints each fault's recovery."""
    plan = ClusterChaosPlan(
        commands=args.commands,
        entities=args.entities,
        leader_kills=args.leader_kills,
        coordinator_kills=args.coordinator_kills,
        rolling_restarts=args.rolling_restarts,
        outages=args.outages,
        outage_seconds=args.outage_seconds,
        seed=args.seed,
    )
    workdir, say = _begin("kes-chaos-cluster-")

    local = LocalCluster(3, data_dir=workdir / "cluster")
    app: AppCluster | None = None
    ok = False
    try:
        bootstrap = local.start(timeout=180)
        say(f"3 brokers at {bootstrap}; work dir {workdir}")
        settings = Settings(
            bootstrap_servers=bootstrap,
            partitions=args.partitions,
            app_id="chaos",
            replication_factor=3,
            snapshot_every=args.snapshot_every,
        )
        argv = ["--bootstrap", bootstrap, "--partitions", str(args.partitions)]
        if kes(["topics", "apply", "kes.examples.bank", *argv]) != 0:
            raise SystemExit("kes topics apply failed")
        app = AppCluster("kes.examples.bank", settings, workdir)
        chaos = ClusterChaos(app, local, plan, say)
        try:
            report = chaos.run()
        finally:
            chaos.close()
        ok = write_report(report, args, say)
        say("fault         recovery (s)  longest stall (s)  brokers back (s)  target")
        for fault in report.faults:
            say(
                f"{fault['fault']:<13} {fault['flowing_after_s']!s:>12}  "
                f"{fault['longest_stall_s']:>17}  {fault['brokers_back_after_s']:>16}  "
                f"{fault['target']}"
            )
        say(f"process exits (restarted): {[(e['process'], e['code']) for e in report.exits]}")
    finally:
        if app is not None:
            app.close()
        local.stop()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir} for inspection")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
