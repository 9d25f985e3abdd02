"""Faust hosts the partition actors: one agent per aggregate, one actor per assigned partition.

The worker's Kafka consumer is not Faust's (see kes.streams.runtime.engine), so Faust's own routing,
which finds agents by topic, is not used: the engine starts and stops each partition's actor from
its consumer's assign and revoke callbacks, and hands each actor whole batches, one Faust stream
value per partition batch, so Faust's per-event cost is paid per batch. An actor never raises:
a failure is set on the batch's future, and the engine decides what it means.

This leans on faust-streaming 0.15's isolated-partition agents (`_actor_by_partition`, each
actor's own channel queue); tests/unit/test_actors.py pins that behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import faust
from faust.types import TP

__all__ = ["PartitionActors"]

T = TypeVar("T")


class _Job:
    """One partition batch for an actor: the work to run and the future that gets its outcome."""

    __slots__ = ("future", "work")

    def __init__(self, work: Callable[[], Awaitable[Any]], future: asyncio.Future[Any]) -> None:
        self.work = work
        self.future = future

    async def run(self) -> None:
        try:
            result = await self.work()
        except BaseException as exc:  # the engine decides; the actor goes on
            if not self.future.done():
                self.future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if not self.future.done():
            self.future.set_result(result)


async def _apply_batches(stream: Any) -> None:
    """The agent body: run each batch handed to this partition's actor, in order."""
    async for job in stream:
        await job.run()


def _by_topic(tps: Iterable[TP]) -> dict[str, set[TP]]:
    grouped: dict[str, set[TP]] = {}
    for tp in tps:
        grouped.setdefault(tp.topic, set()).add(tp)
    return grouped


class PartitionActors:
    """The agents of a worker's aggregates, keyed by commands topic."""

    def __init__(self, app: faust.App, commands_topics: Iterable[str]) -> None:
        self.app = app
        self.agents: dict[str, Any] = {}
        for topic in commands_topics:
            channel = app.channel()
            agent = app.agent(channel, name=f"kes.{topic}", isolated_partitions=True)
            self.agents[topic] = agent(_apply_batches)

    def resume(self) -> None:
        """Open the flow into actor queues (Faust's consumer would do it; there is none)."""
        self.app.flow_control.resume()

    async def assign(self, tps: Iterable[TP]) -> None:
        """Start an actor for each partition."""
        for topic, assigned in _by_topic(tps).items():
            await self.agents[topic].on_partitions_assigned(assigned)

    async def revoke(self, tps: Iterable[TP]) -> None:
        """Stop each partition's actor (its queue is dropped with it)."""
        for topic, revoked in _by_topic(tps).items():
            await self.agents[topic].on_partitions_revoked(revoked)

    def submit(self, tp: TP, work: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Hand one batch to the partition's actor; the future gets the work's outcome."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        actor = self.agents[tp.topic]._actor_by_partition.get(tp)
        if actor is None:
            future.set_exception(RuntimeError(f"{tp} has no actor on this worker"))
            return future
        actor.stream.channel.queue.put_nowait(_Job(work, future))
        return future
