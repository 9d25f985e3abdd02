"""A partition fenced while still assigned here must not stall (regression).

A paused worker woke up, got two of its partitions back in the rebalance, and only then found
its producers fenced by the worker that had held them meanwhile: each batch of those partitions
was dropped from then on, and the partitions stalled (1,201 of 6,000 commands never answered in
tests/integration/test_zombie.py, now and then). Now, unless a rebalance takes the partition
away within FENCE_GRACE_SECONDS, the worker stops (exit 70) and the partition is re-read.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from examples.bank import BEHAVIORS
from streams import worker as worker_module
from streams.settings import Settings
from streams.worker import Worker

TP0 = TP("account.commands", 0)


def _fenced_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Worker, Any, list]:
    stops: list[str] = []
    monkeypatch.setattr(worker_module, "FENCE_GRACE_SECONDS", 0.05)
    monkeypatch.setattr(worker_module, "_stop_now", lambda message, exc: stops.append(message))
    worker = Worker(BEHAVIORS, Settings(data_dir=tmp_path))
    processor = SimpleNamespace(closed=True)  # fenced: its producer can no longer commit
    worker._owned[TP0] = processor  # type: ignore[assignment]
    return worker, processor, stops


def _event(offset: int) -> Any:
    return SimpleNamespace(
        message=SimpleNamespace(tp=TP0, offset=offset, key=b"a", value=b"", headers=[])
    )


def test_fenced_and_still_assigned_stops_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, processor, stops = _fenced_worker(tmp_path, monkeypatch)

    async def scenario() -> None:
        assert not await worker._handle(TP0, [_event(7)], {TP0: processor})
        assert not await worker._handle(TP0, [_event(8)], {TP0: processor})  # one watch only
        await asyncio.sleep(0.2)

    try:
        asyncio.run(scenario())
    finally:
        worker.store.close()
    assert len(stops) == 1 and "still assigned here" in stops[0]


def test_fenced_then_taken_away_by_a_rebalance_is_only_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, processor, stops = _fenced_worker(tmp_path, monkeypatch)

    async def scenario() -> None:
        assert not await worker._handle(TP0, [_event(7)], {TP0: processor})
        worker._owned.pop(TP0)  # the rebalance's _on_assigned closed the lost partition
        await asyncio.sleep(0.2)

    try:
        asyncio.run(scenario())
    finally:
        worker.store.close()
    assert stops == []
