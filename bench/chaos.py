"""`make chaos`: the full chaos run on its own local broker (restartable), with a JSON report.

    .venv/bin/python -m bench.chaos [--commands 100000] [--entities 10000] [--kills 20]
        [--rebalances 3] [--broker-restarts 1] [--seed 1] [--report chaos-report.json]

Exit status 0 when every invariant held (see tests/fixtures/chaos.py for the scenario and the
checks), 1 otherwise. The broker, workers and logs live in a temporary directory kept on failure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from streams.settings import Settings
from tests.fixtures.chaos import Chaos, ChaosPlan
from tests.fixtures.workers import AppCluster
from topology.admin import apply
from topology.localbroker import LocalBroker


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
    parser.add_argument("--report", default="chaos-report.json")
    args = parser.parse_args()
    plan = ChaosPlan(
        commands=args.commands,
        entities=args.entities,
        kills=args.kills,
        rebalances=args.rebalances,
        broker_restarts=args.broker_restarts,
        projection_kills=args.projection_kills,
        seed=args.seed,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    workdir = Path(tempfile.mkdtemp(prefix="kes-chaos-"))
    began = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {line}", flush=True)

    broker = LocalBroker(data_dir=workdir / "broker")
    cluster: AppCluster | None = None
    ok = False
    try:
        bootstrap = broker.start()
        say(f"broker at {bootstrap}; work dir {workdir}")

        def restart_broker() -> None:
            broker.stop()
            broker.start(timeout=120)

        settings = Settings(bootstrap_servers=bootstrap, partitions=args.partitions, app_id="chaos")
        assert apply(settings.topics("account"), {"bootstrap.servers": bootstrap}).ok
        cluster = AppCluster("examples.bank", settings, workdir)
        chaos = Chaos(cluster, plan, restart_broker, say)
        try:
            report = chaos.run()
        finally:
            chaos.close()
        figures = report.as_dict()
        figures["violations"] = len(report.violations)
        figures["plan"] = vars(args)
        Path(args.report).write_text(json.dumps(figures, indent=2) + "\n")
        say("report: " + json.dumps(figures))
        for violation in report.violations[:50]:
            say(f"VIOLATION {violation}")
        ok = not report.violations
    finally:
        if cluster is not None:
            cluster.close()
        broker.stop()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir} for inspection")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
