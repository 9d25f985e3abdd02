"""The cost of personal data: the worker's decide-and-encode step with and without sealing.

Runs the batch step (decode, decide, events, snapshot bytes, replies, as the worker's cycle
does before its transaction) in this process, no broker, over the same number of commands for
two aggregates in one run: the bank's `account` (no personal field: nothing sealed) and
`customer` (name and email marked personal: every event, snapshot and reply sealed, one data
key made per new entity). Each round: one command creates each entity, then updates follow.

Run: `python -m bench.personal [--entities 2000] [--updates 4] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import base64
import os
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from kes.examples.bank import account
from kes.examples.customers import customer
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_command, new_command
from kes.schemas.customers.v1 import customers_pb2
from kes.schemas.kes.v1.envelopes_pb2 import Snapshot
from kes.streams.core.keyring import DataKeys, LocalMasterKey
from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.records import CommandRecord
from kes.streams.cycle.result import reply_records
from kes.topology.layout import AggregateTopics

_BATCH = 2_000


def _records(
    aggregate: str, entities: int, updates: int, make: Callable[[int, int], Message]
) -> list[CommandRecord]:
    out = []
    for step in range(updates + 1):
        for i in range(entities):
            env = new_command(f"e-{i}", make(i, step), aggregate=aggregate, reply_wanted=True)
            value, headers = encode_command(env)
            out.append(CommandRecord(len(out), f"e-{i}".encode(), value, headers))
    return out


def _bank(i: int, step: int) -> Message:
    if step == 0:
        return bank_pb2.OpenAccount(owner=f"Owner Name {i}", opening_balance=100)
    return bank_pb2.CreditAccount(amount=step)


def _customer(i: int, step: int) -> Message:
    if step == 0:
        return customers_pb2.RegisterCustomer(name=f"Owner Name {i}", email=f"o{i}@example.com")
    return customers_pb2.ChangeEmail(email=f"o{i}.{step}@example.com")


def _run(behavior: Any, records: list[CommandRecord], keys: DataKeys | None) -> float:
    """Commands per second through the step, snapshots and replies encoded, as the cycle does."""
    topics = AggregateTopics(behavior.name, partitions=1)
    stored: dict[str, bytes] = {}

    def load(entity_id: str) -> Snapshot | None:
        raw = stored.get(entity_id)
        return None if raw is None else Snapshot.FromString(raw)

    step = BatchStep(behavior, topics, 0, load, keys=keys, cache_size=1_000_000)
    began = time.perf_counter()
    for start in range(0, len(records), _BATCH):
        result = step.run(records[start : start + _BATCH])
        for entity_id, entity in result.changed.items():
            stored[entity_id] = entity.snapshot().SerializeToString()
        offsets = list(range(len(result.events)))
        reply_records(result, offsets, topics.replies, 0)
        step.commit(result)
    return len(records) / (time.perf_counter() - began)


def main() -> None:
    """Print commands/s of both aggregates, best of `--rounds`."""
    parser = argparse.ArgumentParser(prog="python -m bench.personal", description=__doc__)
    parser.add_argument("--entities", type=int, default=2_000)
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    master = LocalMasterKey(base64.b64decode(base64.b64encode(os.urandom(32))))
    bank = _records("account", args.entities, args.updates, _bank)
    people = _records("customer", args.entities, args.updates, _customer)
    plain, sealed = [], []
    for _ in range(args.rounds):
        plain.append(_run(account, bank, None))
        sealed.append(_run(customer, people, DataKeys(master)))
    n = len(bank)
    print(f"{n} commands per aggregate, {args.entities} entities, best of {args.rounds}:")
    print(f"  account (no personal field):          {max(plain):>9,.0f} commands/s")
    print(f"  customer (name, email sealed):        {max(sealed):>9,.0f} commands/s")
    print(
        f"  cost of sealing: {100 * (1 - max(sealed) / max(plain)):.0f}% of the step's throughput"
    )


if __name__ == "__main__":
    main()
