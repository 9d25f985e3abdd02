"""One run's measurements, each a step over the run's backlog: kes, the ceiling loop, Quix.

A step takes the run's arguments, the broker, the topics and the backlog's end offsets, and
records its figures in the run's result. Another kes worker (older code, another batch window)
is a step too, on its own copy of the backlog (see `variant_step`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench import clients, latency, systems, workload
from bench.venvs import ROOT
from kes.examples.bank.projections import balances
from kes.streams.kafka.readback import read_records
from kes.streams.projections.projection import AnyProjection
from kes.topology.admin import apply
from kes.topology.layout import AggregateTopics

__all__ = [
    "STEPS",
    "Run",
    "backlog",
    "create_topics",
    "export_tree",
    "log",
    "projection_throughput",
    "variant_step",
    "wait_quiet",
    "wide_run",
]

Run = dict[str, Any]


def log(message: str) -> None:
    """Progress on stderr, with the time of day."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Plain topics for the baselines' output (kes's own come from `kes.topology.admin.apply`)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(30)


def broker_cpu(args: argparse.Namespace) -> Callable[[], float] | None:
    """The broker's CPU seconds so far, when the bench started the broker (else None)."""
    pid = getattr(args, "broker_pid", None)
    return None if pid is None else (lambda: systems.cpu_seconds(pid))


def wait_quiet(args: argparse.Namespace, cores: float = 0.15, limit: float = 90.0) -> None:
    """Wait until the broker is nearly idle (below `cores` over a second), at most `limit` s.

    Nothing else may load the broker while a system is timed: compaction or replication after
    the snapshot preload ran at 1.6 cores right before the first throughput step.
    """
    read = broker_cpu(args)
    if read is None:
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = read()
        time.sleep(1.0)
        if read() - before < cores:
            return
    log(f"  the broker stayed busy for {limit:.0f}s; measuring anyway")


def through(
    args: argparse.Namespace,
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
        bootstrap,
        group,
        topic,
        ends,
        timeout=900,
        alive=proc.alive,
        cpu=proc.cpu_seconds,
        broker_cpu=broker_cpu(args),
    )
    result[f"{name}_rate"] = progress.rate
    result[f"{name}_cpu_us"] = progress.cpu_micros_per_command
    result[f"{name}_broker_cpu_us"] = progress.broker_cpu_micros_per_command
    result[f"{name}_cpu_share"] = progress.cpu_share
    result[f"{name}_peak_rss_mb"] = proc.peak_rss_mb()
    log(
        f"  {name}: {progress.rate:,.0f} commands/s, {progress.cpu_micros_per_command:,.0f} "
        f"CPU-µs/command, {progress.cpu_share:.2f} cores, broker "
        f"{progress.broker_cpu_micros_per_command:,.0f} CPU-µs/command"
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
            args, "kes", worker, bootstrap, f"{topics.prefix}kes", topics.commands, ends, result
        )
        counters = worker.counters()
        transactions = counters.get("transactions") or counters.get("batches")
        if transactions:
            result["kes_commands_per_transaction"] = counters["commands"] / transactions
            result["kes_events"] = counters.get("events_written", 0.0)
            log(f"  kes: {result['kes_commands_per_transaction']:.1f} commands per transaction")
        outcome_footprint(bootstrap, topics, sum(ends.values()), workdir / f"kes-{run}", result)
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
            fixed_rate(args, bootstrap, topics, worker, accounts, result)
            result["kes_peak_rss_mb"] = worker.peak_rss_mb()
            if run == 1 and args.clients:
                asking_clients(args, bootstrap, topics, result)
    finally:
        worker.stop()
    shutil.rmtree(workdir / f"kes-{run}", ignore_errors=True)


