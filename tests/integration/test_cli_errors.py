"""Every `kes` command that talks to Kafka, pointed at an address where no broker answers: one
line on stderr naming the address and the likely cause, exit 1, no traceback, within 5 s."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.fixtures.workers import ROOT

COMMANDS = [
    ["topics", "plan", "kes.examples.bank"],
    ["worker", "kes.examples.bank"],
    ["send", "kes.examples.bank", "account", "acc-1", "CreditAccount", '{"amount": 1}'],
    ["events", "kes.examples.bank", "account"],
    ["verify", "kes.examples.bank", "account"],
    ["projection", "status", "kes.examples.bank", "account-balances"],
    ["lag", "kes.examples.bank"],
    ["skip-deleted", "kes.examples.bank", "--aggregate", "account", "--partition", "0"],
    ["snapshots", "rebuild", "kes.examples.bank", "account"],
    ["dlq", "list", "kes.examples.bank", "account"],
]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """A port where an HTTP server listens: it accepts connections but does not speak Kafka."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


@pytest.mark.parametrize("where", ["nothing is listening", "not Kafka"])
def test_every_command_says_in_one_line_that_kafka_is_unreachable(
    where: str, http_port: int
) -> None:
    port = _closed_port() if where == "nothing is listening" else http_port
    address = f"127.0.0.1:{port}"
    began = time.monotonic()
    commands = COMMANDS if where == "nothing is listening" else COMMANDS[:3]
    pipe = subprocess.PIPE
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "kes.streams.cli", *argv, "--bootstrap", address],
            cwd=ROOT,
            stdout=pipe,
            stderr=pipe,
            text=True,
        )
        for argv in commands
    ]
    for argv, run in zip(commands, runs, strict=True):
        out, err = run.communicate(timeout=60)
        assert run.returncode == 1, (argv, out, err)
        lines = [line for line in (out + err).splitlines() if line.strip()]
        assert len(lines) == 1, (argv, lines)
        assert f"cannot reach Kafka at {address}" in lines[0] and where in lines[0], lines[0]
    # All ran at once on a small machine: each alone is under 5 s (the probe waits 3 s).
    assert time.monotonic() - began < 5 * len(commands)
