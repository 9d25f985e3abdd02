"""Several projections in one process: one projector (and consumer group) each, one thread each.

Each projection keeps its own group, store and offsets, exactly as when it runs alone; the host
only shares the process (its memory, its web views) and its fate: when one projector fails, the
host stops them all and `run` raises, so a supervisor restarts the process and every projection
resumes from the offsets stored with its rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from kes.schemas.errors import ConfigurationError, KesError
from kes.streams.projections.projector import Projector

__all__ = ["ProjectionHost"]

log = logging.getLogger(__name__)


class ProjectionHost:
    """Runs `projectors` side by side until `stop` is set or one of them fails."""

    def __init__(self, projectors: Sequence[Projector]) -> None:
        if not projectors:
            raise ConfigurationError("no projection to run")
        names = [p.projection.name for p in projectors]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"a projection is named twice: {names}")
        self.projectors = {p.projection.name: p for p in projectors}
        self._threads: dict[str, threading.Thread] = {}
        self._failures: dict[str, BaseException] = {}
        self._stop = threading.Event()

    def running(self, name: str) -> bool:
        """Whether the projection `name` has joined its group and its thread is alive."""
        thread = self._threads.get(name)
        return bool(thread and thread.is_alive() and self.projectors[name].started)

    def run(self, stop: threading.Event) -> None:
        """Run every projector until `stop` is set; when one fails, stop and close the others,
        then raise its error (a KesError naming each, when several failed)."""
        for name, projector in self.projectors.items():
            thread = threading.Thread(
                target=self._run_one, args=(name, projector), name=f"projection-{name}"
            )
            self._threads[name] = thread
            thread.start()
        while not (stop.is_set() or self._stop.is_set()):
            stop.wait(0.2)
        self._stop.set()
        for thread in self._threads.values():
            thread.join()
        if len(self._failures) == 1:
            raise next(iter(self._failures.values()))
        if self._failures:
            detail = "; ".join(f"{n}: {e}" for n, e in self._failures.items())
            raise KesError(f"projections failed: {detail}")

    def _run_one(self, name: str, projector: Projector) -> None:
        try:
            projector.run(self._stop)
        except BaseException as exc:
            log.exception("projection %s failed; stopping the others", name)
            self._failures[name] = exc
            self._stop.set()
