"""One contract for every read-model store backend (memory, RocksDB, PostgreSQL), and the row
batch. The PostgreSQL backend runs against the session's real server (tests.fixtures.postgres)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kes.schemas.errors import ConfigurationError
from kes.stores import (
    MemoryReadModelStore,
    PostgresReadModelStore,
    ReadModelStore,
    RocksDBReadModelStore,
)
from kes.streams.projections.rows import RowBatch


@pytest.fixture(params=["memory", "rocksdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadModelStore]:
    if request.param == "memory":
        yield MemoryReadModelStore()
    elif request.param == "rocksdb":
        rocks = RocksDBReadModelStore(tmp_path / "balances")
        yield rocks
        rocks.close()
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        postgres = PostgresReadModelStore(dsn, "balances")
        PostgresReadModelStore(dsn, "other").write({"a": b"not ours"}, {("t.events", 0): 99})
        yield postgres  # beside another read model in the same tables, which it never sees
        postgres.close()


def test_an_empty_store_has_no_rows_and_no_offsets(store: ReadModelStore) -> None:
    assert store.get("a") is None
    assert list(store.items()) == []
    assert store.offsets() == {}


def test_rows_and_offsets_are_written_together(store: ReadModelStore) -> None:
    store.write({"a": b"A1", "b": b"B1"}, {("t.events", 0): 10, ("t.events", 1): 3})
    store.write({"a": b"A2", "b": None}, {("t.events", 0): 12})
    assert store.get("a") == b"A2"
    assert store.get("b") is None
    assert store.offsets() == {("t.events", 0): 12, ("t.events", 1): 3}
    assert list(store.items()) == [("a", b"A2")]


def test_an_offsets_only_write_keeps_the_rows(store: ReadModelStore) -> None:
    store.write({"a": b"A"}, {("t", 0): 1})
    store.write({}, {("t", 0): 5, ("u.events", 7): 2})
    assert store.get("a") == b"A"
    assert store.offsets() == {("t", 0): 5, ("u.events", 7): 2}


def test_items_filter_by_prefix_in_key_order(store: ReadModelStore) -> None:
    store.write({"acc/2": b"2", "acc/1": b"1", "other": b"x", "acc": b"0"}, {})
    assert list(store.items("acc/")) == [("acc/1", b"1"), ("acc/2", b"2")]
    assert [k for k, _ in store.items()] == ["acc", "acc/1", "acc/2", "other"]


def test_clear_forgets_rows_and_offsets(store: ReadModelStore) -> None:
    store.write({"a": b"A"}, {("t", 0): 5})
    store.clear()
    assert store.get("a") is None
    assert store.offsets() == {}
    store.write({"b": b"B"}, {("t", 0): 1})
    assert store.offsets() == {("t", 0): 1}


def test_keys_are_any_unicode_and_topics_any_legal_name(store: ReadModelStore) -> None:
    store.write({"ünï/cødé@1": b"u", "": b"empty"}, {("p-x.y_z.events", 11): 2**40})
    assert store.get("ünï/cødé@1") == b"u"
    assert store.get("") == b"empty"
    assert store.offsets() == {("p-x.y_z.events", 11): 2**40}


def test_row_batch_reads_its_own_writes_then_the_store(store: ReadModelStore) -> None:
    store.write({"a": b"stored", "b": b"stored"}, {})
    batch = RowBatch(store)
    batch.put("a", b"new")
    batch.delete("b")
    assert (batch.get("a"), batch.get("b"), batch.get("c")) == (b"new", None, None)
    assert store.get("a") == b"stored"  # nothing reaches the store before the write
    store.write(batch.rows, {("t", 0): 1})
    assert (store.get("a"), store.get("b")) == (b"new", None)


def test_a_child_batch_is_kept_only_when_merged() -> None:
    batch = RowBatch(MemoryReadModelStore())
    batch.put("a", b"1")
    failed = batch.child()
    failed.put("a", b"2")
    failed.put("b", b"2")
    assert failed.get("a") == b"2"
    assert batch.rows == {"a": b"1"}
    ok = batch.child()
    ok.put("c", b"3")
    batch.merge(ok)
    assert batch.rows == {"a": b"1", "c": b"3"}


def test_rows_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        RowBatch(MemoryReadModelStore()).put("a", "text")  # type: ignore[arg-type]


def test_rocksdb_keeps_rows_and_offsets_across_reopen(tmp_path: Path) -> None:
    first = RocksDBReadModelStore(tmp_path / "rm")
    first.write({"a": b"A"}, {("t", 0): 7})
    first.close()
    again = RocksDBReadModelStore(tmp_path / "rm")
    assert (again.get("a"), again.offsets()) == (b"A", {("t", 0): 7})
    again.close()


def test_rocksdb_survives_sigkill_of_the_writer(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys; from pathlib import Path\n"
        "from stores import RocksDBReadModelStore\n"
        "s = RocksDBReadModelStore(Path(sys.argv[1]))\n"
        "for i in range(100): s.write({f'k{i}': b'v'}, {('t', 0): i + 1})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "rm")], check=False, timeout=60
    )
    assert done.returncode == -9
    store = RocksDBReadModelStore(tmp_path / "rm")
    assert store.offsets() == {("t", 0): 100}
    assert len(list(store.items())) == 100
    store.close()


def test_rocksdb_read_only_sees_a_live_writer_and_refuses_writes(tmp_path: Path) -> None:
    writer = RocksDBReadModelStore(tmp_path / "rm")
    writer.write({"a": b"A"}, {("t", 0): 1})
    reader = RocksDBReadModelStore(tmp_path / "rm", read_only=True)
    assert (reader.get("a"), reader.offsets()) == (b"A", {("t", 0): 1})
    with pytest.raises(ConfigurationError, match="read-only"):
        reader.write({}, {("t", 0): 2})
    reader.close()
    writer.close()
    with pytest.raises(ConfigurationError, match="no read model"):
        RocksDBReadModelStore(tmp_path / "missing", read_only=True)
