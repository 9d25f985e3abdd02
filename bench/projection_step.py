"""The projection step without Kafka: CPU per event of `kes.streams.projections.projection.project`
in one run.

Three projections over the same synthetic bank events (500 accounts, batches of 5,000):
- `bytes`: handlers that put a constant row (what the framework itself costs per event);
- `balances`: the bank's account-balances as shipped (row objects: decoded and encoded once
  per batch per account);
- `balances-per-event`: the same arithmetic decoding and encoding the JSON row on every event
  (how the balances projection worked before row objects), the baseline of the ratio.

    .venv/bin/python -m bench.projection_step [--events 60000] [--runs 3]

Reports the best of `runs` (CPU time of this process, so other load on the machine counts less).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from kes.examples.bank.projections import BalanceRow, balances
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_event, event_key, pack, type_name
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.stores.readmodels import MemoryReadModelStore
from kes.streams.projections.projection import AnyProjection, EventRecord, Projection, project
from kes.streams.projections.rows import RowWriter

__all__ = ["main"]

BATCH = 5_000


def _constant() -> Projection:
    projection = Projection("bytes", ["account"])

    @projection.on(bank_pb2.AccountOpened)
    def opened(event: EventEnvelope, payload: bank_pb2.AccountOpened, rows: RowWriter) -> None:
        rows.put(event.entity_id, b"x")

    @projection.on(bank_pb2.AccountCredited)
    def credited(event: EventEnvelope, payload: bank_pb2.AccountCredited, rows: RowWriter) -> None:
        rows.put(event.entity_id, b"x")

    return projection


def _per_event() -> Projection:
    projection = Projection("balances-per-event", ["account"])

    @projection.on(bank_pb2.AccountOpened)
    def opened(event: EventEnvelope, payload: bank_pb2.AccountOpened, rows: RowWriter) -> None:
        row = BalanceRow(payload.balance, event.revision, 1, payload.owner)
        rows.put(event.entity_id, row.encode())

    @projection.on(bank_pb2.AccountCredited)
    def credited(event: EventEnvelope, payload: bank_pb2.AccountCredited, rows: RowWriter) -> None:
        row = BalanceRow.decode(rows.get(event.entity_id) or b"")
        moved = BalanceRow(row.balance + payload.amount, event.revision, row.events + 1, row.owner)
        rows.put(event.entity_id, moved.encode())

    return projection


def _records(count: int, accounts: int = 500) -> list[EventRecord]:
    records = []
    revisions: dict[str, int] = {}
    for offset in range(count):
        entity = f"acc-{offset % accounts}"
        revision = revisions[entity] = revisions.get(entity, 0) + 1
        event = (
            bank_pb2.AccountOpened(account_id=entity, owner="ann", balance=5)
            if revision == 1
            else bank_pb2.AccountCredited(account_id=entity, amount=3, balance=5 + 3 * revision)
        )
        env = EventEnvelope(
            entity_id=entity,
            revision=revision,
            payload=pack(event),
            aggregate="account",
            event_type=type_name(event),
            command_id="c" * 36,
            correlation_id="c" * 36,
        )
        key = event_key(entity, revision)
        records.append(EventRecord("events", 0, offset, key, encode_event(env), (("a", b"b"),)))
    return records


def _cpu_per_event(projection: AnyProjection, records: Sequence[EventRecord]) -> float:
    store = MemoryReadModelStore()
    start = time.process_time()
    for first in range(0, len(records), BATCH):
        result = project(projection, records[first : first + BATCH], store, stored=store.offsets())
        store.write(result.rows, result.offsets)
    return (time.process_time() - start) / len(records) * 1e6


def main(argv: list[str] | None = None) -> None:
    """Print CPU µs per event for each projection, best of the runs, and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    records = _records(args.events)
    best: dict[str, float] = {}
    for _ in range(args.runs):
        for projection in (_constant(), balances, _per_event()):
            micros = _cpu_per_event(projection, records)
            best[projection.name] = min(micros, best.get(projection.name, micros))
    for name, micros in best.items():
        print(f"{name:20} {micros:6.1f} CPU-µs/event  {1e6 / micros:10,.0f} events/s")
    ratio = best["balances-per-event"] / best[balances.name]
    print(f"row objects against per-event rows: {ratio:.2f}x the throughput")


if __name__ == "__main__":
    main()
