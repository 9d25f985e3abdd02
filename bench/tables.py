"""What BENCHMARKS.md shows: the ratio rows with the issue's targets, every figure, the setup."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bench import report
from bench.venvs import PEERS
from kes.examples.bank.projections import balances, balances_table

__all__ = ["figures", "rows", "sizes"]


def _get(key: str) -> Callable[[report.Run], float | None]:
    return lambda run: run.get(key)


def rows(args: argparse.Namespace) -> list[report.Row]:
    """The ratio table: each kes figure against each baseline, with the issue's targets."""
    kes = _get("kes_rate")
    per_s = "commands/s"
    entities = f"{args.entities:,} entities"
    return [
        report.Row(
            f"throughput, {per_s}", kes, "ceiling loop", _get("ceiling_rate"), "≥ 0.6x",
            lambda r: r >= 0.6,
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
            "ask p99 at 100 asks/s, ms", _get("ask100_p99_ms"), "—", None, "≤ 10 ms",
            lambda v: v <= 10, "{:.1f}",
        ),
        report.Row(
            "kes worker CPU per command, µs", _get("kes_cpu_us"), "—", None, "≤ 40 µs",
            lambda v: v <= 40,
        ),
        report.Row(
            "worker cores at 50 commands/s (the demo)", _get("demo_worker_cores"), "—", None,
            "≤ 0.03", lambda v: v <= 0.03, "{:.3f}",
        ),
        report.Row(
            "broker cores at 50 commands/s (the demo)", _get("demo_broker_cores"), "—", None,
            "≤ 0.05", lambda v: v <= 0.05, "{:.3f}",
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
            None, "≥ 150,000/s", lambda v: v >= 150_000,
        ),
        report.Row(
            "projection into a PostgreSQL table, events/s", _get("pg_projection_rate"),
            "RocksDB read model", _get("projection_rate"), "—", None,
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
        report.Row(
            "broker CPU per command, µs", _get("kes_broker_cpu_us"), "ceiling loop",
            _get("ceiling_broker_cpu_us"), "—", None,
        ),
        report.Row(
            "broker CPU per command, µs", _get("kes_broker_cpu_us"), "Quix Streams",
            _get("quix_broker_cpu_us"), "—", None,
        ),
        report.Row(
            f"throughput on {args.wide_partitions} partitions, {per_s}", _get("wide_rate"),
            f"kes on {args.partitions}", kes, "—", None,
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
        report.Row(
            "cold restore, records/s", _get("cold_records_per_second"),
            f"kes as of {args.compare}", _get("kesref_cold_records_per_second"), "—", None,
        ),
        report.Row(
            f"worker peak RSS, MiB ({entities}, cold restore)", _get("cold_peak_rss_mb"),
            f"kes as of {args.compare}", _get("kesref_cold_peak_rss_mb"), "—", None, "{:.0f}",
        ),
    ] if args.compare else []) + [
        report.Row(
            f"throughput at batch_max_ms={ms}, {per_s}", _get(f"kes_t{ms}_rate"),
            "kes, default batch window", kes, "—", None,
        )
        for ms in args.sweep_batch_ms
    ] + [
        report.Row(
            f"throughput at snapshot_every={n}, {per_s}", _get(f"kes_s{n}_rate"),
            "kes, a snapshot per change", kes, "—", None,
        )
        for n in getattr(args, "sweep_snapshot_every", [])
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
    ("ask at 100/s p50, ms", _get("ask100_p50_ms"), "{:.1f}"),
    ("ask at 100/s p99, ms", _get("ask100_p99_ms"), "{:.1f}"),
    ("worker cores at 50 commands/s", _get("demo_worker_cores"), "{:.3f}"),
    ("broker cores at 50 commands/s", _get("demo_broker_cores"), "{:.3f}"),
    ("asking client's cores busy", _get("ask_client_cpu_share"), "{:.2f}"),
    ("cold restart until serving, s", _get("cold_seconds"), "{:.2f}"),
    ("cold replay (slowest partition), s", _get("cold_replay_seconds"), "{:.2f}"),
    ("cold restore, records/s", _get("cold_records_per_second"), "{:,.0f}"),
    ("warm restart until serving, s", _get("warm_seconds"), "{:.2f}"),
    ("kes worker peak RSS, throughput and ask runs, MiB", _get("kes_peak_rss_mb"), "{:.0f}"),
    ("kes worker peak RSS, cold restore, MiB", _get("cold_peak_rss_mb"), "{:.0f}"),
    ("kes worker peak RSS, warm restart, MiB", _get("warm_peak_rss_mb"), "{:.0f}"),
    ("kes commands per transaction", _get("kes_commands_per_transaction"), "{:.1f}"),
    ("kes, records written per command", _get("kes_records_per_command"), "{:.2f}"),
    ("kes, snapshot records per command", _get("kes_snapshot_records_per_command"), "{:.2f}"),
    ("outcome store: changelog records per command", _get("outcome_records_per_command"), "{:.2f}"),
    ("outcome store: changelog bytes per command", _get("outcome_bytes_per_command"), "{:.0f}"),
    ("kes worker local state after the backlog, MiB", _get("kes_local_state_mb"), "{:.0f}"),
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
    ("kes, broker CPU per command, µs", _get("kes_broker_cpu_us"), "{:,.0f}"),
    ("ceiling loop, broker CPU per command, µs", _get("ceiling_broker_cpu_us"), "{:,.0f}"),
    ("Quix Streams, broker CPU per command, µs", _get("quix_broker_cpu_us"), "{:,.0f}"),
    ("kes as of --compare, broker CPU per command, µs", _get("kesref_broker_cpu_us"), "{:,.0f}"),
    ("wide run: until ready, s", _get("wide_ready_seconds"), "{:.1f}"),
    ("wide run: commands/s", _get("wide_rate"), "{:,.0f}"),
    ("wide run: CPU per command, µs", _get("wide_cpu_us"), "{:,.0f}"),
    ("wide run: idle worker cores (no traffic)", _get("idle_worker_cores"), "{:.3f}"),
    ("wide run: idle broker cores (no traffic)", _get("idle_broker_cores"), "{:.3f}"),
    ("projection, events/s", _get("projection_rate"), "{:,.0f}"),
    ("projection CPU per event, µs", _get("projection_cpu_us"), "{:,.0f}"),
    ("PostgreSQL projection, events/s", _get("pg_projection_rate"), "{:,.0f}"),
    ("PostgreSQL projection CPU per event (projector only), µs", _get("pg_projection_cpu_us"),
     "{:,.0f}"),
]  # fmt: skip


def figures(args: argparse.Namespace) -> list[Figure]:
    """FIGURES, and those of each `--sweep-batch-ms` window."""
    asking: list[Figure] = [
        (
            f"{n} asking client(s) at {args.clients_rate:g}/s each: cores per client",
            _get(f"clients{n}_cores"),
            "{:.3f}",
        )
        for n in getattr(args, "clients", [])
    ]
    sweep: list[Figure] = [
        (f"kes at batch_max_ms={ms}, {what}", _get(f"kes_t{ms}_{key}"), fmt)
        for ms in args.sweep_batch_ms
        for what, key, fmt in (
            ("commands/s", "rate", "{:,.0f}"),
            ("CPU per command, µs", "cpu_us", "{:,.0f}"),
            ("commands per transaction", "commands_per_tx", "{:.1f}"),
        )
    ]
    snapshots: list[Figure] = [
        (f"kes at snapshot_every={n}, {what}", _get(f"kes_s{n}_{key}"), fmt)
        for n in getattr(args, "sweep_snapshot_every", [])
        for what, key, fmt in (
            ("commands/s", "rate", "{:,.0f}"),
            ("CPU per command, µs", "cpu_us", "{:,.0f}"),
            ("records written per command", "records_per_command", "{:.2f}"),
            ("snapshot records per command", "snapshot_records_per_command", "{:.2f}"),
        )
    ]
    return FIGURES + asking + sweep + snapshots


def sizes(args: argparse.Namespace) -> list[str]:
    """The 'What ran' section."""
    return [
        f"- The bank example, {args.accounts:,} accounts, {args.partitions} partitions, one worker "
        "process, exactly-once (kes's defaults: one consumer and one transactional producer per "
        "worker, one transaction per cycle for every partition, at most 2,000 commands, no wait "
        "for more). The broker is left to go quiet before each system is timed; its CPU is read "
        "over the same window as the system's.",
        f"- Throughput: a pre-loaded backlog of {args.commands:,} commands (the accounts opened "
        "first, then random credits and debits, some refused), no reply wanted. Each system "
        "reads the same commands topic with its own consumer group; the rate counts from the "
        "last poll that saw nothing committed to the first that saw everything (committed "
        "offsets polled every 50 ms), so start-up and group joins are left out.",
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
        "- At a fixed 100 asks/s, the same for ask latency; at 50 asks/s (the demo's rate), the "
        "worker's and the broker's cores busy.",
        f"- Wide run (run 1 only): a worker on {args.wide_partitions} partitions, time until "
        f"/health is ready, throughput through {args.wide_commands:,} commands, then "
        f"{args.idle_seconds:g} s without traffic: its cores busy and the broker's.",
        f"- Restarts: a snapshot changelog of {args.entities:,} opened accounts; a worker on an "
        "empty data directory (cold: rebuilds RocksDB from the changelog), then SIGTERM and a "
        "worker on the same directory (warm). Serving = /health ready, counted from the process "
        "start. Records/s = entities ÷ the slowest partition's replay (partitions replay "
        "concurrently).",
        f"- Projection: `kes projection run kes.examples.bank {balances.name}` "
        "(kes.streams.projections.projector, its RocksDB read model) through the events kes "
        "wrote in the run; its progress is the group offsets it commits after each store write.",
        f"- PostgreSQL projection: `kes projection run kes.examples.bank {balances_table.name}` "
        "(a SqlProjection: one `UPDATE balances` per event, one transaction per poll with the "
        "offsets) into a fresh database of a local PostgreSQL server started by "
        "the bench (fsync on, default settings otherwise), through the same events.",
    ]
