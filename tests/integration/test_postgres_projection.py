"""The bank's PostgreSQL balances table equals the fold of the log through projection SIGKILLs and
a PostgreSQL restart under load (real Kafka, real PostgreSQL, `kes projection run` processes).

The table and the offsets are read back with the server's own psql. Smoke-sized by default;
`KES_PG_PROJECTION_COMMANDS=20000 KES_PG_PROJECTION_KILLS=6` runs a bigger one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer

from kes.examples.bank import account
from kes.examples.bank.projections import balances_table
from kes.schemas.bank.v1 import bank_pb2
from kes.streams.config.settings import Settings
from kes.streams.kafka.watermarks import watermarks
from kes.streams.operations.verify import verify
from kes.streams.projections.admin import dead_letter_count
from kes.topology.localpostgres import LocalPostgres
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.workers import ROOT, AppCluster, ProjectionProcess

COMMANDS = int(os.environ.get("KES_PG_PROJECTION_COMMANDS", "600"))
KILLS = int(os.environ.get("KES_PG_PROJECTION_KILLS", "2"))


class Table:
    """The projection's rows in PostgreSQL, read with psql."""

    def __init__(self, server: LocalPostgres, dsn: str, group: str) -> None:
        self.server = server
        self.db = dsn.rsplit("/", 1)[1]
        self.group = group

    def offsets(self) -> dict[tuple[str, int], int]:
        rows = self.server.psql(
            "SELECT topic, partition, next_offset FROM kes_projection_offsets "
            f"WHERE projection = '{self.group}'",
            self.db,
        )
        return {(t, int(p)): int(o) for t, p, o in rows}

    def balances(self) -> dict[str, tuple[str, int, int, int]]:
        rows = self.server.psql(
            "SELECT account_id, owner, balance, revision, events FROM balances", self.db
        )
        return {a: (owner, int(b), int(r), int(e)) for a, owner, b, r, e in rows}


def ends(settings: Settings) -> dict[tuple[str, int], int]:
    topic = settings.topics("account").events
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "ends"})
    try:
        marks = watermarks(consumer, topic, settings.partitions)
    finally:
        consumer.close()
    return {(topic, p): high for p, (_, high) in marks.items() if high > 0}


def wait_stored(table: Table, process: ProjectionProcess, beyond: int) -> int:
    """Until the stored offsets add up to more than `beyond`; their sum."""
    deadline = time.monotonic() + 120
    while True:
        assert process.alive(), process.log_path.read_text(errors="replace")[-3000:]
        total = sum(table.offsets().values())
        if total > beyond:
            return total
        assert time.monotonic() < deadline, f"no progress beyond {beyond}"
        time.sleep(0.05)


def test_postgres_balances_equal_the_fold_through_sigkills_and_a_server_restart(
    app_cluster: Callable[..., AppCluster],
    postgres: LocalPostgres,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    env = {**cluster.env(), "KES_POSTGRES_DSN": postgres_dsn, "KES_DATA_DIR": str(tmp_path)}
    settings = Settings.from_env(env)
    topics = settings.topics("account")
    bootstrap = settings.bootstrap_servers
    table = Table(postgres, postgres_dsn, balances_table.group_id(settings.topic_prefix))
    log = tmp_path / "projection.log"
    projection = ProjectionProcess(env, log, balances_table.name).start()
    worker = cluster.worker("w1")
    try:
        worker.wait_ready()
        commands = bank_commands(COMMANDS, accounts=max(20, COMMANDS // 25), seed=11)
        size = -(-len(commands) // (KILLS + 2))
        chunks = [commands[i : i + size] for i in range(0, len(commands), size)]
        ids: list[str] = []
        progress = 0
        for turn, chunk in enumerate(chunks):
            ids += produce(bootstrap, topics, chunk)
            if turn < KILLS:  # SIGKILL as soon as it has stored some of the new events
                progress = wait_stored(table, projection, progress)
                projection.kill()
                projection.start()
            elif turn == KILLS:  # restart the server under it: its next batch fails, it exits
                progress = wait_stored(table, projection, progress)
                postgres.restart()
        deadline = time.monotonic() + 90
        while projection.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert projection.proc is not None and projection.proc.returncode == 1
        said = log.read_text(errors="replace").splitlines()[-1]
        assert said.startswith("kes: error: PostgreSQL at 127.0.0.1:") and "unavailable" in said
        projection.start()

        collect_replies(bootstrap, topics, ids, timeout=180)
        checked = verify(account, topics, {"bootstrap.servers": bootstrap})
        assert checked.ok, checked.summary()
        assert checked.events > COMMANDS // 2
        wanted = ends(settings)
        deadline = time.monotonic() + 120
        while (stored := table.offsets()) != wanted:
            assert projection.alive(), log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"stored {stored}, log ends {wanted}"
            time.sleep(0.2)

        rows = table.balances()
        assert rows.keys() == checked.states.keys()
        for entity, state in checked.states.items():
            assert isinstance(state, bank_pb2.Account)
            revision = checked.revisions[entity]
            assert rows[entity] == (state.owner, state.balance, revision, revision), entity
        assert dead_letter_count(balances_table, settings) == 0  # no opening applied twice

        shown = subprocess.run(
            [sys.executable, "-m", "kes.streams.cli", "projection", "status", "kes.examples.bank",
             balances_table.name],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert f"projection {balances_table.name}: lag 0; read model PostgreSQL" in shown.stdout
        projection.stop()
    finally:
        if projection.alive():
            projection.kill()
