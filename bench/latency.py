"""Ask round trips at a fixed offered rate (open loop), measured from each ask's scheduled time.

Asks are started on schedule whether or not earlier ones have answered, and each latency counts
from when its ask was due, not from when it was sent: a stalled client or worker shows up in the
percentiles instead of silently lowering the offered rate (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.errors import CommandTimeoutError
from kes.streams.client.client import AsyncCommandClient
from kes.topology.layout import AggregateTopics

__all__ = ["Latencies", "measure"]


@dataclass(frozen=True)
class Latencies:
    """Round trips in milliseconds (sorted) at an offered rate; asks that timed out."""

    offered_rate: float
    achieved_rate: float
    millis: list[float]
    timeouts: int
    client_cpu_share: float = float("nan")
    """Cores the asking process kept busy (its own threads): near 1.0 means it was the limit."""

    def percentile(self, p: float) -> float:
        """The p-th percentile (nearest rank), NaN without samples."""
        if not self.millis:
            return float("nan")
        rank = max(0, min(len(self.millis) - 1, round(p / 100 * len(self.millis)) - 1))
        return self.millis[rank]


async def _measure(
    bootstrap: str, topics: AggregateTopics, accounts: list[str], rate: float, seconds: float
) -> Latencies:
    rng = random.Random(3)
    total = max(1, int(rate * seconds))
    millis: list[float] = []
    timeouts = 0
    async with AsyncCommandClient(topics, bootstrap, aggregate="account") as client:
        for account in accounts[:20]:  # warm up: the reply router, the producer's connections
            await client.ask(account, bank_pb2.CreditAccount(amount=1), timeout=30)
        loop = asyncio.get_running_loop()

        async def one(due: float, account: str) -> None:
            nonlocal timeouts
            try:
                await client.ask(account, bank_pb2.CreditAccount(amount=1), timeout=30)
            except CommandTimeoutError:
                timeouts += 1
                return
            millis.append((loop.time() - due) * 1000)

        tasks = []
        cpu_began = time.process_time()
        began = loop.time()
        for i in range(total):
            due = began + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(due, rng.choice(accounts))))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - began
        cpu = time.process_time() - cpu_began
    millis.sort()
    return Latencies(rate, total / elapsed, millis, timeouts, cpu / elapsed)


def measure(
    bootstrap: str, topics: AggregateTopics, accounts: list[str], rate: float, seconds: float
) -> Latencies:
    """Ask `CreditAccount(1)` of random open `accounts` at `rate` per second for `seconds`."""
    return asyncio.run(_measure(bootstrap, topics, accounts, rate, seconds))
