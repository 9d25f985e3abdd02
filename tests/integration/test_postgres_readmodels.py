"""PostgreSQL read models against a real server (and, for the projector, a real broker): one
transaction per batch, savepoints per event, offsets by compare-and-set, clear errors."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf.message import Message

from kes.examples.bank.projections import balances, balances_table
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_dead_letter, encode_event
from kes.schemas.errors import (
    BatchRedoError,
    ConfigurationError,
    ReadModelConflictError,
    ReadModelUnavailableError,
)
from kes.stores import PostgresReadModelStore, SqlReadModel
from kes.streams.config.settings import Settings
from kes.streams.kafka.readback import read_topic
from kes.streams.projections.admin import rebuild
from kes.streams.projections.projection import EventRecord, SqlProjection, project
from kes.streams.projections.projector import Projector
from kes.streams.projections.readmodels import open_read_model
from kes.topology.admin import apply
from kes.topology.localpostgres import LocalPostgres
from tests.fixtures.standins import EventWriter, event
from tests.fixtures.workers import ROOT, free_port
from tests.readme import python_block

TABLE = """CREATE TABLE IF NOT EXISTS seen (id text PRIMARY KEY, n bigint NOT NULL)"""


def counting(name: str = "counting") -> SqlProjection:
    """Counts credits per account in `seen`; a credit of 13 fails after writing (a bad handler)."""
    projection = SqlProjection(name, ["account"], schema=[TABLE], tables=["seen"])

    @projection.on(bank_pb2.AccountCredited)
    def credited(event: object, payload: bank_pb2.AccountCredited, sql: object) -> None:
        assert hasattr(sql, "execute")
        sql.execute(
            "INSERT INTO seen VALUES (%s, 1) ON CONFLICT (id) DO UPDATE SET n = seen.n + 1",
            (event.entity_id,),  # type: ignore[attr-defined]
        )
        if payload.amount == 13:
            raise ValueError("unlucky")

    return projection


def record(offset: int, entity: str, payload: Message, partition: int = 0) -> EventRecord:
    value = encode_event(event(entity, offset + 1, payload))
    return EventRecord("t.events", partition, offset, entity.encode(), value)


def test_a_batch_commits_its_statements_with_the_offsets_and_a_failed_event_leaves_nothing(
    postgres: LocalPostgres, postgres_dsn: str
) -> None:
    model = SqlReadModel(postgres_dsn, "g", schema=[TABLE], tables=["seen"])
    records = [
        record(0, "a", bank_pb2.AccountCredited(amount=1)),
        record(1, "a", bank_pb2.AccountCredited(amount=13)),  # writes, then raises: undone
        record(2, "b", bank_pb2.AccountCredited(amount=2)),
        record(3, "a", bank_pb2.AccountCredited(amount=3)),
    ]
    fast = model.begin()  # no savepoints: a handler failing after a statement cannot be undone
    with pytest.raises(BatchRedoError):
        project(counting(), records, fast, pause=lambda _: None)
    fast.close()
    fast.close()  # closing twice is harmless
    transaction = model.begin(undoable=True)
    result = project(counting(), records, transaction, pause=lambda _: None)
    assert (result.applied, len(result.dead_letters)) == (3, 1)
    db = postgres_dsn.rsplit("/", 1)[1]
    assert postgres.psql("SELECT count(*) FROM seen", db) == [["0"]]  # not committed yet
    transaction.commit(result.offsets)
    transaction.close()
    assert postgres.psql("SELECT id, n FROM seen ORDER BY id", db) == [["a", "2"], ["b", "1"]]
    offsets = postgres.psql("SELECT * FROM kes_projection_offsets", db)
    assert offsets == [["g", "t.events", "0", "4"]]
    assert model.offsets() == {("t.events", 0): 4}

    rolled = model.begin()  # a batch that is closed without commit stores nothing
    project(counting(), [record(4, "c", bank_pb2.AccountCredited(amount=1))], rolled)
    rolled.close()
    assert postgres.psql("SELECT count(*) FROM seen WHERE id = 'c'", db) == [["0"]]
    model.clear()
    assert postgres.psql("SELECT count(*) FROM seen", db) == [["0"]]
    assert model.offsets() == {}
    model.close()


@pytest.mark.parametrize("kind", ["rows", "sql"])
def test_a_process_that_lost_a_partition_cannot_store_over_its_successor(
    postgres_dsn: str, kind: str
) -> None:
    def open_one() -> PostgresReadModelStore | SqlReadModel:
        if kind == "rows":
            return PostgresReadModelStore(postgres_dsn, "g")
        return SqlReadModel(postgres_dsn, "g")

    zombie, successor = open_one(), open_one()
    zombie.write({}, {("t", 0): 10, ("t", 1): 5})
    assert successor.offsets() == {("t", 0): 10, ("t", 1): 5}
    successor.write({}, {("t", 0): 20})
    with pytest.raises(ReadModelConflictError, match=r"another process stored t\[0\]"):
        zombie.write({}, {("t", 0): 15, ("t", 1): 6})  # rolled back whole: t[1] stays 5
    assert successor.offsets() == {("t", 0): 20, ("t", 1): 5}
    fresh = open_one()  # one that never read t[2] cannot insert it over another's either
    successor.write({}, {("t", 2): 1})
    with pytest.raises(ReadModelConflictError):
        fresh.write({}, {("t", 2): 3})
    assert zombie.offsets() == {("t", 0): 20, ("t", 1): 5, ("t", 2): 1}  # re-read: goes on
    zombie.write({}, {("t", 0): 21})
    for store in (zombie, successor, fresh):
        store.close()


def test_an_unreachable_server_is_one_clear_line(kafka_bootstrap: str) -> None:
    dsn = f"postgresql://kes:secret-pw@127.0.0.1:{free_port()}/kes"
    with pytest.raises(ReadModelUnavailableError) as caught:
        PostgresReadModelStore(dsn, "g")
    message = str(caught.value)
    assert "\n" not in message and "secret-pw" not in message
    assert message.startswith(f"PostgreSQL at 127.0.0.1:{dsn.rsplit(':', 1)[1].split('/')[0]}")
    assert "KES_POSTGRES_DSN" in message
    with pytest.raises(ConfigurationError, match="set KES_POSTGRES_DSN"):
        open_read_model(balances_table, Settings())
    assert "secret-pw" not in repr(Settings(postgres_dsn=dsn))
    done = subprocess.run(
        [sys.executable, "-m", "kes.streams.cli", "projection", "run", "kes.examples.bank",
         balances_table.name],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "KES_POSTGRES_DSN": dsn,
             "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "is unavailable" in done.stderr, done.stderr


def test_a_writer_killed_mid_transaction_leaves_the_last_committed_batch(
    postgres: LocalPostgres, postgres_dsn: str
) -> None:
    script = (
        "import os, signal, sys\n"
        "from stores import PostgresReadModelStore\n"
        "s = PostgresReadModelStore(sys.argv[1], 'g')\n"
        "for i in range(50): s.write({f'k{i}': b'v'}, {('t', 0): i + 1})\n"
        "c = s._db.conn\n"
        "c.execute('BEGIN')\n"
        "c.execute(\"INSERT INTO kes_readmodel_rows VALUES ('g', 'half', 'x')\")\n"
        'c.execute("UPDATE kes_projection_offsets SET next_offset = 999")\n'
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, postgres_dsn], timeout=60, check=False)
    assert done.returncode == -9
    store = PostgresReadModelStore(postgres_dsn, "g")
    assert store.offsets() == {("t", 0): 50}
    assert len(list(store.items())) == 50 and store.get("half") is None
    store.close()


def test_the_bank_sql_projection_writes_its_table_and_dead_letters_a_bad_event(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    postgres: LocalPostgres,
    postgres_dsn: str,
    in_process: Callable[[Projector], Projector],
    tmp_path: Path,
) -> None:
    settings = on_topics(kafka_bootstrap, unique_name("t"), 2, tmp_path, postgres_dsn=postgres_dsn)
    topics = settings.topics("account")
    EventWriter(kafka_bootstrap, topics).write(
        event("a", 1, bank_pb2.AccountOpened(owner="Ann", balance=10)),
        event("a", 2, bank_pb2.AccountCredited(amount=32)),
        event("ghost", 1, bank_pb2.AccountCredited(amount=1)),  # no account: dead-lettered
        event("a", 3, bank_pb2.AccountDebited(amount=2)),
    )
    projector = in_process(Projector(balances_table, settings))
    ends = {p: high for p, (_, high) in _ends(settings).items()}
    projector.wait_for({p: end - 1 for p, end in ends.items() if end > 0}, 60)
    db = postgres_dsn.rsplit("/", 1)[1]
    rows = postgres.psql("SELECT account_id, owner, balance, revision, events FROM balances", db)
    assert rows == [["a", "Ann", "40", "3", "3"]]
    stored = postgres.psql(
        "SELECT topic, partition, next_offset FROM kes_projection_offsets "
        f"WHERE projection = '{balances_table.group_id(settings.topic_prefix)}' ORDER BY 2",
        db,
    )
    assert [(t, int(p), int(o)) for t, p, o in stored] == [
        (topics.events, p, end) for p, end in sorted(ends.items()) if end > 0
    ]
    assert projector.stats.dead_letters == 1
    config = {"bootstrap.servers": kafka_bootstrap}
    [letter] = [decode_dead_letter(v) for _, _, v in read_topic(projector.dlq_topic, 1, config)]
    assert letter.reason == "HANDLER_ERROR" and "unknown account" in letter.error


def test_row_projections_share_a_postgres_read_model_and_rebuild_it(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    postgres_dsn: str,
    in_process: Callable[[Projector], Projector],
    tmp_path: Path,
) -> None:
    settings = on_topics(
        kafka_bootstrap, unique_name("t"), 1, tmp_path,
        postgres_dsn=postgres_dsn, readmodel_store="postgres",
    )  # fmt: skip
    topics = settings.topics("account")
    EventWriter(kafka_bootstrap, topics).write(
        event("a", 1, bank_pb2.AccountOpened(owner="Ann", balance=1)),
        event("a", 2, bank_pb2.AccountCredited(amount=4)),
    )
    projector = Projector(balances, settings)
    assert isinstance(projector.store, PostgresReadModelStore)
    stop = threading.Event()
    thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    thread.start()
    end = _ends(settings)[0][1]  # two events and the transaction's marker
    projector.wait_for({0: end - 1}, 60)
    stop.set()
    thread.join(60)
    store = open_read_model(balances, settings)
    assert [k for k, _ in store.items()] == ["a"]
    before = store.get("a")
    assert store.offsets() == {(topics.events, 0): end}
    assert rebuild(balances, settings, store) == {(topics.events, 0): 0}
    assert (list(store.items()), store.offsets()) == ([], {(topics.events, 0): 0})
    store.close()
    again = in_process(Projector(balances, settings))  # replays into the emptied table
    again.wait_for({0: end - 1}, 60)
    assert again.store.get("a") == before is not None


def on_topics(
    bootstrap: str, prefix: str, partitions: int, tmp_path: Path, **more: str
) -> Settings:
    """Settings on fresh topics of the account aggregate, created."""
    settings = Settings(
        bootstrap_servers=bootstrap,
        partitions=partitions,
        topic_prefix=prefix + "-",
        data_dir=tmp_path / "data",
        session_timeout_ms=6000,
        **more,  # type: ignore[arg-type]
    )
    apply(settings.topics("account"), {"bootstrap.servers": bootstrap})
    return settings


def _ends(settings: Settings) -> dict[int, tuple[int, int]]:
    from confluent_kafka import Consumer

    from kes.streams.kafka.watermarks import watermarks

    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "ends"})
    try:
        return watermarks(consumer, settings.topics("account").events, settings.partitions)
    finally:
        consumer.close()


def test_the_readme_sql_projection_counts_owners(
    postgres: LocalPostgres, postgres_dsn: str
) -> None:
    namespace: dict[str, object] = {}
    exec(compile(python_block("SqlProjection("), "README.md", "exec"), namespace)
    owners = namespace["owners"]
    assert isinstance(owners, SqlProjection)
    model = SqlReadModel(postgres_dsn, "owners", schema=owners.schema, tables=owners.tables)
    opened = [record(i, f"acc-{i}", bank_pb2.AccountOpened(owner="ann")) for i in range(3)]
    with model.begin() as transaction:
        result = project(owners, opened, transaction)
        transaction.commit(result.offsets)
    model.close()
    db = postgres_dsn.rsplit("/", 1)[1]
    assert postgres.psql("SELECT owner, accounts FROM owners", db) == [["ann", "3"]]
