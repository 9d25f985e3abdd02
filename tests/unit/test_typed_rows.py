"""Row objects in a batch: decoded once, encoded once, isolated per event, strict on failure."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from kes.examples.bank.projections import BalanceRow
from kes.schemas.bank.v1 import bank_pb2
from kes.stores.readmodels import MemoryReadModelStore
from kes.streams.projections.projection import Projection
from kes.streams.projections.rows import RowBatch
from kes.streams.projections.testkit import given_events


@dataclass(frozen=True)
class Count:
    n: int

    def encode(self) -> bytes:
        if self.n == 13:
            raise ValueError("unlucky")
        return json.dumps(self.n).encode()


calls = {"decode": 0, "encode": 0}


def decode(data: bytes) -> Count:
    calls["decode"] += 1
    return Count(json.loads(data))


def encode(value: Count) -> bytes:
    calls["encode"] += 1
    return value.encode()


counter = Projection("counter", ["account"])


@counter.on(bank_pb2.AccountCredited)
def count(event, payload, rows):  # type: ignore[no-untyped-def]
    seen = rows.get_as(event.entity_id, decode) or Count(0)
    rows.put_as(event.entity_id, Count(seen.n + payload.amount), encode)
    if payload.amount < 0:
        raise ValueError("a negative credit")  # after the put: it must not stay


def _credits(entity: str, *amounts: int) -> list[tuple[str, bank_pb2.AccountCredited]]:
    return [(entity, bank_pb2.AccountCredited(amount=a)) for a in amounts]


def test_a_batch_decodes_and_encodes_a_row_once_however_many_events_touch_it() -> None:
    calls.update(decode=0, encode=0)
    scenario = given_events(counter, *_credits("a", 1, 1, 1, 1, 1), *_credits("b", 2, 2))
    scenario.then_rows({"a": b"5", "b": b"4"})
    assert calls == {"decode": 0, "encode": 2}  # nothing stored before: nothing to decode
    scenario.and_events(*_credits("a", 1, 1, 1))
    scenario.then_rows({"a": b"8", "b": b"4"})
    assert calls == {"decode": 1, "encode": 3}


def test_a_failed_handler_leaves_no_object_behind() -> None:
    given_events(counter, *_credits("a", 1, -5, 2)).then_rows({"a": b"3"}).then_dead_letters(
        "a negative credit"
    )


def test_an_object_that_cannot_be_encoded_dead_letters_its_event_only() -> None:
    # the batch ends with a at 6 + 7 = 13, which cannot be encoded: applied again strictly,
    # the credit of 7 is dead-lettered and the rest of the batch applies
    scenario = given_events(counter, *_credits("b", 3), *_credits("a", 6, 7))
    scenario.then_rows({"a": b"6", "b": b"3"}).then_dead_letters("unlucky")
    # only what the batch ends with is encoded: 13 on the way to 14 is never written
    given_events(counter, *_credits("a", 6, 7, 1)).then_rows({"a": b"14"}).then_dead_letters()


def test_bytes_and_objects_read_each_other() -> None:
    store = MemoryReadModelStore()
    store.write({"a": BalanceRow(1, 1, 1, "x").encode()}, {})
    batch = RowBatch(store)
    assert batch.get_as("a", BalanceRow.decode) == BalanceRow(1, 1, 1, "x")
    batch.put_as("a", BalanceRow(2, 2, 2, "x"), BalanceRow.encode)
    assert BalanceRow.decode(batch.get("a") or b"") == BalanceRow(2, 2, 2, "x")
    child = batch.child()
    child.put("a", BalanceRow(3, 3, 3, "x").encode())
    assert child.get_as("a", BalanceRow.decode) == BalanceRow(3, 3, 3, "x")
    assert batch.get_as("a", BalanceRow.decode) == BalanceRow(2, 2, 2, "x")  # not merged yet
    batch.merge(child)
    child = batch.child()
    child.delete("a")
    batch.merge(child)
    assert batch.get_as("a", BalanceRow.decode) is None
    assert dict(batch.rows) == {"a": None}


def test_in_the_projectors_transaction_an_unencodable_object_asks_for_the_strict_redo() -> None:
    from kes.schemas.errors import BatchRedoError
    from kes.streams.projections.projection import project
    from kes.streams.projections.rows import RowTransaction

    records = given_events(counter).records(*_credits("a", 6, 7))
    store = MemoryReadModelStore()
    with pytest.raises(BatchRedoError):
        project(counter, records, RowTransaction(store), pause=lambda _: None)
    strict = RowTransaction(store, strict=True)
    result = project(counter, records, strict, pause=lambda _: None)
    strict.commit(result.offsets)
    assert store.get("a") == b"6" and len(result.dead_letters) == 1
