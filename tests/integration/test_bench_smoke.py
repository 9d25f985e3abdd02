"""`make bench` in miniature: every kes measurement and the ceiling loop, with tiny sizes.

The benchmarks themselves are not part of the test command; this checks that the machinery
runs end to end on the test broker (backlog, progress from committed offsets, ask latency,
cold and warm restarts, the report). It asserts that figures exist, never how large they are.
The peers (Quix Streams, eventsourcing) are left out: their virtualenvs take minutes to build.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.run import main

pytestmark = pytest.mark.integration


@pytest.mark.long  # make chaos runs it (CI time)
def test_a_tiny_bench_writes_every_kes_figure_and_the_report(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    output, figures = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    argv = ["--bootstrap", kafka_bootstrap, "--runs", "1", "--only", "kes", "ceiling"]
    argv += ["--commands", "1500", "--accounts", "100", "--partitions", "4"]
    argv += ["--entities", "2000", "--es-commands", "0", "--perf-records", "0"]
    argv += ["--latency-seconds", "1", "--sweep-batch-ms", "", "--workdir", str(tmp_path / "work")]
    argv += ["--output", str(output), "--json", str(figures)]
    argv += ["--wide-partitions", "8", "--wide-commands", "300", "--idle-seconds", "1"]
    argv += ["--clients", "1,2", "--clients-rate", "10"]

    assert main(argv) == 0

    (run,) = json.loads(figures.read_text())["runs"]
    for key in (
        "kes_rate",
        "kes_cpu_us",
        "ask_p50_ms",
        "ask_p99_ms",
        "cold_seconds",
        "cold_records_per_second",
        "warm_seconds",
        "cold_peak_rss_mb",
        "projection_rate",
        "ask100_p99_ms",
        "demo_worker_cores",
        "wide_ready_seconds",
        "clients1_cores",
        "clients2_cores",
        "outcome_records_per_command",
        "outcome_bytes_per_command",
        "kes_records_per_command",
        "kes_s10_rate",
        "kes_s10_records_per_command",
        "kes_s10_snapshot_records_per_command",
    ):
        assert math.isfinite(run[key]) and run[key] > 0, key
    idle = run["idle_worker_cores"]  # over 1 s of an idle worker: may well be 0
    assert math.isfinite(idle) and idle >= 0
    assert "ceiling_rate" in run  # NaN when one poll saw the whole tiny backlog committed
    assert run["ask_timeouts"] == 0
    report = output.read_text()
    assert "| throughput, commands/s |" in report and "ceiling loop" in report
    assert "## Machine" in report
    output.unlink()
    assert main(["--render-only", "--json", str(figures), "--output", str(output)]) == 0
    assert output.read_text() == report  # the same figures, the same file