def records_written(
    bootstrap: str, topics: AggregateTopics, commands: int, name: str, result: Run
) -> tuple[int, int]:
    """What a worker wrote per command (the changelog is compacted, but not its active
    segment: nothing is removed during a run): events and changelog records, snapshots among
    them. Answers the outcome records and their bytes."""
    config = {"bootstrap.servers": bootstrap}
    events = sum(1 for _ in read_records(topics.events, topics.partitions, config))
    snapshots = outcomes = outcome_bytes = changelog = 0
    for record in read_records(topics.snapshots, topics.partitions, config):
        changelog += 1
        if record.key and record.key.startswith(b"\x00") and record.value:
            outcomes += 1
            outcome_bytes += len(record.key) + len(record.value)
        elif record.key:
            snapshots += 1
    result[f"{name}_records_per_command"] = (events + changelog) / commands
    result[f"{name}_snapshot_records_per_command"] = snapshots / commands
    log(
        f"  {name}: {(events + changelog) / commands:.2f} records per command (events and "
        f"changelog), {snapshots / commands:.2f} of them snapshots"
    )
    return outcomes, outcome_bytes


def outcome_footprint(
    bootstrap: str, topics: AggregateTopics, commands: int, data_dir: Path, result: Run
) -> None:
    """What the worker wrote per command (`records_written`), what the outcome store costs (its
    changelog records and bytes per command), and the worker's local state on disk (snapshots
    and outcomes) after the backlog."""
    records, size = records_written(bootstrap, topics, commands, "kes", result)
    on_disk = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
    result.update(
        outcome_records_per_command=records / commands,
        outcome_bytes_per_command=size / commands,
        kes_local_state_mb=on_disk / 2**20,
    )
    log(
        f"  outcome store: {records / commands:.2f} changelog records and "
        f"{size / commands:.0f} bytes per command; local state {on_disk / 2**20:.0f} MiB"
    )


def asking_clients(
    args: argparse.Namespace, bootstrap: str, topics: AggregateTopics, result: Run
) -> None:
    """Each asking client's cores, with 1 .. `--clients` clients asking at once (run 1 only)."""
    found = clients.measure(
        bootstrap, topics, args.accounts, args.clients, args.clients_rate, args.latency_seconds
    )
    for count, figures in found.items():
        result[f"clients{count}_cores"] = figures["cores"]
        result[f"clients{count}_p99_ms"] = figures["p99_ms"]
        log(
            f"  {count} clients at {args.clients_rate:g} asks/s each: {figures['cores']:.3f} "
            f"cores per client, p99 {figures['p99_ms']:.0f} ms, {figures['timeouts']:g} timeouts"
        )


def cores_during(
    args: argparse.Namespace,
    worker: systems.KesWorker,
    action: Callable[[], object],
    name: str,
    result: Run,
) -> None:
    """Run `action`; record the worker's and the broker's cores busy meanwhile as
    `<name>_worker_cores` and `<name>_broker_cores` (the latter when the bench runs the broker)."""
    read_broker = broker_cpu(args)
    began, worker_began = time.monotonic(), worker.cpu_seconds()
    broker_began = read_broker() if read_broker else float("nan")
    action()
    elapsed = time.monotonic() - began
    result[f"{name}_worker_cores"] = (worker.cpu_seconds() - worker_began) / elapsed
    if read_broker is not None:
        result[f"{name}_broker_cores"] = (read_broker() - broker_began) / elapsed


def fixed_rate(
    args: argparse.Namespace,
    bootstrap: str,
    topics: AggregateTopics,
    worker: systems.KesWorker,
    accounts: list[str],
    result: Run,
) -> None:
    """Ask latency at a fixed 100 asks/s, then the worker's and the broker's cores at the
    demo's 50 commands/s (asks: every command wants its reply)."""
    lat = latency.measure(bootstrap, topics, accounts, 100.0, args.latency_seconds)
    result.update(ask100_p50_ms=lat.percentile(50), ask100_p99_ms=lat.percentile(99))
    log(f"  ask at 100/s: p50 {lat.percentile(50):.1f} ms, p99 {lat.percentile(99):.1f} ms")
    cores_during(
        args,
        worker,
        lambda: latency.measure(bootstrap, topics, accounts, 50.0, args.latency_seconds),
        "demo",
        result,
    )
    log(
        f"  at 50 commands/s: worker {result['demo_worker_cores']:.3f} cores, broker "
        f"{result.get('demo_broker_cores', float('nan')):.3f} cores"
    )


