"""The worker's agent acknowledges a batch only when its transaction committed (regression).

Faust commits the offsets of acknowledged events on its own schedule. The agent used
`take_events`, which acknowledges every buffered event once the loop body returns, whether kes
acknowledged it or not (faust/streams.py, `take_events`: `for event in events: await
self.ack(event)` in its `finally`). A batch dropped because the partition moved to another owner
was acknowledged anyway, Faust committed past it, and the next owner skipped its commands: the
chaos suite lost 52 of 100,000 commands that way. The stand-in stream below keeps Faust's
contract for both methods, so the test fails on `take_events` and passes on `noack_take`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from examples.bank import BEHAVIORS
from streams.settings import Settings
from streams.worker import Worker

TP0 = TP("account.commands", 0)


def _event(offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=TP0, offset=offset))


class FaustLikeStream:
    """Batches as Faust yields them; `take_events` acks each batch after the body, as Faust does."""

    def __init__(self, batches: Sequence[Sequence[Any]]) -> None:
        self.batches = batches
        self.acked: list[int] = []

    def noack(self) -> FaustLikeStream:
        return self

    async def ack(self, event: Any) -> bool:
        self.acked.append(event.message.offset)
        return True

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[Sequence[Any]]:
        for batch in self.batches:
            yield list(batch)

    async def take_events(self, max_: int, within: float) -> AsyncIterator[Sequence[Any]]:
        for batch in self.batches:
            try:
                yield list(batch)
            finally:
                for event in batch:
                    await self.ack(event)


def test_a_dropped_batch_is_never_acknowledged(tmp_path: Path) -> None:
    worker = Worker(BEHAVIORS, Settings(data_dir=tmp_path))
    try:
        dropped = [_event(0), _event(1)]
        applied = [_event(2), _event(3)]
        outcomes = iter([False, True])  # the first batch's partition moved away mid-commit

        async def handle(tp: TP, events: Sequence[Any], *rest: Any) -> bool:
            return next(outcomes)

        worker._handle = handle  # type: ignore[method-assign]
        stream = FaustLikeStream([dropped, applied])
        agent = next(iter(worker.app.agents.values()))
        asyncio.run(agent.fun(stream))
        assert sorted(stream.acked) == [2, 3]
    finally:
        worker.store.close()
