"""Clients against a real worker: many concurrent asks, and a clear timeout when none runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.errors import CommandTimeoutError
from kes.streams.client.client import AsyncCommandClient, CommandClient, state_of
from tests.fixtures.workers import AppCluster


async def test_a_thousand_concurrent_asks_from_one_client(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    cluster.worker("w1").wait_ready()
    topics = cluster.settings.topics("account")
    accounts = [f"acc-{i}" for i in range(100)]
    async with AsyncCommandClient(topics, cluster.settings.bootstrap_servers) as client:
        opened = await asyncio.gather(
            *(client.ask(a, bank_pb2.OpenAccount(owner=a), timeout=60) for a in accounts)
        )
        assert all(r.WhichOneof("outcome") == "accepted" for r in opened)
        # 1,000 credits in flight at once: 10 per account, each amount unique per account.
        asks = [
            client.ask(a, bank_pb2.CreditAccount(amount=k + 1), timeout=60)
            for k in range(10)
            for a in accounts
        ]
        replies = await asyncio.gather(*asks)
    assert len(replies) == 1000
    by_account: dict[str, list[int]] = {}
    for reply in replies:
        assert reply.WhichOneof("outcome") == "accepted", reply
        by_account.setdefault(reply.entity_id, []).append(reply.accepted.revision)
    # Each account saw revisions 2..11 exactly once, and its last state holds all credits.
    assert all(sorted(revs) == list(range(2, 12)) for revs in by_account.values())
    finals = {
        r.entity_id: state_of(r, bank_pb2.Account) for r in replies if r.accepted.revision == 11
    }
    assert {a: s.balance for a, s in finals.items() if s} == {a: 55 for a in accounts}


def test_a_command_to_a_stopped_worker_times_out_clearly(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    topics = cluster.settings.topics("account")
    with CommandClient(topics, cluster.settings.bootstrap_servers) as client:
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError) as raised:
            client.ask("acc-1", bank_pb2.OpenAccount(owner="x"), timeout=3)
        assert time.monotonic() - started < 15
    message = str(raised.value)
    assert "no reply" in message and "acc-1" in message and "is a worker running" in message
