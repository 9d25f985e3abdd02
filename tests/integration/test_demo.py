"""The README's first command, tried as a new user would: the demo comes up and events flow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from kes.streams.kafka.readback import read_topic
from tests.fixtures.workers import ROOT, free_port


def test_demo_brings_up_a_worker_streams_commands_and_stops_cleanly(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    port = free_port()
    prefix = unique_name("demo") + "-"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KES_TOPIC_PREFIX": prefix}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kes.streams.cli", "demo", "--rate", "100", "--web-port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if "Ctrl-C stops the demo" in line:
            break
    output = "\n".join(lines)
    assert f"dashboard   http://127.0.0.1:{port}/" in output, output
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        assert json.load(resp)["ready"] is True
    events = 0
    deadline = time.monotonic() + 60
    while events < 50 and time.monotonic() < deadline:
        time.sleep(1)
        events = sum(
            1
            for _ in read_topic(
                f"{prefix}account.events", 12, {"bootstrap.servers": kafka_bootstrap}
            )
        )
    assert events >= 50, "events should flow from the demo's commands"
    worker_log = next(ln.split()[-1] for ln in lines if "worker log" in ln)
    tried = _try_the_tour(lines)
    assert [name for name, _ in tried] == ["send", "events", "lag", "status"], tried
    for name, out in tried:
        assert "kes: error" not in out and "Traceback" not in out, (name, out)
    assert '"accepted"' in tried[0][1] and "acc-1@1 AccountOpened" in tried[1][1]
    assert "kes-demo" in tried[2][1] and "account-balances" in tried[3][1]

    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "everything it started is gone" in rest
    assert not os.path.exists(worker_log)


def _try_the_tour(lines: list[str]) -> list[tuple[str, str]]:
    """Run each command the tour prints, as printed, in a shell (not the follow-forever one)."""
    start = next(i for i, ln in enumerate(lines) if "In another terminal" in ln)
    tried = []
    for line in lines[start + 1 :]:
        command = line.strip()
        if not command or "Ctrl-C" in command:
            continue
        done = subprocess.run(
            command, shell=True, cwd="/", capture_output=True, text=True, timeout=60, check=False
        )
        name = command.split(" kes.examples.bank")[0].split()[-1]
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        tried.append((name, done.stdout + done.stderr))
    return tried
