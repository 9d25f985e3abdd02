"""The pure core imports no Kafka, Faust, RocksDB or PostgreSQL client: checked in a fresh
interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "streams.behavior",
    "streams.decision",
    "streams.testkit",
    "streams.projectiontestkit",
    "streams.process",
    "streams.process_advance",
    "streams.process_testkit",
    "streams.snapshotpolicy",
    "streams.statemigration",
    "streams.adapters",
    "examples.bank.domain",
    "examples.bank.transfers",
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
