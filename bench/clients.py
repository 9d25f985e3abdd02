"""Concurrent asking clients, each its own process asking at a fixed rate: the CPU each uses.

Each client reads only its replies partition, so what one client costs should not grow with
the number of clients asking beside it (before, every client decoded every reply). Run as a
module, one client: `python -m bench.clients --bootstrap B --prefix P --partitions N`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence

from bench import latency
from bench.venvs import ROOT
from kes.topology.layout import AggregateTopics

__all__ = ["measure"]


def measure(
    bootstrap: str,
    topics: AggregateTopics,
    accounts: int,
    counts: Sequence[int],
    rate_each: float,
    seconds: float,
) -> dict[int, dict[str, float]]:
    """Per number of clients: each client's mean cores, its p99 (ms) and timeouts in all."""
    out: dict[int, dict[str, float]] = {}
    for count in counts:
        command = [
            *(sys.executable, "-m", "bench.clients", "--bootstrap", bootstrap),
            *("--prefix", topics.prefix, "--partitions", str(topics.partitions)),
            *("--accounts", str(accounts), "--rate", str(rate_each), "--seconds", str(seconds)),
        ]
        procs = [
            subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        found = [json.loads(proc.communicate(timeout=seconds + 120)[0]) for proc in procs]
        out[count] = {
            "cores": sum(f["cores"] for f in found) / count,
            "p99_ms": max(f["p99_ms"] for f in found),
            "timeouts": sum(f["timeouts"] for f in found),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    topics = AggregateTopics("account", args.partitions, prefix=args.prefix)
    accounts = [f"acc-{i:06d}" for i in range(args.accounts)]
    lat = latency.measure(args.bootstrap, topics, accounts, args.rate, args.seconds)
    print(
        json.dumps(
            {"cores": lat.client_cpu_share, "p99_ms": lat.percentile(99), "timeouts": lat.timeouts}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
