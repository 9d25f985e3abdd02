"""The bank's read side: "account-balances" (rows), "account-balances-sql" (a PostgreSQL
table) and a "large-transactions" reactor.

`account-balances` keeps one row per account, keyed by account id: the balance, the revision it
reflects and how many events were applied. It adds and subtracts amounts rather than copying the
balance the events carry, so an event applied twice, or lost, would show. Run it with
`kes projection run kes.examples.bank account-balances`.

`account-balances-sql` keeps the same figures in a real `balances` table (account id, owner,
balance, revision, events, time of the last event), written in the transaction that stores the
offsets: `KES_POSTGRES_DSN=... kes projection run kes.examples.bank account-balances-sql`, then
query it with any SQL client.

`large-transactions` reacts to credits and debits of at least `LARGE_AMOUNT` cents by calling
`notify` (by default a log line), at least once per event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.schemas.kes.v1.personal_pb2 import EntityErased
from kes.streams.projections import Projection, Reactor, RowReader, RowWriter, Sql, SqlProjection

__all__ = [
    "LARGE_AMOUNT",
    "BalanceRow",
    "Notify",
    "balance_of",
    "balances",
    "balances_table",
    "large_transactions",
    "large_transactions_reactor",
]

LARGE_AMOUNT = 55
"""Credits and debits of at least this many cents are "large"."""

log = logging.getLogger(__name__)

_ENCODER = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True)
class BalanceRow:
    """One account in the balances read model."""

    balance: int
    revision: int
    events: int
    owner: str = ""

    def encode(self) -> bytes:
        """The row as compact JSON."""
        fields = {
            "balance": self.balance,
            "revision": self.revision,
            "events": self.events,
            "owner": self.owner,
        }
        return _ENCODER.encode(fields).encode()

    @classmethod
    def decode(cls, data: bytes) -> BalanceRow:
        """The inverse of encode."""
        return cls(**json.loads(data))


def balance_of(rows: RowReader, account_id: str) -> BalanceRow | None:
    """The row of an account, or None if the projection has not seen it opened."""
    data = rows.get(account_id)
    return None if data is None else BalanceRow.decode(data)


balances = Projection("account-balances", ["account"])
"""Balance and revision per account."""


def _move(event: EventEnvelope, rows: RowWriter, amount: int) -> None:
    row = rows.get_as(event.entity_id, BalanceRow.decode)
    if row is None:
        raise LookupError(f"{event.entity_id}@{event.revision}: movement on an unknown account")
    moved = BalanceRow(row.balance + amount, event.revision, row.events + 1, row.owner)
    rows.put_as(event.entity_id, moved, BalanceRow.encode)


@balances.on(bank_pb2.AccountOpened)
def opened(event: EventEnvelope, payload: bank_pb2.AccountOpened, rows: RowWriter) -> None:
    """A new row with the opening balance."""
    row = BalanceRow(payload.balance, event.revision, 1, payload.owner)
    rows.put_as(event.entity_id, row, BalanceRow.encode)


@balances.on(bank_pb2.AccountCredited)
def credited(event: EventEnvelope, payload: bank_pb2.AccountCredited, rows: RowWriter) -> None:
    """Add the amount."""
    _move(event, rows, payload.amount)


@balances.on(bank_pb2.AccountDebited)
def debited(event: EventEnvelope, payload: bank_pb2.AccountDebited, rows: RowWriter) -> None:
    """Subtract the amount."""
    _move(event, rows, -payload.amount)


@balances.on(EntityErased)
def erased(event: EventEnvelope, payload: EntityErased, rows: RowWriter) -> None:
    """The account was erased (`kes erase`): its row, which names its owner, goes."""
    rows.delete(event.entity_id)


balances_table = SqlProjection(
    "account-balances-sql",
    ["account"],
    schema=[
        """CREATE TABLE IF NOT EXISTS balances (
            account_id text PRIMARY KEY,
            owner text NOT NULL,
            balance bigint NOT NULL,
            revision bigint NOT NULL,
            events bigint NOT NULL,
            updated_at timestamptz
        )"""
    ],
    tables=["balances"],
)
"""Balance and revision per account in the PostgreSQL table `balances`."""


@balances_table.on(bank_pb2.AccountOpened)
def opened_row(event: EventEnvelope, payload: bank_pb2.AccountOpened, sql: Sql) -> None:
    """Insert the account (a second opening would violate the key and be dead-lettered)."""
    sql.execute(
        "INSERT INTO balances (account_id, owner, balance, revision, events, updated_at) "
        "VALUES (%s, %s, %s, %s, 1, %s)",
        (event.entity_id, payload.owner, payload.balance, event.revision, _when(event)),
    )


def moved_row(
    event: EventEnvelope,
    payload: bank_pb2.AccountCredited | bank_pb2.AccountDebited,
    sql: Sql,
) -> None:
    """Add a credit, subtract a debit; an account never opened is an error (dead letter)."""
    amount = payload.amount if isinstance(payload, bank_pb2.AccountCredited) else -payload.amount
    moved = sql.execute(
        "UPDATE balances SET balance = balance + %s, revision = %s, events = events + 1, "
        "updated_at = %s WHERE account_id = %s",
        (amount, event.revision, _when(event), event.entity_id),
    )
    if moved != 1:
        raise LookupError(f"{event.entity_id}@{event.revision}: movement on an unknown account")


balances_table.on(bank_pb2.AccountCredited)(moved_row)
balances_table.on(bank_pb2.AccountDebited)(moved_row)


@balances_table.on(EntityErased)
def erased_row(event: EventEnvelope, payload: EntityErased, sql: Sql) -> None:
    """The account was erased (`kes erase`): its row, which names its owner, goes."""
    sql.execute("DELETE FROM balances WHERE account_id = %s", (event.entity_id,))


def _when(event: EventEnvelope) -> datetime | None:
    return event.timestamp.ToDatetime(tzinfo=UTC) if event.HasField("timestamp") else None


Notify = Callable[[str, int, str, int], None]
"""`(account id, revision, "credit" or "debit", amount)`: called for each large movement."""


def _log(account_id: str, revision: int, kind: str, amount: int) -> None:
    log.warning("large %s on %s@%d: %d cents", kind, account_id, revision, amount)


def large_transactions(threshold: int = LARGE_AMOUNT, notify: Notify = _log) -> Reactor:
    """A "large-transactions" reactor calling `notify` for movements of `threshold` or more."""
    reactor = Reactor("large-transactions", ["account"])

    @reactor.on(bank_pb2.AccountCredited)
    def large_credit(event: EventEnvelope, payload: bank_pb2.AccountCredited) -> None:
        if payload.amount >= threshold:
            notify(event.entity_id, event.revision, "credit", payload.amount)

    @reactor.on(bank_pb2.AccountDebited)
    def large_debit(event: EventEnvelope, payload: bank_pb2.AccountDebited) -> None:
        if payload.amount >= threshold:
            notify(event.entity_id, event.revision, "debit", payload.amount)

    return reactor


large_transactions_reactor = large_transactions()
"""The reactor as `kes projection run kes.examples.bank large-transactions` runs it (logging)."""
