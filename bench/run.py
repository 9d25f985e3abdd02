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

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench import latency, recovery, report, systems, workload
from bench.commandfile import write_commands
from bench.venvs import PEERS, ROOT, ensure
from examples.bank.projections import balances
from topology.admin import apply
from topology.layout import AggregateTopics
from topology.localbroker import LocalBroker

__all__ = ["main"]

Run = dict[str, Any]


def log(message: str) -> None:
    """Progress on stderr, with the time of day."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Plain topics for the baselines' output (kes's own come from `topology.admin.apply`)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(30)


def through(
    name: str,
    proc: systems.Process,
    bootstrap: str,
    group: str,
    topic: str,
    ends: dict[int, int],
    result: Run,
) -> workload.Progress:
    """Watch one system through the backlog; its rate, CPU per command and peak RSS."""
    progress = workload.watch(
        bootstrap, group, topic, ends, timeout=900, alive=proc.alive, cpu=proc.cpu_seconds
    )
    result[f"{name}_rate"] = progress.rate
    result[f"{name}_cpu_us"] = progress.cpu_micros_per_command
    result[f"{name}_cpu_share"] = progress.cpu_share
    result[f"{name}_peak_rss_mb"] = proc.peak_rss_mb()
    log(
        f"  {name}: {progress.rate:,.0f} commands/s, {progress.cpu_micros_per_command:,.0f} "
        f"CPU-µs/command, {progress.cpu_share:.2f} cores"
    )
    return progress


def kes_throughput(
    args: argparse.Namespace,
    bootstrap: str,
    topics: AggregateTopics,
    ends: dict[int, int],
    workdir: Path,
    run: int,
    result: Run,
) -> None:
    """kes through the backlog, then ask latency at half that rate on the same worker."""
    profile = args.profile / f"kes-run{run}.folded.txt" if args.profile else None
    worker = systems.kes_worker(
        bootstrap,
        partitions=args.partitions,
        prefix=topics.prefix,
        app_id=f"{topics.prefix}kes",
        data_dir=workdir / f"kes-{run}",
        log_path=workdir / f"kes-{run}.log",
        profile_to=profile,
        batch_max_commands=args.batch_max_commands,
        batch_max_ms=args.batch_max_ms,
    )
    worker.start()
    try:
        progress = through(
            "kes", worker, bootstrap, f"{topics.prefix}kes", topics.commands, ends, result
        )
        counters = worker.counters()
        if counters.get("batches"):
            result["kes_commands_per_transaction"] = counters["commands"] / counters["batches"]
            result["kes_events"] = counters.get("events_written", 0.0)
            log(f"  kes: {result['kes_commands_per_transaction']:.1f} commands per transaction")
        if args.latency_seconds > 0 and profile is None:
            worker.wait_ready()
            accounts = [f"acc-{i:06d}" for i in range(args.accounts)]
            rate = args.ask_rate or progress.rate / 2
            lat = latency.measure(bootstrap, topics, accounts, rate, args.latency_seconds)
            result.update(
                ask_offered_rate=lat.offered_rate,
                ask_achieved_rate=lat.achieved_rate,
                ask_p50_ms=lat.percentile(50),
                ask_p99_ms=lat.percentile(99),
                ask_timeouts=lat.timeouts,
                ask_client_cpu_share=lat.client_cpu_share,
            )
            log(
                f"  ask at {rate:,.0f}/s: p50 {lat.percentile(50):.1f} ms, "
                f"p99 {lat.percentile(99):.1f} ms, {lat.timeouts} timeouts, "
                f"client {lat.client_cpu_share:.2f} cores"
            )
            result["kes_peak_rss_mb"] = worker.peak_rss_mb()
    finally:
        worker.stop()
    shutil.rmtree(workdir / f"kes-{run}", ignore_errors=True)


def ceiling_throughput(
    args: argparse.Namespace,
    bootstrap: str,
    topics: AggregateTopics,
    ends: dict[int, int],
    workdir: Path,
    run: int,
    result: Run,
) -> None:
    """The plain confluent-kafka transactional loop through the same backlog."""
    group = f"{topics.prefix}ceiling"
    proc = systems.run_ceiling(
        bootstrap,
        topics.commands,
        f"{topics.prefix}ceiling.events",
        f"{topics.prefix}ceiling.replies",
        group,
        workdir / f"ceiling-{run}.log",
    )
    try:
        through("ceiling", proc, bootstrap, group, topics.commands, ends, result)
    finally:
        proc.stop()


def quix_throughput(
    args: argparse.Namespace,
    bootstrap: str,
    topics: AggregateTopics,
    ends: dict[int, int],
    workdir: Path,
    run: int,
    result: Run,
) -> None:
    """Quix Streams through the same backlog, exactly-once, RocksDB state."""
    group = f"{topics.prefix}quix"
    proc = systems.run_quix(
        bootstrap,
        topics.commands,
        f"{topics.prefix}quix.events",
        group,
        workdir / f"quix-{run}",
        args.quix_commit_interval,
        workdir / f"quix-{run}.log",
    )
    try:
        through("quix", proc, bootstrap, group, topics.commands, ends, result)
    finally:
        proc.stop()
    shutil.rmtree(workdir / f"quix-{run}", ignore_errors=True)


def projection_throughput(
    args: argparse.Namespace,
    bootstrap: str,
    topics: AggregateTopics,
    workdir: Path,
    run: int,
    result: Run,
) -> None:
    """The bank's balances projection through the events kes wrote in this run.

    Its progress is the group offsets the projector commits after each store write; offsets
    count transaction markers too, so the rate is scaled to the events kes reported writing.
    """
    ends = workload.end_offsets(bootstrap, topics.events, args.partitions)
    offsets, events = sum(ends.values()), result.get("kes_events")
    if not offsets or not events:
        return
    proc = systems.run_projection(
        bootstrap,
        name=balances.name,
        prefix=topics.prefix,
        data_dir=workdir / f"projection-{run}",
        log_path=workdir / f"projection-{run}.log",
    )
    try:
        progress = workload.watch(
            bootstrap,
            balances.group_id(topics.prefix),
            topics.events,
            ends,
            timeout=900,
            alive=proc.alive,
            cpu=proc.cpu_seconds,
        )
    finally:
        proc.stop()
    shutil.rmtree(workdir / f"projection-{run}", ignore_errors=True)
    share = events / offsets
    result["projection_rate"] = progress.rate * share
    result["projection_cpu_us"] = progress.cpu_micros_per_command / share
    log(
        f"  projection {balances.name}: {result['projection_rate']:,.0f} events/s, "
        f"{result['projection_cpu_us']:,.0f} CPU-µs/event"
    )


def variant_step(name: str, source: Path, batch_max_ms: int | None) -> Callable[..., None]:
    """A step running another kes worker (older code, or other batch settings) as `name`.

    It reads its own copy of the backlog (see `one_run`): two kes workers on one set of topics
    would share a snapshot changelog, and the second would skip every command as applied.
    """

    def step(
        args: argparse.Namespace,
        bootstrap: str,
        topics: AggregateTopics,
        ends: dict[int, int],
        workdir: Path,
        run: int,
        result: Run,
    ) -> None:
        worker = systems.kes_worker(
            bootstrap,
            partitions=args.partitions,
            prefix=topics.prefix,
            app_id=f"{topics.prefix}{name}",
            data_dir=workdir / f"{name}-{run}",
            log_path=workdir / f"{name}-{run}.log",
            batch_max_commands=args.batch_max_commands,
            batch_max_ms=batch_max_ms,
            source=source,
        )
        worker.start()
        try:
            group = f"{topics.prefix}{name}"
            through(name, worker, bootstrap, group, topics.commands, ends, result)
            counters = worker.counters()
            if counters.get("batches"):
                result[f"{name}_commands_per_tx"] = counters["commands"] / counters["batches"]
        finally:
            worker.stop()
        shutil.rmtree(workdir / f"{name}-{run}", ignore_errors=True)

    return step


def export_tree(ref: str, workdir: Path) -> Path:
    """The project as of a git ref, exported (not checked out) into the work directory."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = workdir / f"ref-{sha}"
    if not target.exists():
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


