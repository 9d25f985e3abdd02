"""The classic event-sourcing peer: the `eventsourcing` library with its SQLite recorder.

Runs in its own virtualenv with the project root on PYTHONPATH for the protobuf codec only. The
account is an idiomatic `eventsourcing` aggregate with the bank example's rules; each command
is decoded from the very bytes kes reads, the aggregate is loaded (replaying its events, the
library's default without snapshots), the method is called, and the application saves: one
SQLite transaction per command, the library's unit of consistency. No Kafka: the commands come
from a file.

Run: `python -m bench.es_app COMMANDS_FILE COUNT SQLITE_PATH`; prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event

from bench.commandfile import read_commands
from kes.examples.bank.domain import MAX_BALANCE
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_command, unpack


class Rejected(Exception):
    """A command the account refuses (no event)."""


class Account(Aggregate):
    """The bank account: opened once, credited and debited while open, never below zero."""

    @staticmethod
    def create_id(account_id: str, **_: Any) -> UUID:
        return uuid5(NAMESPACE_URL, f"account/{account_id}")

    @event("Opened")
    def __init__(self, account_id: str, owner: str, balance: int) -> None:
        self.account_id = account_id
        self.owner = owner
        self.balance = balance

    def credit(self, amount: int) -> None:
        if amount <= 0:
            raise Rejected(f"amount must be positive, got {amount}")
        if amount > MAX_BALANCE - self.balance:
            raise Rejected("balance would overflow")
        self._credited(amount, self.balance + amount)

    def debit(self, amount: int) -> None:
        if amount <= 0:
            raise Rejected(f"amount must be positive, got {amount}")
        if amount > self.balance:
            raise Rejected("insufficient funds")
        self._debited(amount, self.balance - amount)

    @event("Credited")
    def _credited(self, amount: int, balance: int) -> None:
        self.balance = balance

    @event("Debited")
    def _debited(self, amount: int, balance: int) -> None:
        self.balance = balance


class Bank(Application[UUID]):
    """One command in, one save out."""

    def handle(self, value: bytes) -> None:
        env = decode_command(value, None)
        command = unpack(env.payload)
        account_id = env.entity_id
        if isinstance(command, bank_pb2.OpenAccount):
            if command.opening_balance < 0:
                raise Rejected("opening balance must not be negative")
            try:
                self.repository.get(Account.create_id(account_id))
            except AggregateNotFoundError:
                self.save(Account(account_id, command.owner, command.opening_balance))
                return
            raise Rejected("account already open")
        try:
            acc: Account = self.repository.get(Account.create_id(account_id))
        except AggregateNotFoundError:
            raise Rejected("account not open") from None
        if isinstance(command, bank_pb2.CreditAccount):
            acc.credit(command.amount)
        elif isinstance(command, bank_pb2.DebitAccount):
            acc.debit(command.amount)
        else:
            raise Rejected(f"unknown command {type(command).__name__}")
        self.save(acc)


def main(argv: list[str]) -> None:
    path, count, db = Path(argv[0]), int(argv[1]), argv[2]
    os.environ["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
    os.environ["SQLITE_DBNAME"] = db
    values = [v for v, _ in zip(read_commands(path), range(count), strict=False)]
    app = Bank()
    accepted = rejected = 0
    began = time.monotonic()
    for value in values:
        try:
            app.handle(value)
            accepted += 1
        except Rejected:
            rejected += 1
    seconds = time.monotonic() - began
    report = {"commands": len(values), "seconds": seconds, "accepted": accepted}
    report["rejected"] = rejected
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
