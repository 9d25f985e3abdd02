"""Figures over runs, ratios within runs, and the BENCHMARKS.md they make.

A ratio is taken inside each run (kes and its baseline measured minutes apart on the same broker)
and only then summarised over runs: on a shared two-core machine absolute figures drift between
runs far more than the ratios do.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from kes.topology.localbroker import kafka_version

__all__ = ["Row", "machine", "now", "render", "spread"]

Run = Mapping[str, Any]


def now() -> str:
    """The time of day in UTC, to the minute."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """`min / median / max` of the finite values (one value alone when all are equal)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "n/a"
    low, mid, high = min(finite), statistics.median(finite), max(finite)
    if len(finite) == 1:
        return fmt.format(mid)
    return " / ".join(fmt.format(v) for v in (low, mid, high))


@dataclass(frozen=True)
class Row:
    """One line of the ratio table: a kes figure against a baseline figure, and the target."""

    figure: str
    kes: Callable[[Run], float | None]
    baseline_name: str
    baseline: Callable[[Run], float | None] | None
    target: str
    meets: Callable[[float], bool] | None
    """Applied to the median (of the ratio when there is a baseline, else of the kes figure)."""
    fmt: str = "{:,.0f}"


def _ratios(runs: Sequence[Run], row: Row) -> list[float]:
    out = []
    for run in runs:
        kes = row.kes(run)
        base = row.baseline(run) if row.baseline else None
        if kes is not None and base:
            out.append(kes / base)
    return out


def _values(runs: Sequence[Run], get: Callable[[Run], float | None]) -> list[float]:
    return [v for v in (get(r) for r in runs) if v is not None]


def _verdict(values: Sequence[float], meets: Callable[[float], bool] | None) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if meets is None or not finite:
        return "—"
    return "met" if meets(statistics.median(finite)) else "**not met**"


def ratio_table(runs: Sequence[Run], rows: Sequence[Row]) -> list[str]:
    """Markdown lines: figure, kes, baseline, ratio, target, verdict."""
    lines = [
        "| figure | kes (min / median / max) | baseline | baseline figure | kes ÷ baseline "
        "| target | median meets it? |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        kes = _values(runs, row.kes)
        if row.baseline is None:
            ratio_text, base_text, verdict = "—", "—", _verdict(kes, row.meets)
        else:
            ratios = _ratios(runs, row)
            base_text = spread(_values(runs, row.baseline), row.fmt)
            ratio_text = spread(ratios, "{:.2f}x")
            verdict = _verdict(ratios, row.meets)
        lines.append(
            f"| {row.figure} | {spread(kes, row.fmt)} | {row.baseline_name} | {base_text} "
            f"| {ratio_text} | {row.target} | {verdict} |"
        )
    return lines


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def machine() -> list[str]:
    """Markdown bullet lines describing this machine and the software measured."""
    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
                break
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    java_line = (java.stderr or java.stdout).splitlines()[0] if java.returncode == 0 else "?"
    packages = ", ".join(
        f"{p} {_version(p)}"
        for p in ("faust-streaming", "aiokafka", "confluent-kafka", "protobuf", "rocksdict")
    )
    return [
        f"- CPU: {os.cpu_count()} cores, {cpu}; memory {memory}; {platform.system()} "
        f"{platform.release()}. A shared machine: other work ran during the benchmarks.",
        f"- Python {platform.python_version()}; {java_line}; Kafka {kafka_version()} (one local "
        "broker, KRaft, from Maven Central jars: `kes.topology.localbroker`).",
        f"- kes's clients: {packages}.",
    ]


def render(
    *,
    runs: Sequence[Run],
    rows: Sequence[Row],
    figures: Sequence[tuple[str, Callable[[Run], float | None], str]],
    sizes: Sequence[str],
    command: str,
    notes: str,
    elapsed_seconds: float,
    finished: str = "",
    commit: str = "",
) -> str:
    """The whole BENCHMARKS.md."""
    when = finished or now()
    code = f" on kes {commit}" if commit else ""
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `{command}`{code}, finished {when} ({len(runs)} runs, "
        f"{elapsed_seconds / 60:.1f} minutes in all). Do not edit by hand: the prose after the "
        "tables comes from `bench/notes.md`; `python -m bench.run --render-only` redoes this "
        "file from `bench/results.json`.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
        "## What ran",
        "",
        *sizes,
        "",
        "## kes against its baselines",
        "",
        "Each ratio is taken within one run, then summarised over the runs (min / median / max).",
        "",
        *ratio_table(runs, rows),
        "",
        "## Every figure",
        "",
        "| figure | min / median / max |",
        "|---|---|",
        *(
            f"| {name} | {spread(_values(runs, get), fmt)} |"
            for name, get, fmt in figures
            if _values(runs, get)
        ),
        "",
        notes.strip(),
        "",
    ]
    return "\n".join(lines)