STEPS: dict[str, Callable[..., None]] = {
    "kes": kes_throughput,
    "ceiling": ceiling_throughput,
    "quix": quix_throughput,
}


def backlog(
    args: argparse.Namespace,
    bootstrap: str,
    commands: list[workload.EncodedCommand],
    prefix: str,
) -> tuple[AggregateTopics, dict[int, int]]:
    """A second set of kes topics under `prefix` with the same backlog."""
    topics = AggregateTopics("account", args.partitions, prefix=prefix)
    plan = apply(topics, {"bootstrap.servers": bootstrap})
    if not plan.ok:
        raise RuntimeError(plan.render())
    workload.produce(bootstrap, topics.commands, commands)
    return topics, workload.end_offsets(bootstrap, topics.commands, args.partitions)


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
    order = order[run % len(order) :] + order[: run % len(order)]
    for name in order:
        steps[name](args, bootstrap, *inputs[name], workdir, run, result)
    if "kes" in steps and args.projection:
        projection_throughput(args, bootstrap, topics, workdir, run, result)
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
    if args.entities > 0:
        restart = recovery.restart_cold_then_warm(
            bootstrap,
            partitions=args.partitions,
            prefix=recovery_prefix,
            entities=args.entities,
            workdir=workdir,
            run=run,
        )
        result.update(
            cold_seconds=restart.cold_seconds,
            cold_replay_seconds=restart.cold_replay_seconds,
            cold_records_per_second=restart.cold_records_per_second,
            cold_peak_rss_mb=restart.cold_peak_rss_mb,
            warm_seconds=restart.warm_seconds,
            warm_peak_rss_mb=restart.warm_peak_rss_mb,
        )
        log(
            f"  restart with {args.entities:,} entities: cold {restart.cold_seconds:.1f}s "
            f"({restart.cold_records_per_second:,.0f} records/s), warm "
            f"{restart.warm_seconds:.2f}s, peak RSS {restart.cold_peak_rss_mb:.0f} MiB"
        )
    return result