def wide_run(
    args: argparse.Namespace, bootstrap: str, workdir: Path, run: int, result: Run
) -> None:
    """One worker on `--wide-partitions` partitions: time to ready, throughput through a
    backlog, then its idle CPU and the broker's over `--idle-seconds` without traffic."""
    prefix = f"wide{run}-{time.monotonic_ns() % 1_000_000}-"
    topics = AggregateTopics("account", args.wide_partitions, prefix=prefix)
    if not apply(topics, {"bootstrap.servers": bootstrap}).ok:
        raise RuntimeError("cannot create the wide topics")
    commands = workload.bank_commands(args.wide_commands, args.accounts, args.wide_partitions)
    workload.produce(bootstrap, topics.commands, commands)
    ends = workload.end_offsets(bootstrap, topics.commands, args.wide_partitions)
    wait_quiet(args)
    worker = systems.kes_worker(
        bootstrap,
        partitions=args.wide_partitions,
        prefix=prefix,
        app_id=f"{prefix}kes",
        data_dir=workdir / f"wide-{run}",
        log_path=workdir / f"wide-{run}.log",
    )
    worker.start()
    try:
        result["wide_ready_seconds"] = worker.wait_ready(300)
        through(args, "wide", worker, bootstrap, f"{prefix}kes", topics.commands, ends, result)
        time.sleep(5)  # let the last commit and the lag views settle
        cores_during(args, worker, lambda: time.sleep(args.idle_seconds), "idle", result)
        log(
            f"  {args.wide_partitions} partitions: ready in {result['wide_ready_seconds']:.1f}s, "
            f"idle worker {result['idle_worker_cores']:.3f} cores, broker "
            f"{result.get('idle_broker_cores', float('nan')):.3f} cores"
        )
    finally:
        worker.stop()
    shutil.rmtree(workdir / f"wide-{run}", ignore_errors=True)


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
        through(args, "ceiling", proc, bootstrap, group, topics.commands, ends, result)
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
        through(args, "quix", proc, bootstrap, group, topics.commands, ends, result)
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
    *,
    projection: AnyProjection = balances,
    key: str = "projection",
    postgres_dsn: str = "",
) -> None:
    """A bank projection (the RocksDB balances by default; a SQL one with `postgres_dsn`)
    through the events kes wrote in this run; its figures go to `<key>_rate`, `<key>_cpu_us`
    (the projector's CPU, not a database server's).

    Its progress is the group offsets the projector commits after each store write; offsets
    count transaction markers too, so the rate is scaled to the events kes reported writing.
    """
    ends = workload.end_offsets(bootstrap, topics.events, args.partitions)
    offsets, events = sum(ends.values()), result.get("kes_events")
    if not offsets or not events:
        return
    proc = systems.run_projection(
        bootstrap,
        name=projection.name,
        prefix=topics.prefix,
        data_dir=workdir / f"{key}-{run}",
        log_path=workdir / f"{key}-{run}.log",
        postgres_dsn=postgres_dsn,
    )
    try:
        progress = workload.watch(
            bootstrap,
            projection.group_id(topics.prefix),
            topics.events,
            ends,
            timeout=900,
            alive=proc.alive,
            cpu=proc.cpu_seconds,
        )
    finally:
        proc.stop()
    shutil.rmtree(workdir / f"{key}-{run}", ignore_errors=True)
    share = events / offsets
    result[f"{key}_rate"] = progress.rate * share
    result[f"{key}_cpu_us"] = progress.cpu_micros_per_command / share
    log(
        f"  projection {projection.name}: {result[f'{key}_rate']:,.0f} events/s, "
        f"{result[f'{key}_cpu_us']:,.0f} CPU-µs/event"
    )


def variant_step(
    name: str, source: Path, batch_max_ms: int | None, env: dict[str, str] | None = None
) -> Callable[..., None]:
    """A step running another kes worker (older code, other batch settings, other environment
    such as KES_SNAPSHOT_EVERY) as `name`.

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
            env=env,
        )
        worker.start()
        try:
            group = f"{topics.prefix}{name}"
            through(args, name, worker, bootstrap, group, topics.commands, ends, result)
            counters = worker.counters()
            transactions = counters.get("transactions") or counters.get("batches")
            if transactions:
                result[f"{name}_commands_per_tx"] = counters["commands"] / transactions
            records_written(bootstrap, topics, sum(ends.values()), name, result)
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
