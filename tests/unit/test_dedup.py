"""`once` with both ledgers: a redelivered event is skipped, a failed handler is not recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.stores.ledger import MemoryRevisionLedger, RevisionLedger, RocksDBRevisionLedger
from kes.streams.projections.dedup import once


@pytest.fixture(params=["memory", "rocksdb"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RevisionLedger]:
    if request.param == "memory":
        yield MemoryRevisionLedger()
        return
    store = RocksDBRevisionLedger(tmp_path / "ledger")
    yield store
    store.close()


def _event(entity: str, revision: int) -> EventEnvelope:
    return EventEnvelope(entity_id=entity, revision=revision)


def test_a_redelivered_event_runs_its_effect_once(ledger: RevisionLedger) -> None:
    effects: list[tuple[str, int]] = []

    @once(ledger)
    def notify(event: EventEnvelope, payload: bank_pb2.AccountCredited) -> None:
        effects.append((event.entity_id, event.revision))

    payload = bank_pb2.AccountCredited(amount=1)
    for revision in (1, 2, 3, 2, 3, 4):  # a crash after 3: 2 and 3 come again
        notify(_event("a", revision), payload)
    notify(_event("b", 1), payload)
    assert effects == [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1)]
    assert ledger.last("a") == 4 and ledger.last("b") == 1 and ledger.last("c") == 0


def test_a_failed_effect_is_not_recorded_and_runs_again(ledger: RevisionLedger) -> None:
    calls = []

    @once(ledger)
    def flaky(event: EventEnvelope, payload: bank_pb2.AccountCredited) -> None:
        calls.append(event.revision)
        if len(calls) == 1:
            raise ConnectionError("mail server down")

    with pytest.raises(ConnectionError):
        flaky(_event("a", 1), bank_pb2.AccountCredited())
    flaky(_event("a", 1), bank_pb2.AccountCredited())
    assert calls == [1, 1] and ledger.last("a") == 1


def test_the_rocksdb_ledger_survives_reopening(tmp_path: Path) -> None:
    first = RocksDBRevisionLedger(tmp_path / "ledger")
    first.record("a", 7)
    first.record("a", 5)  # lower: ignored
    first.close()
    again = RocksDBRevisionLedger(tmp_path / "ledger")
    assert again.last("a") == 7
    again.close()