def _get(key: str) -> Callable[[report.Run], float | None]:
    return lambda run: run.get(key)


def rows(args: argparse.Namespace) -> list[report.Row]:
    """The ratio table: each kes figure against each baseline, with the issue's targets."""
    kes = _get("kes_rate")
    per_s = "commands/s"
    entities = f"{args.entities:,} entities"
    return [
        report.Row(
            f"throughput, {per_s}", kes, "ceiling loop", _get("ceiling_rate"), "≥ 0.5x",
            lambda r: r >= 0.5,
        ),
        report.Row(
            f"throughput, {per_s}", kes, "Quix Streams", _get("quix_rate"), "≥ 2x",
            lambda r: r >= 2,
        ),
        report.Row(
            f"throughput, {per_s}", kes, "eventsourcing/SQLite", _get("es_rate"), "≥ 5x",
            lambda r: r >= 5,
        ),
        report.Row(
            f"throughput, {per_s}", kes, "ProducerPerformance, records/s", _get("raw_rate"),
            "—", None,
        ),
        report.Row(
            "ask p99 at half the peak, ms", _get("ask_p99_ms"), "—", None, "≤ 20 ms",
            lambda v: v <= 20, "{:.1f}",
        ),
        report.Row(
            f"warm restart until serving, s ({entities})", _get("warm_seconds"), "—", None,
            "≤ 2 s", lambda v: v <= 2, "{:.2f}",
        ),
        report.Row(
            "cold restore, changelog records/s", _get("cold_records_per_second"), "—", None,
            "≥ 200,000/s", lambda v: v >= 200_000,
        ),
        report.Row(
            "projection into the RocksDB read model, events/s", _get("projection_rate"), "—",
            None, "≥ 100,000/s", lambda v: v >= 100_000,
        ),
        report.Row(
            f"worker peak RSS, MiB ({entities}, cold restore)", _get("cold_peak_rss_mb"), "—",
            None, "≤ 300 MB", lambda v: v <= 300 / 1.048576,
        ),
        report.Row(
            "CPU per command, µs", _get("kes_cpu_us"), "ceiling loop", _get("ceiling_cpu_us"),
            "—", None,
        ),
        report.Row(
            "CPU per command, µs", _get("kes_cpu_us"), "Quix Streams", _get("quix_cpu_us"),
            "—", None,
        ),
    ] + ([
        report.Row(
            f"throughput, {per_s}", kes, f"kes as of {args.compare}", _get("kesref_rate"),
            "> 1x", lambda r: r > 1,
        ),
        report.Row(
            "CPU per command, µs", _get("kes_cpu_us"), f"kes as of {args.compare}",
            _get("kesref_cpu_us"), "< 1x", lambda r: r < 1,
        ),
    ] if args.compare else []) + [
        report.Row(
            f"throughput at batch_max_ms={ms}, {per_s}", _get(f"kes_t{ms}_rate"),
            "kes, default batch window", kes, "—", None,
        )
        for ms in args.sweep_batch_ms
    ]  # fmt: skip


