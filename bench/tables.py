"""What BENCHMARKS.md shows: the ratio rows with the issue's targets, every figure, the setup."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bench import report
from bench.venvs import PEERS
from examples.bank.projections import balances

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
        f"- Restarts: a snapshot changelog of {args.entities:,} opened accounts; a worker on an "
        "empty data directory (cold: rebuilds RocksDB from the changelog), then SIGTERM and a "
        "worker on the same directory (warm). Serving = /health ready, counted from the process "
        "start. Records/s = entities ÷ the slowest partition's replay (partitions replay "
        "concurrently).",
        f"- Projection: `kes projection run examples.bank {balances.name}` (streams.projector, "
        "its RocksDB read model) through the events kes wrote in the run; its progress is the "
        "group offsets it commits after each store write.",
    ]
