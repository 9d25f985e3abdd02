"""The systems under test as processes: a kes worker, the ceiling loop, the peers, the perf tool.

Each runs in its own process so that its peak memory (VmHWM) is its own, and so that the bench
driver's work (watching offsets) stays out of its CPU time as far as two cores allow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from bench.venvs import PEERS, ROOT, ensure
from kes.topology.localbroker import kafka_classpath

__all__ = [
    "KesWorker",
    "Process",
    "cli_and_app",
    "kes_worker",
    "producer_perf",
    "run_ceiling",
    "run_eventsourcing",
    "run_projection",
    "run_quix",
]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB; NaN once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else float("nan")


def children(pid: int) -> list[int]:
    """The process ids of a process's children."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included); NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Process:
    """A subprocess with its log file; `stop()` is SIGTERM, then SIGKILL after a grace period.

    With `wrapper` (a profiler that runs the real program as its child), signals and memory
    figures go to the child, and the wrapper is left to exit by itself and write its output.
    """

    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    wrapper: bool = False
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    def start(self) -> Self:
        """Start it (returns at once)."""
        with self.log_path.open("ab") as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        """Its process id."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """True while it runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def target_pid(self) -> int:
        """The measured program's process id (the wrapper's child, if wrapped)."""
        if self.wrapper:
            kids = children(self.pid)
            if kids:
                return kids[0]
        return self.pid

    def peak_rss_mb(self) -> float:
        """Its VmHWM so far, in MiB."""
        return peak_rss_mb(self.target_pid)

    def cpu_seconds(self) -> float:
        """Its CPU time so far."""
        return cpu_seconds(self.target_pid)

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit within `grace` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.wrapper:
            for child in children(self.pid):
                os.kill(child, signal.SIGTERM)
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            for child in children(self.pid):
                os.kill(child, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(30)


@dataclass
class KesWorker(Process):
    """`kes worker kes.examples.bank` with a web port to ask /health."""

    web_port: int = 0

    def health(self) -> dict[str, Any] | None:
        """The /health body, or None while the web server does not answer."""
        url = f"http://127.0.0.1:{self.web_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return dict(json.load(resp))
        except urllib.error.HTTPError as exc:
            return dict(json.load(exc))
        except (OSError, ValueError):
            return None

    def counters(self) -> dict[str, float]:
        """The worker's `kes_*_total` counters from /metrics, summed over partitions."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                text = resp.read().decode()
        except (OSError, ValueError):
            return {}
        totals: dict[str, float] = {}
        for name, value in re.findall(r"^kes_(\w+)_total(?:\{[^}]*\})? (\S+)$", text, re.M):
            totals[name] = totals.get(name, 0.0) + float(value)
        return totals

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from the process start until /health said ready (polled every 20 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"kes worker exited:\n{self.log_tail()}")
            body = self.health()
            if body and body.get("ready"):
                return time.monotonic() - self.started
            time.sleep(0.02)
        raise TimeoutError(f"kes worker not ready in {timeout:.0f}s:\n{self.log_tail()}")

    def recovery_seconds(self) -> list[float]:
        """Each partition's recovery time, from the worker's INFO log ("ready after N s")."""
        text = self.log_path.read_text(errors="replace")
        return [float(s) for s in re.findall(r"ready after (\d+\.\d+)s", text)]


def kes_worker(
    bootstrap: str,
    *,
    partitions: int,
    prefix: str,
    app_id: str,
    data_dir: Path,
    log_path: Path,
    batch_max_commands: int | None = None,
    batch_max_ms: int | None = None,
    profile_to: Path | None = None,
    loglevel: str = "WARNING",
    source: Path = ROOT,
    env: dict[str, str] | None = None,
) -> KesWorker:
    """A kes worker for the bank example (not started). `profile_to` runs it under py-spy.

    `source` is the project tree whose code runs (an older commit's export, to compare); `env`
    adds environment variables (settings such as KES_SNAPSHOT_EVERY).
    """
    port = free_port()
    extra = env or {}
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KES_PARTITIONS": str(partitions),
        "KES_TOPIC_PREFIX": prefix,
        "KES_APP_ID": app_id,
        "KES_DATA_DIR": str(data_dir),
        "KES_WEB_PORT": str(port),
        "KES_SESSION_TIMEOUT_MS": "6000",
        **extra,
    }
    cli, app = cli_and_app(source)
    if source != ROOT:  # ahead of the editable install
        env["PYTHONPATH"] = str(source)
    if batch_max_commands is not None:
        env["KES_BATCH_MAX_COMMANDS"] = str(batch_max_commands)
    if batch_max_ms is not None:
        env["KES_BATCH_MAX_MS"] = str(batch_max_ms)
    argv = [sys.executable, "-m", cli, "worker", app, "--loglevel", loglevel]
    if profile_to is not None:
        spy = Path(sys.executable).with_name("py-spy")
        argv = [str(spy), "record", "-o", str(profile_to), "-f", "raw", "-r", "200", "--", *argv]
    wrapped = profile_to is not None
    return KesWorker(argv, log_path, env, wrapper=wrapped, cwd=source, web_port=port)


def cli_and_app(source: Path) -> tuple[str, str]:
    """The CLI module and the bank app's module name of the tree at `source`.

    Commits before the `kes` namespace have top-level `streams` and `examples` packages, which
    PYTHONPATH=source puts ahead of the installed `kes`. A tree with the namespace can only run
    from its own install, so comparing against one that is not this tree is refused.
    """
    if (source / "streams" / "cli.py").exists():
        return "kes.streams.cli", "kes.examples.bank"
    if source.resolve() != ROOT.resolve():
        raise SystemExit(
            f"{source} uses the kes namespace: install it in its own virtualenv to compare"
        )
    return "kes.streams.cli", "kes.examples.bank"


def run_projection(
    bootstrap: str,
    *,
    name: str,
    prefix: str,
    data_dir: Path,
    log_path: Path,
    postgres_dsn: str = "",
) -> Process:
    """`kes projection run kes.examples.bank NAME` (RocksDB, or PostgreSQL at `postgres_dsn`)."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KES_TOPIC_PREFIX": prefix,
        "KES_DATA_DIR": str(data_dir),
        **({"KES_POSTGRES_DSN": postgres_dsn} if postgres_dsn else {}),
    }
    argv = [sys.executable, "-m", "kes.streams.cli", "projection", "run", "kes.examples.bank", name]
    argv += ["--web-port", "0"]  # as measured before the projection had web views
    return Process(argv, log_path, env).start()


def run_ceiling(
    bootstrap: str, commands: str, events: str, replies: str, group: str, log_path: Path
) -> Process:
    """The ceiling loop, started."""
    argv = [sys.executable, "-m", "bench.ceiling", bootstrap, commands, events, replies, group]
    return Process(argv, log_path).start()


def run_quix(
    bootstrap: str,
    commands: str,
    events: str,
    group: str,
    state_dir: Path,
    commit_interval: float,
    log_path: Path,
) -> Process:
    """The Quix Streams app in its own virtualenv, started."""
    peer = PEERS["quix"]
    python = ensure(peer)
    argv = [str(python), "-m", "bench.quix_app", bootstrap, commands, events, group]
    argv += [str(state_dir), str(commit_interval)]
    return Process(argv, log_path, peer.env()).start()


def run_eventsourcing(commands_file: Path, count: int, db: Path, log_path: Path) -> dict[str, Any]:
    """Run the eventsourcing peer to completion; its report plus its peak RSS."""
    peer = PEERS["eventsourcing"]
    python = ensure(peer)
    argv = [str(python), "-m", "bench.es_app", str(commands_file), str(count), str(db)]
    proc = subprocess.run(
        argv, cwd=ROOT, env=peer.env(), capture_output=True, text=True, timeout=900, check=False
    )
    log_path.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"eventsourcing peer failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def producer_perf(bootstrap: str, topic: str, records: int, record_size: int) -> float:
    """Kafka's ProducerPerformance (acks=all, idempotent): records per second."""
    argv = ["java", "-Xmx512m", "-cp", kafka_classpath()]
    argv += ["org.apache.kafka.tools.ProducerPerformance", "--topic", topic]
    argv += ["--num-records", str(records), "--record-size", str(record_size)]
    argv += ["--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}"]
    argv += ["acks=all", "linger.ms=5", "batch.size=262144"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    found = re.findall(r"(\d+) records sent, ([\d.]+) records/sec", proc.stdout)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"ProducerPerformance failed: {(proc.stderr or proc.stdout)[-1000:]}")
    return float(found[-1][1])
