"""Faust hosts the partition actors (kes.streams.runtime.actors): pins the faust-streaming behaviour
it uses.

One actor per assigned partition, each with its own queue; a batch reaches only its partition's
actor; a failing batch sets its future's exception and the actor goes on; a revoked partition's
actor is gone and a batch for it fails at once instead of waiting forever.
"""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.app.base import BootStrategy
from faust.types import TP

from kes.streams.runtime.actors import PartitionActors

TOPIC = "account.commands"


class _NoKafka(BootStrategy):  # type: ignore[misc]
    enable_kafka = False


class _App(faust.App):  # type: ignore[misc]
    BootStrategy = _NoKafka


async def test_each_partition_batch_reaches_its_own_actor_and_failures_stay_in_the_future() -> None:
    app = _App("actors-test", store="memory://", web_enabled=False, autodiscover=False)
    actors = PartitionActors(app, [TOPIC])
    await app.start()
    try:
        actors.resume()
        tps = [TP(TOPIC, p) for p in range(3)]
        await actors.assign(tps)
        seen: list[tuple[int, int]] = []

        def job(partition: int, n: int):  # type: ignore[no-untyped-def]
            async def work() -> int:
                seen.append((partition, n))
                return partition * 100 + n

            return work

        futures = [actors.submit(tp, job(tp.partition, n)) for n in range(5) for tp in tps]
        results = await asyncio.gather(*futures)
        assert sorted(results) == sorted(p * 100 + n for p in range(3) for n in range(5))
        for p in range(3):  # each partition's batches ran in the order they were handed over
            assert [n for q, n in seen if q == p] == list(range(5))

        async def boom() -> None:
            raise ValueError("bad batch")

        with pytest.raises(ValueError, match="bad batch"):
            await actors.submit(tps[0], boom)
        assert await actors.submit(tps[0], job(0, 9)) == 9  # the actor went on

        await actors.revoke([tps[1]])
        with pytest.raises(RuntimeError, match="no actor"):
            await actors.submit(tps[1], job(1, 0))
        await actors.assign([tps[1]])
        assert await asyncio.wait_for(actors.submit(tps[1], job(1, 7)), 5) == 107
    finally:
        await app.stop()
