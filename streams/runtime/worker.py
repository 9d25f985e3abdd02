"""The worker: a Faust app that hosts the engine, the partition actors and the web server.

Faust does what it does well here: the worker's lifecycle and signals, agents with one actor per
partition (`isolated_partitions`), timers, and the web server. Its own Kafka client is switched
off: the engine (kes.streams.runtime.engine) holds the worker's one consumer and one transactional
producer, so the transactions are the command group's only committer, and starts and stops the
actors from the consumer's assign and revoke callbacks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust
from faust.app.base import BootStrategy
from faust.types import TP

from kes.stores.snapshots import RocksDBSnapshotStore

# The operator's views (/, /lag, /entities, /metrics) live a layer up, in kes.streams.web:
# `kes worker` installs them with kes.streams.web.install_views(worker) before it runs.
from kes.streams.config.durablestate import layout_of
from kes.streams.config.settings import Settings
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.behavior import Behavior
from kes.streams.kafka.config import faust_credentials
from kes.streams.runtime.actors import PartitionActors
from kes.streams.runtime.engine import EXIT_BATCH_FAILED, EXIT_CONFIGURATION, Engine
from kes.streams.runtime.processor import PartitionProcessor
from kes.topology.layout import AggregateTopics

__all__ = ["EXIT_BATCH_FAILED", "EXIT_CONFIGURATION", "Worker"]

log = logging.getLogger(__name__)


class _WithoutKafka(BootStrategy):  # type: ignore[misc]
    """Faust's services minus its Kafka consumer, producer and assignor."""

    enable_kafka = False


class _HostApp(faust.App):  # type: ignore[misc]
    """A Faust app that starts no Kafka client of its own."""

    BootStrategy = _WithoutKafka


class Worker:
    """Processes the commands of `behaviors`; run it with `run()` (blocks until stopped)."""

    def __init__(
        self,
        behaviors: Iterable[Behavior[Any]],
        settings: Settings,
        adapters: EventAdapters | None = None,
    ) -> None:
        self.settings = settings
        self.behaviors = {b.name: b for b in behaviors}
        self.topics = {name: layout_of(settings, b) for name, b in self.behaviors.items()}
        (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        self.store = RocksDBSnapshotStore(settings.data_dir / "snapshots")
        self.app = _HostApp(
            settings.app_id,
            broker=[f"kafka://{host}" for host in settings.bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(settings),
            store="memory://",
            autodiscover=False,
            datadir=str(settings.data_dir / "faust"),
            web_enabled=True,
            web_bind=settings.web_host,
            web_host=settings.web_host,
            web_port=settings.web_port,
            canonical_url=settings.advertised_url,
            topic_allow_declare=False,
        )
        self.actors = PartitionActors(self.app, [t.commands for t in self.topics.values()])
        self.engine = Engine(
            settings,
            self.behaviors,
            self.actors,
            self.store,
            client_id=settings.advertised_url,
            adapters=adapters,
        )
        self._engine_task: asyncio.Task[None] | None = None
        self._add_services()
        self._add_views()

    @property
    def processors(self) -> dict[TP, asyncio.Future[PartitionProcessor]]:
        """Each owned partition; its future resolves once the partition has recovered."""
        return self.engine.processors

    def _add_services(self) -> None:
        worker = self

        @self.app.task  # type: ignore[untyped-decorator]
        async def run_engine() -> None:
            """Start the engine once Faust's services (agents, web) are up."""
            worker._engine_task = asyncio.current_task()
            await worker.engine.run()

        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]

    def _add_views(self) -> None:
        worker = self

        @self.app.page("/health")
        async def health(web: Any, request: Any) -> Any:
            """200 once every assigned partition recovered; 503 before."""
            ready = worker.ready()
            body = {
                "ready": ready,
                "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in worker.processors),
            }
            return web.json(body, status=200 if ready else 503)

    async def _on_shutdown(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """A clean stop finishes the cycle, aborts an open transaction and leaves the group."""
        await self.engine.stop()

    def topics_of(self, tp: TP) -> AggregateTopics:
        """The layout of the aggregate whose commands topic `tp` belongs to."""
        return self.engine.topics_of(tp)

    def ready(self) -> bool:
        """True when every assigned partition has recovered and processes commands."""
        return self.engine.ready()

    def run(self, loglevel: str = "WARNING") -> None:
        """Run until SIGINT/SIGTERM (Faust's worker handles the signals)."""
        worker = faust.Worker(self.app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        # Faust's terminal spinner sets the root logger to DEBUG whenever the level is WARNING
        # or above, so each debug call on the hot path built a LogRecord.
        worker.spinner = None
        try:
            worker.execute_from_commandline()
        finally:
            self.store.close()
