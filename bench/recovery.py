"""Restart measurements: a cold worker rebuilding its store from the snapshot changelog, then a
warm one reopening the local RocksDB files it left.

The changelog is filled once per bench with `entities` opened accounts (see
`workload.produce_snapshots`); each run starts a worker on an empty data directory (cold), stops
it with SIGTERM, and starts it again on the same directory (warm). "Serving" means /health says
every partition recovered; the time counts from the process start, imports included.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.systems import KesWorker, kes_worker
from bench.venvs import ROOT

__all__ = ["Restart", "restart_cold_then_warm"]


@dataclass(frozen=True)
class Restart:
    """One cold and one warm restart of a worker holding `entities` snapshots."""

    entities: int
    cold_seconds: float
    """Process start until serving, from an empty data directory."""
    cold_replay_seconds: float
    """The slowest partition's recovery (partitions recover concurrently)."""
    cold_peak_rss_mb: float
    warm_seconds: float
    """Process start until serving, with the local files of the cold run."""
    warm_peak_rss_mb: float

    @property
    def cold_records_per_second(self) -> float:
        """Changelog records replayed per second of recovery (all partitions together)."""
        return self.entities / self.cold_replay_seconds if self.cold_replay_seconds else 0.0


def restart_cold_then_warm(
    bootstrap: str,
    *,
    partitions: int,
    prefix: str,
    entities: int,
    workdir: Path,
    run: int,
    source: Path = ROOT,
    label: str = "recovery",
) -> Restart:
    """Cold start on a fresh data directory, SIGTERM, warm start on the same one.

    `source` is the project tree whose worker runs (an older commit's export, to compare).
    """
    data_dir = workdir / f"{label}-{run}"
    shutil.rmtree(data_dir, ignore_errors=True)

    def worker(name: str) -> KesWorker:
        log_path = workdir / f"{label}-{run}-{name}.log"
        return kes_worker(
            bootstrap,
            partitions=partitions,
            prefix=prefix,
            app_id=f"{prefix}{label}-{run}",  # its own group: no member of another run in it
            data_dir=data_dir,
            log_path=log_path,
            loglevel="INFO",  # each partition's "ready after" line
            source=source,
        )

    cold = worker("cold")
    try:
        cold_seconds = cold.start().wait_ready(600)
        replay = max(cold.recovery_seconds(), default=0.0)
        cold_rss = cold.peak_rss_mb()
    finally:
        cold.stop()
    warm = worker("warm")
    try:
        warm_seconds = warm.start().wait_ready(600)
        warm_rss = warm.peak_rss_mb()
    finally:
        warm.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
    return Restart(entities, cold_seconds, replay, cold_rss, warm_seconds, warm_rss)
