"""`kes demo`: the whole thing on one machine, for a first look.

Starts (or reuses, with KAFKA_BOOTSTRAP_SERVERS) a broker, creates the bank example's topics,
starts a worker for it, and streams bank commands at a modest rate; prints where to look.
Ctrl-C stops everything the demo started.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from google.protobuf.message import Message

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.errors import KesError
from kes.streams.client.client import CommandClient
from kes.streams.config.settings import Settings
from kes.streams.kafka.config import confluent_config
from kes.topology.admin import apply
from kes.topology.localbroker import LocalBroker

__all__ = ["DemoOptions", "run_demo"]


@dataclass(frozen=True)
class DemoOptions:
    """How long and how fast the demo runs."""

    rate: float = 50.0
    """Commands per second streamed by the demo producer."""
    accounts: int = 200
    duration: float | None = None
    """Stop by itself after this many seconds (None: until Ctrl-C)."""
    web_port: int = 6066


def _say(text: str = "") -> None:
    print(text, flush=True)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KesError(f"the demo worker exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if json.load(resp).get("ready"):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise KesError(f"the demo worker was not ready within {timeout:g}s")


def _commands(rng: random.Random, accounts: list[str], opened: set[str]) -> tuple[str, Message]:
    account = rng.choice(accounts)
    if account not in opened:
        opened.add(account)
        return account, bank_pb2.OpenAccount(owner=account.upper(), opening_balance=1_000)
    amount = rng.randint(1, 400)
    if rng.random() < 0.55:
        return account, bank_pb2.CreditAccount(amount=amount)
    return account, bank_pb2.DebitAccount(amount=amount)


def run_demo(options: DemoOptions) -> int:
    """Run the demo in the foreground; returns an exit code."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker: LocalBroker | None = None
    children: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="kes-demo-"))
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            _say("1/4 starting a local Kafka broker (first run: Maven fetches the jars) ...")
            broker = LocalBroker()
            bootstrap = broker.start()
        else:
            _say(f"1/4 using the Kafka cluster at {bootstrap}")
        settings = Settings.from_env(bootstrap_servers=bootstrap, app_id="kes-demo")
        topics = settings.topics("account")
        _say(f"2/4 creating the bank example's topics ({topics.commands}, {topics.events}, ...)")
        plan = apply(topics, confluent_config(settings))
        if not plan.ok:
            raise KesError("the topic layout is wrong:\n" + plan.render())
        _say("3/4 starting a worker and the account-balances projection for kes.examples.bank ...")
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KES_APP_ID": settings.app_id,
            "KES_DATA_DIR": str(workdir / "worker"),
            "KES_WEB_PORT": str(options.web_port),
        }
        kes = [sys.executable, "-m", "kes.streams.cli"]
        for name, args in [
            ("worker", ["worker", "kes.examples.bank"]),
            ("projection", ["projection", "run", "kes.examples.bank", "account-balances"]),
        ]:
            with (workdir / f"{name}.log").open("wb") as log:
                children.append(
                    subprocess.Popen([*kes, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
                )
        _wait_healthy(options.web_port, children[0])
        _say(f"4/4 streaming bank commands at {options.rate:g}/s to {options.accounts} accounts")
        _tour(bootstrap, topics.prefix, options.web_port, workdir, settings.app_id)
        _stream(settings, options, stop)
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        _say("demo stopped; everything it started is gone.")


def _kes_command() -> str:
    """How to run `kes` from another terminal: the script beside this interpreter if there is
    one (`.venv/bin/kes` after `make install`), else the module through this interpreter."""
    script = Path(sys.executable).parent / "kes"
    return str(script) if script.exists() else f"{sys.executable} -m kes.streams.cli"


def _tour(bootstrap: str, prefix: str, port: int, workdir: Path, app_id: str) -> None:
    env = f"KAFKA_BOOTSTRAP_SERVERS={bootstrap} KES_APP_ID={app_id}"
    if prefix:
        env += f" KES_TOPIC_PREFIX={prefix}"
    kes = f"{env} {_kes_command()}"
    _say()
    _say(f"  dashboard   http://127.0.0.1:{port}/      (lag, throughput, partitions)")
    _say(f"  health      http://127.0.0.1:{port}/health")
    _say(f"  worker log  {workdir / 'worker.log'}")
    _say()
    _say("  In another terminal, try (each line runs as printed):")
    _say(f"    {kes} send kes.examples.bank account acc-1 CreditAccount '{{\"amount\": 5}}'")
    _say(f"    {kes} events kes.examples.bank account --entity acc-1 --from-beginning")
    _say(f"    {kes} lag kes.examples.bank")
    data = f"KES_DATA_DIR={workdir / 'worker'}"  # where the projection keeps its read model
    _say(f"    {data} {kes} projection status kes.examples.bank account-balances")
    _say(f"    {kes} events kes.examples.bank account --follow      (Ctrl-C to stop)")
    _say()
    _say("  Ctrl-C stops the demo.")


def _stream(settings: Settings, options: DemoOptions, stop: threading.Event) -> None:
    rng = random.Random(42)
    accounts = [f"acc-{i}" for i in range(1, options.accounts + 1)]
    opened: set[str] = set()
    began = reported = time.monotonic()
    sent = 0
    with CommandClient(
        settings.topics("account"), settings.bootstrap_servers, settings.client_config
    ) as client:
        while not stop.is_set():
            elapsed = time.monotonic() - began
            if options.duration is not None and elapsed >= options.duration:
                break
            due = int(elapsed * options.rate) + 1
            while sent < due:
                account, command = _commands(rng, accounts, opened)
                client.send(account, command)
                sent += 1
            if time.monotonic() - reported >= 10:
                reported = time.monotonic()
                _say(f"  ... {sent} commands sent")
            stop.wait(0.05)