Figure = tuple[str, Callable[[report.Run], float | None], str]

FIGURES: list[Figure] = [
    ("kes, commands/s", _get("kes_rate"), "{:,.0f}"),
    ("ceiling loop, commands/s", _get("ceiling_rate"), "{:,.0f}"),
    ("Quix Streams, commands/s", _get("quix_rate"), "{:,.0f}"),
    ("eventsourcing/SQLite, commands/s", _get("es_rate"), "{:,.0f}"),
    ("ProducerPerformance, records/s", _get("raw_rate"), "{:,.0f}"),
    ("ask offered rate (half of kes's peak in the run), /s", _get("ask_offered_rate"), "{:,.0f}"),
    ("ask achieved rate, /s", _get("ask_achieved_rate"), "{:,.0f}"),
    ("ask p50, ms", _get("ask_p50_ms"), "{:.1f}"),
    ("ask p99, ms", _get("ask_p99_ms"), "{:.1f}"),
    ("ask timeouts (30 s)", _get("ask_timeouts"), "{:.0f}"),
    ("asking client's cores busy", _get("ask_client_cpu_share"), "{:.2f}"),
    ("cold restart until serving, s", _get("cold_seconds"), "{:.2f}"),
    ("cold replay (slowest partition), s", _get("cold_replay_seconds"), "{:.2f}"),
    ("cold restore, records/s", _get("cold_records_per_second"), "{:,.0f}"),
    ("warm restart until serving, s", _get("warm_seconds"), "{:.2f}"),
    ("kes worker peak RSS, throughput and ask runs, MiB", _get("kes_peak_rss_mb"), "{:.0f}"),
    ("kes worker peak RSS, cold restore, MiB", _get("cold_peak_rss_mb"), "{:.0f}"),
    ("kes worker peak RSS, warm restart, MiB", _get("warm_peak_rss_mb"), "{:.0f}"),
    ("kes commands per transaction", _get("kes_commands_per_transaction"), "{:.1f}"),
    ("kes as of --compare, commands/s", _get("kesref_rate"), "{:,.0f}"),
    ("kes as of --compare, CPU per command, µs", _get("kesref_cpu_us"), "{:,.0f}"),
    ("kes as of --compare, commands per transaction", _get("kesref_commands_per_tx"), "{:.1f}"),
    ("kes worker CPU per command, µs", _get("kes_cpu_us"), "{:,.0f}"),
    ("ceiling loop CPU per command, µs", _get("ceiling_cpu_us"), "{:,.0f}"),
    ("Quix Streams CPU per command, µs", _get("quix_cpu_us"), "{:,.0f}"),
    ("kes worker cores busy", _get("kes_cpu_share"), "{:.2f}"),
    ("ceiling loop cores busy", _get("ceiling_cpu_share"), "{:.2f}"),
    ("Quix Streams cores busy", _get("quix_cpu_share"), "{:.2f}"),
    ("ceiling loop peak RSS, MiB", _get("ceiling_peak_rss_mb"), "{:.0f}"),
    ("Quix Streams peak RSS, MiB", _get("quix_peak_rss_mb"), "{:.0f}"),
    ("projection, events/s", _get("projection_rate"), "{:,.0f}"),
    ("projection CPU per event, µs", _get("projection_cpu_us"), "{:,.0f}"),
]  # fmt: skip


