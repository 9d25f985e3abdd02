"""`make bench`: kes against the ceiling loop, Quix Streams, eventsourcing and the broker.

Starts its own broker, then for each run: fresh topics under a unique prefix, one pre-loaded
backlog of bank commands, and each system working through it with its own consumer group (the
order rotates between runs); ask latency at half of kes's measured peak; the eventsourcing peer
on the same commands; Kafka's producer perf tool; a cold and a warm restart of a worker holding
`--entities` snapshots. Writes BENCHMARKS.md and the raw figures as JSON.

    python -m bench.run                 # the full suite, about 15 minutes
    python -m bench.run --profile DIR   # also profile one kes throughput run with py-spy
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import recovery, report, systems, workload
from bench.commandfile import write_commands
from bench.steps import (
    STEPS,
    Run,
    backlog,
    create_topics,
    export_tree,
    log,
    projection_throughput,
    variant_step,
    wait_quiet,
    wide_run,
)
from bench.tables import figures, rows, sizes
from bench.venvs import PEERS, ROOT, ensure
from kes.examples.bank.projections import balances_table
from kes.topology.admin import apply
from kes.topology.layout import AggregateTopics
from kes.topology.localbroker import LocalBroker
from kes.topology.localpostgres import LocalPostgres, server_bin

__all__ = ["main"]


def one_run(
    steps: dict[str, Callable[..., None]],
    args: argparse.Namespace,
    bootstrap: str,
    commands: list[workload.EncodedCommand],
    commands_file: Path,
    recovery_prefix: str,
    workdir: Path,
    run: int,
) -> Run:
    """Every measurement once, on fresh topics."""
    prefix = f"bench{run}-{uuid.uuid4().hex[:6]}-"
    topics = AggregateTopics("account", args.partitions, prefix=prefix)
    plan = apply(topics, {"bootstrap.servers": bootstrap})
    if not plan.ok:
        raise RuntimeError(plan.render())
    extra = ["ceiling.events", "ceiling.replies", "quix.events", "perf"]
    create_topics(bootstrap, [prefix + name for name in extra], args.partitions)
    seconds = workload.produce(bootstrap, topics.commands, commands)
    ends = workload.end_offsets(bootstrap, topics.commands, args.partitions)
    log(f"run {run}: backlog of {sum(ends.values()):,} commands produced in {seconds:.1f}s")
    inputs = {name: (topics, ends) for name in steps}
    for name in steps:  # another kes worker needs topics of its own: the changelog is the truth
        if name.startswith("kes") and name != "kes":
            inputs[name] = backlog(args, bootstrap, commands, f"{prefix}{name}-")
    result: Run = {"run": run}
    order = list(steps)
    turn = run % len(order) if order else 0
    order = order[turn:] + order[:turn]
    for name in order:
        wait_quiet(args)
        steps[name](args, bootstrap, *inputs[name], workdir, run, result)
    if "kes" in steps and args.projection:
        wait_quiet(args)
        projection_throughput(args, bootstrap, topics, workdir, run, result)
        if args.postgres is not None:
            wait_quiet(args)
            projection_throughput(  # the bank's balances table, in a fresh database
                args, bootstrap, topics, workdir, run, result, projection=balances_table,
                key="pg_projection", postgres_dsn=args.postgres.new_database(),
            )  # fmt: skip
    if "kes" in steps and args.wide_partitions > 0 and run == 1:
        wide_run(args, bootstrap, workdir, run, result)
    if args.es_commands > 0:
        db = workdir / f"es-{run}.sqlite"
        es = systems.run_eventsourcing(commands_file, args.es_commands, db, workdir / "es.log")
        result["es_rate"] = es["commands"] / es["seconds"]
        db.unlink(missing_ok=True)
        log(f"  eventsourcing/SQLite: {result['es_rate']:,.0f} commands/s")
    if args.perf_records > 0:
        size = round(statistics.mean(len(c.value) for c in commands))
        result["raw_rate"] = systems.producer_perf(
            bootstrap, prefix + "perf", args.perf_records, size
        )
        log(f"  ProducerPerformance ({size} B records): {result['raw_rate']:,.0f} records/s")
    trees = [("", ROOT)] + ([("kesref_", args.reference_tree)] if args.compare else [])
    for key, tree in trees if args.entities > 0 else ():
        restart = recovery.restart_cold_then_warm(
            bootstrap,
            partitions=args.partitions,
            prefix=recovery_prefix,
            entities=args.entities,
            workdir=workdir,
            run=run,
            source=tree,
            label=f"{key}recovery",
        )
        result.update(
            {
                f"{key}cold_seconds": restart.cold_seconds,
                f"{key}cold_replay_seconds": restart.cold_replay_seconds,
                f"{key}cold_records_per_second": restart.cold_records_per_second,
                f"{key}cold_peak_rss_mb": restart.cold_peak_rss_mb,
                f"{key}warm_seconds": restart.warm_seconds,
                f"{key}warm_peak_rss_mb": restart.warm_peak_rss_mb,
            }
        )
        log(
            f"  {key}restart with {args.entities:,} entities: cold {restart.cold_seconds:.1f}s "
            f"({restart.cold_records_per_second:,.0f} records/s), warm "
            f"{restart.warm_seconds:.2f}s, peak RSS {restart.cold_peak_rss_mb:.0f} MiB"
        )
    return result


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--es-commands", type=int, default=20_000)
    parser.add_argument("--perf-records", type=int, default=500_000)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--ask-rate", type=float, help="offered asks/s (default: half the peak)")
    parser.add_argument("--quix-commit-interval", type=float, default=1.0)
    parser.add_argument(
        "--clients",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[1, 5, 10, 20],
        metavar="N,N",
        help="asking clients at once, one process each (run 1; empty: none)",
    )
    parser.add_argument("--clients-rate", type=float, default=25.0, help="asks/s per client")
    parser.add_argument(
        "--wide-partitions", type=int, default=256, help="one kes run on this many (0: none)"
    )
    parser.add_argument("--wide-commands", type=int, default=20_000)
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle CPU window")
    parser.add_argument(
        "--no-projection", dest="projection", action="store_false", help="skip the projection"
    )
    parser.add_argument("--batch-max-commands", type=int, help="kes worker (default: its own)")
    parser.add_argument("--batch-max-ms", type=int, help="kes worker (default: its own)")
    parser.add_argument(
        "--sweep-batch-ms",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[100],
        metavar="MS,MS",
        help="also run kes with these batch windows, each on its own copy of the backlog",
    )
    parser.add_argument(
        "--sweep-snapshot-every",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[10],
        metavar="N,N",
        help="also run kes with KES_SNAPSHOT_EVERY=N, each on its own copy of the backlog",
    )
    parser.add_argument("--only", nargs="*", choices=[*STEPS, "kesref"], help="steps to run")
    parser.add_argument(
        "--compare", metavar="REF", help="also run kes as of this git ref: before/after ratios"
    )
    parser.add_argument("--profile", type=Path, help="py-spy profiles of kes here (no latency)")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--notes", type=Path, default=ROOT / "bench" / "notes.md")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    parser.add_argument("--bootstrap", help="use this cluster instead of starting a broker")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite --output from --json, measure nothing"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    given = sys.argv[1:] if argv is None else argv
    if args.render_only:
        return render(args, json.loads(args.json.read_text()))
    command = " ".join(["python -m bench.run", *given]) if given else "make bench"
    began = time.monotonic()
    runs = measure(args)
    saved = {
        "command": command,
        "commit": subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "finished": report.now(),
        "elapsed_seconds": time.monotonic() - began,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": runs,
    }
    args.json.write_text(json.dumps(saved, indent=1))
    return render(args, saved)


def render(args: argparse.Namespace, saved: dict[str, Any]) -> int:
    """Write BENCHMARKS.md from saved figures (`--render-only` redoes it after a notes edit)."""
    stored = argparse.Namespace(**{**vars(args), **saved["args"]})
    notes = args.notes.read_text() if args.notes.exists() else ""
    text = report.render(
        runs=saved["runs"],
        rows=rows(stored),
        figures=figures(stored),
        sizes=sizes(stored),
        command=saved["command"],
        notes=notes,
        elapsed_seconds=saved["elapsed_seconds"],
        finished=saved.get("finished", ""),
        commit=saved.get("commit", ""),
    )
    args.output.write_text(text)
    log(f"wrote {args.output} ({saved['elapsed_seconds'] / 60:.1f} minutes of measurements)")
    return 0


def measure(args: argparse.Namespace) -> list[Run]:
    """Every run; the figures so far are saved after each (a crash keeps the finished runs)."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kes-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    steps = dict(STEPS)
    if args.compare:
        args.reference_tree = export_tree(args.compare, workdir)
        steps["kesref"] = variant_step("kesref", args.reference_tree, None)
    for ms in args.sweep_batch_ms:
        steps[f"kes_t{ms}"] = variant_step(f"kes_t{ms}", ROOT, ms)
    for every in args.sweep_snapshot_every:
        env = {"KES_SNAPSHOT_EVERY": str(every)}
        steps[f"kes_s{every}"] = variant_step(f"kes_s{every}", ROOT, None, env)
    if args.only is not None:
        steps = {
            n: step
            for n, step in steps.items()
            if n in args.only or n.startswith(("kes_t", "kes_s"))
        }
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if "quix" in steps:
        ensure(PEERS["quix"])
    if args.es_commands > 0:
        ensure(PEERS["eventsourcing"])
    commands = workload.bank_commands(args.commands, args.accounts, args.partitions)
    commands_file = workdir / "commands.bin"
    write_commands(commands_file, (c.value for c in commands))
    broker = LocalBroker(heap="1g")
    args.postgres = None
    runs: list[Run] = []
    try:
        bootstrap = args.bootstrap or broker.start()
        if args.projection and (found := server_bin()) is not None:
            # its own temporary directory: the server's user cannot enter the work directory
            base = Path(tempfile.mkdtemp(prefix="kes-bench-pg-"))
            args.postgres = LocalPostgres(found, base, fsync=True).start()
            log(f"PostgreSQL for the SQL projection at {args.postgres.dsn()}")
        elif args.projection:
            log("no PostgreSQL server installed: the SQL projection is not measured")
        args.broker_pid = None if args.bootstrap else broker.pid
        log(f"broker at {bootstrap}; work directory {workdir}")
        recovery_prefix = f"recovery-{uuid.uuid4().hex[:6]}-"
        if args.entities > 0:
            layout = AggregateTopics("account", args.partitions, prefix=recovery_prefix)
            if not apply(layout, {"bootstrap.servers": bootstrap}).ok:
                raise RuntimeError("cannot create the recovery topics")
            took = workload.produce_snapshots(
                bootstrap, layout.snapshots, args.entities, args.partitions
            )
            log(f"{args.entities:,} snapshots produced in {took:.1f}s")
        for run in range(1, args.runs + 1):
            runs.append(
                one_run(
                    steps, args, bootstrap, commands, commands_file, recovery_prefix, workdir, run
                )
            )
            partial = {"command": "(unfinished)", "elapsed_seconds": 0.0, "runs": runs}
            args.json.with_suffix(".partial.json").write_text(json.dumps(partial, indent=1))
    finally:
        if args.postgres is not None:
            args.postgres.stop("immediate")
            shutil.rmtree(args.postgres.base, ignore_errors=True)
        args.postgres = None  # not saved with the arguments
        broker.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    args.json.with_suffix(".partial.json").unlink(missing_ok=True)
    return runs


if __name__ == "__main__":
    raise SystemExit(main())
