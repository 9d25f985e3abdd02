"""The worker's view of lag over time: readings every few seconds, kept for charts and rates.

Runs the blocking Kafka reads (kes.streams.operations.groupoffsets,
kes.streams.operations.deadletter_counts) in a thread, one round at a time, so the worker's event
loop never waits on the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kes.schemas.errors import KesError
from kes.streams.operations.deadletter_counts import DeadLetterCounter
from kes.streams.operations.groupoffsets import IsolatedOffsetsReader, OffsetsReader
from kes.streams.operations.lag import GroupLag, LagHistory, LagReport, LagTarget

__all__ = ["LagMonitor"]

log = logging.getLogger(__name__)


class LagMonitor:
    """Reads the lag of its targets on demand or on a timer; keeps the last minutes."""

    def __init__(
        self,
        client_config: Mapping[str, Any],
        targets: Iterable[LagTarget] = (),
        rate_window: float = 30.0,
        keep: float = 600.0,
        *,
        isolated: bool = False,
    ) -> None:
        self.targets: list[LagTarget] = []
        self.last: LagReport | None = None
        self.dead_letters: dict[str, int] = {}
        self.error: str | None = None
        self._config = dict(client_config)
        self._reader: OffsetsReader | IsolatedOffsetsReader | None = None
        self._isolated = isolated
        self._counter: DeadLetterCounter | None = None
        self._history = LagHistory(rate_window=rate_window, keep=keep)
        self._lock = asyncio.Lock()
        self.watch(targets)

    def watch(self, targets: Iterable[LagTarget]) -> None:
        """Add targets (projection groups, say); targets already watched are ignored."""
        known = {t.key for t in self.targets}
        self.targets += [t for t in targets if t.key not in known]

    async def report(self, max_age: float = 1.0) -> LagReport:
        """Figures no older than `max_age` seconds: the last round's, or a new round's."""
        async with self._lock:
            last = self.last
            if last is not None and time.time() - last.at <= max_age:
                return last
            return await asyncio.to_thread(self._round)

    def series(self, target: LagTarget, seconds: float | None = None) -> list[GroupLag]:
        """The target's figures over the last `seconds` (for charts)."""
        return self._history.series(target, seconds)

    @property
    def reader(self) -> OffsetsReader | IsolatedOffsetsReader:
        """The admin reader behind the reports (thread-safe; blocking calls); in a child
        process when `isolated` (see IsolatedOffsetsReader)."""
        if self._reader is None:
            kind = IsolatedOffsetsReader if self._isolated else OffsetsReader
            self._reader = kind(self._config)
        return self._reader

    def _round(self) -> LagReport:
        targets = list(self.targets)
        try:
            report = self._history.add(self.reader.read(targets))
            self.error = None
        except KesError as exc:
            self.error = str(exc)
            log.warning("lag: %s", exc)
            report = LagReport(time.time(), ())
        self.last = report
        dlqs = sorted({t.dead_letters for t in targets if t.dead_letters})
        if dlqs and self.error is None:
            try:
                if self._counter is None:
                    self._counter = DeadLetterCounter(self._config)
                self.dead_letters = self._counter.count(dlqs, budget=1.0)
            except KesError as exc:
                log.warning("dead-letter counts: %s", exc)
        return report

    def close(self) -> None:
        """Release the Kafka clients (and the reader's process)."""
        if isinstance(self._reader, IsolatedOffsetsReader):
            self._reader.close()
        if self._counter is not None:
            self._counter.close()
            self._counter = None