def figures(args: argparse.Namespace) -> list[Figure]:
    """FIGURES, and those of each `--sweep-batch-ms` window."""
    sweep: list[Figure] = [
        (f"kes at batch_max_ms={ms}, {what}", _get(f"kes_t{ms}_{key}"), fmt)
        for ms in args.sweep_batch_ms
        for what, key, fmt in (
            ("commands/s", "rate", "{:,.0f}"),
            ("CPU per command, µs", "cpu_us", "{:,.0f}"),
            ("commands per transaction", "commands_per_tx", "{:.1f}"),
        )
    ]
    return FIGURES + sweep


def sizes(args: argparse.Namespace) -> list[str]:
    """The 'What ran' section."""
    return [
        f"- The bank example, {args.accounts:,} accounts, {args.partitions} partitions, one worker "
        "process, exactly-once (kes's defaults: a transaction per partition per batch of at most "
        "500 commands or 20 ms).",
        f"- Throughput: a pre-loaded backlog of {args.commands:,} commands (the accounts opened "
        "first, then random credits and debits, some refused), no reply wanted. Each system "
        "reads the same commands topic with its own consumer group; the rate counts from the "
        "first committed transaction seen to the last (committed offsets polled every 50 ms), "
        "so start-up and group joins are left out.",
        "- Ceiling loop (`bench/ceiling.py`): confluent-kafka, one transactional producer, one "
        "transaction per consumed batch of up to 500 commands, the same decode/decide/encode, "
        "state in a dict.",
        f"- Quix Streams {PEERS['quix'].requirements[0].split('==')[1]} (`bench/quix_app.py`, its "
        f"own virtualenv): the same `decide`, RocksDB state with its changelog, exactly-once, "
        f"commit interval {args.quix_commit_interval:g} s.",
        f"- eventsourcing {PEERS['eventsourcing'].requirements[0].split('==')[1]} "
        f"(`bench/es_app.py`, its own virtualenv): an idiomatic aggregate with the same rules, "
        f"SQLite recorder, one save per command, on the first {args.es_commands:,} of the same "
        "command records (read from a file: no Kafka).",
        f"- ProducerPerformance: {args.perf_records:,} records of the commands' mean size, "
        "acks=all, to a topic of the same partition count.",
        f"- Ask latency: `AsyncCommandClient.ask` at a fixed offered rate of half the kes "
        f"throughput of the same run, for {args.latency_seconds:g} s, open loop (latency counts "
        "from each ask's scheduled time).",
        f"- Restarts: a snapshot changelog of {args.entities:,} opened accounts; a worker on an "
        "empty data directory (cold: rebuilds RocksDB from the changelog), then SIGTERM and a "
        "worker on the same directory (warm). Serving = /health ready, counted from the process "
        "start. Records/s = entities ÷ the slowest partition's replay (partitions replay "
        "concurrently).",
        f"- Projection: `kes projection run examples.bank {balances.name}` (streams.projector, "
        "its RocksDB read model) through the events kes wrote in the run; its progress is the "
        "group offsets it commits after each store write.",
    ]


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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kes-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    steps = dict(STEPS)
    if args.compare:
        steps["kesref"] = variant_step("kesref", export_tree(args.compare, workdir), None)
    for ms in args.sweep_batch_ms:
        steps[f"kes_t{ms}"] = variant_step(f"kes_t{ms}", ROOT, ms)
    if args.only is not None:
        steps = {n: step for n, step in steps.items() if n in args.only or n.startswith("kes_t")}
    began = time.monotonic()
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
    runs: list[Run] = []
    try:
        bootstrap = args.bootstrap or broker.start()
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
            args.json.write_text(json.dumps(runs, indent=1))
    finally:
        broker.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    notes = args.notes.read_text() if args.notes.exists() else ""
    command = "make bench" if argv is None and len(sys.argv) == 1 else "python -m bench.run"
    text = report.render(
        runs=runs,
        rows=rows(args),
        figures=figures(args),
        sizes=sizes(args),
        command=command,
        notes=notes,
        elapsed_seconds=time.monotonic() - began,
    )
    args.output.write_text(text)
    log(f"wrote {args.output} in {(time.monotonic() - began) / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
