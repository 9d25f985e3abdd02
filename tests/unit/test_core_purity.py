"""The pure core imports no Kafka, Faust, RocksDB or PostgreSQL client: checked in a fresh
interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "kes.streams",
    "kes.streams.core",
    "kes.streams.telemetry",
    "kes.streams.cycle",
    "kes.streams.projections",
    "kes.streams.processes",
    "kes.topology",
    "kes.streams.core.behavior",
    "kes.streams.core.decision",
    "kes.streams.core.testkit",
    "kes.streams.projections.testkit",
    "kes.streams.processes.process",
    "kes.streams.processes.advance",
    "kes.streams.processes.testkit",
    "kes.streams.cycle.snapshotpolicy",
    "kes.examples.bank.domain",
    "kes.examples.bank.transfers",
    "kes.streams.core.statemigration",
    "kes.streams.core.adapters",
    "kes.streams.core.eventversions",
]
FORBIDDEN = ["faust", "aiokafka", "confluent_kafka", "rocksdict", "mode", "psycopg"]

SCRIPT = """
import importlib, json, sys
for name in {core!r}:
    importlib.import_module(name)
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({forbidden!r}))))
"""


def test_core_modules_do_not_import_io_clients() -> None:
    script = SCRIPT.format(core=CORE, forbidden=FORBIDDEN)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    leaked = json.loads(done.stdout.strip().splitlines()[-1])
    assert leaked == [], f"the pure core pulled in {leaked}"
