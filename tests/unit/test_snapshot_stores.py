"""One contract for every snapshot store backend (memory and RocksDB)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kes.stores import Checkpoint, MemorySnapshotStore, RocksDBSnapshotStore, SnapshotStore


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SnapshotStore]:
    if request.param == "memory":
        yield MemorySnapshotStore()
    else:
        rocks = RocksDBSnapshotStore(tmp_path / "snapshots")
        yield rocks
        rocks.close()


def test_empty_partition_has_no_checkpoint(store: SnapshotStore) -> None:
    part = store.partition("account.snapshots", 0)
    assert part.get("a") is None
    assert part.checkpoint() == Checkpoint(-1, -1)
    assert list(part.items()) == []


def test_write_stores_snapshots_and_checkpoint_together(store: SnapshotStore) -> None:
    part = store.partition("account.snapshots", 3)
    part.write({"a": b"A1", "b": b"B1"}, Checkpoint(10, 100))
    part.write({"a": b"A2", "b": None}, Checkpoint(12, 105))
    assert part.get("a") == b"A2"
    assert part.get("b") is None
    assert part.checkpoint() == Checkpoint(12, 105)
    assert list(part.items()) == [("a", b"A2")]


def test_the_events_low_water_is_written_and_cleared_with_the_checkpoint(
    store: SnapshotStore,
) -> None:
    part = store.partition("account.snapshots", 0)
    part.write({"a": b"A1"}, Checkpoint(10, 100, "app", events_from=42))
    assert part.checkpoint() == Checkpoint(10, 100, "app", 42)
    part.write({"a": b"A2"}, Checkpoint(11, 101, "app"))
    assert part.checkpoint() == Checkpoint(11, 101, "app", -1)


def test_partitions_are_separate(store: SnapshotStore) -> None:
    store.partition("account.snapshots", 0).write({"x": b"0"}, Checkpoint(1, 1))
    store.partition("account.snapshots", 1).write({"x": b"1"}, Checkpoint(2, 2))
    assert store.partition("account.snapshots", 0).get("x") == b"0"
    assert store.partition("account.snapshots", 1).get("x") == b"1"
    assert store.partition("other", 0).get("x") is None


def test_clear_forgets_everything(store: SnapshotStore) -> None:
    part = store.partition("account.snapshots", 0)
    part.write({"a": b"A"}, Checkpoint(5, 6))
    part.clear()
    assert part.get("a") is None
    assert part.checkpoint() == Checkpoint()


def test_entity_ids_are_any_unicode(store: SnapshotStore) -> None:
    part = store.partition("s", 0)
    part.write({"ünï/cødé@1": b"u", "": b"empty"}, Checkpoint(0, 0))
    assert part.get("ünï/cødé@1") == b"u"
    assert part.get("") == b"empty"
    assert dict(part.items()) == {"ünï/cødé@1": b"u", "": b"empty"}


def test_rocksdb_files_survive_a_reopen(tmp_path: Path) -> None:
    first = RocksDBSnapshotStore(tmp_path / "s")
    first.partition("account.snapshots", 2).write({"a": b"A"}, Checkpoint(7, 8))
    first.close()
    second = RocksDBSnapshotStore(tmp_path / "s")
    part = second.partition("account.snapshots", 2)
    assert part.get("a") == b"A"
    assert part.checkpoint() == Checkpoint(7, 8)
    second.close()


def test_a_checkpoint_keeps_its_owner_and_reads_the_older_sixteen_bytes() -> None:
    from kes.stores.snapshots import Checkpoint

    checkpoint = Checkpoint(41, 7, "bank-app")
    assert Checkpoint.decode(checkpoint.encode()) == checkpoint
    assert Checkpoint.decode(Checkpoint(3, 4).encode()[:16]) == Checkpoint(3, 4, "")


def test_a_checkpoint_record_names_the_group_and_reads_the_older_eight_bytes() -> None:
    from kes.streams.cycle.records import decode_checkpoint, encode_checkpoint

    assert decode_checkpoint(encode_checkpoint(1234, "bank-app")) == (1234, "bank-app")
    assert decode_checkpoint((99).to_bytes(8, "big", signed=True)) == (99, "")
    assert decode_checkpoint(encode_checkpoint(-1, "")) == (-1, "")


def _outcome(decided_ms: int, body: bytes = b"reply") -> bytes:
    return decided_ms.to_bytes(8, "big") + body


def test_outcomes_are_counted_indexed_and_left_out_of_items(store: SnapshotStore) -> None:
    part = store.partition("s", 0)
    part.write({"\x00a\x00c1": _outcome(300), "a": b"A"}, Checkpoint(1, 1))
    part.write({"\x00a\x00c2": _outcome(100), "\x00b\x00c1": _outcome(200)}, Checkpoint(2, 2))
    assert part.outcomes() == 3
    assert part.get("\x00a\x00c2") == _outcome(100)
    assert list(part.items()) == [("a", b"A")]
    # oldest first: by time, then by the newest `keep`
    assert part.expired(before_ms=250, keep=10, limit=10) == ["\x00a\x00c2", "\x00b\x00c1"]
    assert part.expired(before_ms=0, keep=1, limit=10) == ["\x00a\x00c2", "\x00b\x00c1"]
    assert part.expired(before_ms=0, keep=2, limit=10) == ["\x00a\x00c2"]
    assert part.expired(before_ms=1_000, keep=10, limit=1) == ["\x00a\x00c2"]
    assert part.expired(before_ms=0, keep=10, limit=10) == []


def test_deleted_and_replaced_outcomes_leave_no_index_entry(store: SnapshotStore) -> None:
    part = store.partition("s", 0)
    part.write({"\x00a\x00c1": _outcome(100), "\x00a\x00c2": _outcome(150)}, Checkpoint(1, 1))
    part.write({"\x00a\x00c1": None}, Checkpoint(2, 2))
    part.write({"\x00a\x00c2": _outcome(500, b"again")}, Checkpoint(3, 3))
    assert part.outcomes() == 1
    assert part.get("\x00a\x00c1") is None
    assert part.expired(before_ms=400, keep=10, limit=10) == []
    assert part.expired(before_ms=600, keep=10, limit=10) == ["\x00a\x00c2"]
    part.write({"\x00a\x00c2": None, "\x00gone\x00x": None}, Checkpoint(4, 4))
    assert part.outcomes() == 0
    assert part.expired(before_ms=10_000, keep=0, limit=10) == []


def test_outcomes_survive_reopening(tmp_path: Path) -> None:
    rocks = RocksDBSnapshotStore(tmp_path / "snapshots")
    rocks.partition("s", 0).write({"\x00a\x00c1": _outcome(100)}, Checkpoint(1, 1))
    rocks.close()
    again = RocksDBSnapshotStore(tmp_path / "snapshots")
    part = again.partition("s", 0)
    assert part.outcomes() == 1
    assert part.expired(before_ms=200, keep=10, limit=10) == ["\x00a\x00c1"]
    again.close()
