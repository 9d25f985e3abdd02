"""The worker: a Faust app with one agent per aggregate and one actor per commands partition.

Faust does what it does well here: the worker lifecycle, group membership, partition assignment
and rebalancing, an actor per partition (`isolated_partitions`), the web server. kes owns the
per-partition transaction (streams.transaction), because Faust's own exactly-once does not cover
writes to topics the app does not consume, nor roll back table writes on abort.

Faust's consumer commits only offsets kes acknowledged, and kes acknowledges a batch only after
its transaction committed (which already moved the group offset); so Faust never commits past
an unapplied command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import faust
from faust.types import TP

from stores.snapshots import RocksDBSnapshotStore
from streams.batch import CommandRecord
from streams.behavior import Behavior
from streams.kafkaconfig import faust_credentials
from streams.processor import PartitionProcessor
from streams.settings import Settings
from topology.layout import AggregateTopics

__all__ = ["EXIT_BATCH_FAILED", "FENCE_GRACE_SECONDS", "Worker"]

log = logging.getLogger(__name__)


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if isinstance(v, bytes) else bytes(v or b"")) for k, v in items]


EXIT_BATCH_FAILED = 70
"""Exit code of a worker that stopped because a batch could not be committed (EX_SOFTWARE)."""


def _stop_now(message: str, exc: BaseException | None) -> NoReturn:
    log.critical("%s; stopping the worker (exit %d)", message, EXIT_BATCH_FAILED, exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)


FENCE_GRACE_SECONDS = 3.0
"""How long a partition fenced while assigned here may wait for a rebalance to take it away."""


class Worker:
    """Processes the commands of `behaviors`; run it with `run()` (blocks until stopped)."""

    def __init__(self, behaviors: Iterable[Behavior[Any]], settings: Settings) -> None:
        self.settings = settings
        self.behaviors = {b.name: b for b in behaviors}
        self.topics = {name: settings.topics(name) for name in self.behaviors}
        self._by_topic = {t.commands: (self.behaviors[n], t) for n, t in self.topics.items()}
        (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        self.store = RocksDBSnapshotStore(settings.data_dir / "snapshots")
        self.processors: dict[TP, asyncio.Task[PartitionProcessor]] = {}
        """Each owned partition's start-up task; its result is the ready processor."""
        self._owned: dict[TP, PartitionProcessor] = {}
        self._fence_watches: dict[TP, asyncio.Future[None]] = {}
        self.app = faust.App(
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
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False,
            processing_guarantee="at_least_once",
            topic_allow_declare=False,
            topic_disable_leader=True,
            broker_session_timeout=settings.session_timeout_ms / 1000,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_ms / 3000),
        )
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self.app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        for name in self.behaviors:
            self._add_agent(self.topics[name])
        self._assigned_once = False
        self._add_views()

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

        from streams.web import install_views  # the operator's views: /, /lag, /metrics, ...

        self.views = install_views(self)

    def _add_agent(self, topics: AggregateTopics) -> None:
        channel = self.app.topic(
            topics.commands,
            key_serializer="raw",
            value_serializer="raw",
            partitions=topics.partitions,
        )
        settings = self.settings

        async def process_commands(stream: Any) -> None:
            manual = stream.noack()
            within = settings.batch_max_ms / 1000
            try:
                # noack_take, not take_events: take_events acks every buffered event once the
                # loop body returns, committed or not, and Faust then commits those offsets
                # itself: a dropped batch's commands were skipped by the partition's next owner.
                batches = manual.noack_take(settings.batch_max_commands, within)
                bound: dict[TP, PartitionProcessor] = {}  # this actor's processors, for life
                async for events in batches:
                    by_tp: dict[TP, list[Any]] = {}
                    for event in events:
                        by_tp.setdefault(event.message.tp, []).append(event)
                    for tp, tp_events in by_tp.items():
                        if await self._handle(tp, tp_events, bound):
                            for event in tp_events:
                                await manual.ack(event)
            except asyncio.CancelledError:
                # Faust cancels a revoked partition's actor: that is its normal end. Raised, it
                # counts as a crash, and mode's supervisor allows one restart per 10 ms, so a
                # rebalance revoking several partitions at once made the worker exit.
                return

        self.app.agent(channel, name=f"kes.{topics.name}", isolated_partitions=True, concurrency=1)(
            process_commands
        )

    async def _handle(
        self, tp: TP, events: Sequence[Any], bound: dict[TP, PartitionProcessor]
    ) -> bool:
        """Apply one partition's events; True when they are committed and may be acknowledged.

        An actor binds to one processor per partition for its whole life. Once that processor
        is closed (the partition was lost, fenced, or the worker stops), the actor drops every
        later batch unacknowledged: the commands it has buffered come after a batch that did
        not commit, and only a new owner, reading from the committed offset, may apply them.

        Any other failure stops the process at once (exit code 70), as a SIGKILL would: later
        batches must not commit past an unapplied one, and the next owner (this worker,
        restarted by its supervisor, or another) resumes from the last committed transaction.
        """
        processor = bound.get(tp)
        try:
            if processor is None:
                processor = bound[tp] = await self._processor(tp)
            if processor.closed:
                self._watch_fenced(tp, processor)
                return False
            records = [
                CommandRecord(
                    e.message.offset, e.message.key, e.message.value, _headers(e.message.headers)
                )
                for e in events
            ]
            await processor.handle(records)
        except Exception as exc:
            if processor is not None and processor.closed:
                log.warning("%s: batch dropped, the partition was closed: %s", tp, exc)
                self._watch_fenced(tp, processor)
                return False
            _stop_now(f"{tp}: batch failed: {exc!r}", exc)
        return True

    def _watch_fenced(self, tp: TP, processor: PartitionProcessor) -> None:
        """A partition fenced while still assigned here would stall: its actor drops every batch.

        That happens when another owner fenced this worker's producer (it was paused, or lost
        the partition for a moment) and the partition came back here in a rebalance that
        finished before the fence was noticed. A rebalance that takes the partition away closes
        the processor within moments; if it is still this worker's after `FENCE_GRACE_SECONDS`,
        stop (exit 70) so the partition is re-read from its committed offset.
        """
        if self._owned.get(tp) is not processor or tp in self._fence_watches:
            return

        async def watch() -> None:
            await asyncio.sleep(FENCE_GRACE_SECONDS)
            if self._owned.get(tp) is processor:
                _stop_now(f"{tp} was fenced by another producer but is still assigned here", None)
            self._fence_watches.pop(tp, None)

        self._fence_watches[tp] = asyncio.ensure_future(watch())

    async def _processor(self, tp: TP) -> PartitionProcessor:
        task = self.processors.get(tp)
        if task is None:
            task = self._start_processor(tp)
        processor = await task
        return processor

    def _start_processor(self, tp: TP) -> asyncio.Task[PartitionProcessor]:
        behavior, topics = self._by_topic[tp.topic]
        store = self.store.partition(topics.snapshots, tp.partition)
        processor = PartitionProcessor(behavior, topics, tp.partition, self.settings, store)

        async def start() -> PartitionProcessor:
            await processor.start()
            log.info(
                "%s: ready after %.2fs (next command offset %d)",
                tp, processor.stats.recovery_seconds, processor.next_offset,
            )  # fmt: skip
            return processor

        task = asyncio.ensure_future(start())
        self.processors[tp] = task
        self._owned[tp] = processor
        return task

    async def _on_assigned(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """After a rebalance: close the partitions this worker lost, start the new ones.

        Only partitions gone from the new assignment are closed (Faust has stopped their actors
        by now). A partition kept across the rebalance keeps its processor: its actor goes on
        with commands it had already read, and closing it would let those be applied while an
        interrupted batch before them was dropped. A partition that went to another worker is
        fenced there by `init_transactions`, so its old processor can no longer commit.
        """
        assigned: set[TP] = args[0]
        self._assigned_once = True
        for tp in [tp for tp in self._owned if tp not in assigned]:
            await self._close(tp)
        fenced = [tp for tp in assigned if tp in self._owned and self._owned[tp].closed]
        if fenced:  # kept across a rebalance we missed: its actor's buffer is stale
            _stop_now(f"partitions {fenced} were fenced but are still assigned here", None)
        for tp in assigned:
            if tp.topic in self._by_topic and tp not in self.processors:
                self._start_processor(tp)

    async def _on_shutdown(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """A clean stop aborts open transactions, so readers are not held up until they time out."""
        for tp in list(self._owned):
            await self._close(tp)

    async def _close(self, tp: TP) -> None:
        """Close one partition; a start still recovering is cancelled, not awaited."""
        task = self.processors.pop(tp, None)
        processor = self._owned.pop(tp, None)
        if task is None or processor is None:
            return
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await processor.close()
        self.store.release(self.topics_of(tp).snapshots, tp.partition)

    def topics_of(self, tp: TP) -> AggregateTopics:
        """The layout of the aggregate whose commands topic `tp` belongs to."""
        return self._by_topic[tp.topic][1]

    def ready(self) -> bool:
        """True when every assigned partition has recovered and processes commands."""
        if not self._assigned_once:
            return False
        return all(t.done() and not t.exception() for t in self.processors.values())

    def run(self, loglevel: str = "WARNING") -> None:
        """Run until SIGINT/SIGTERM (Faust's worker handles the signals)."""
        worker = faust.Worker(self.app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        # Faust's terminal spinner sets the root logger to DEBUG whenever the level is WARNING
        # or above, so each aiokafka debug call on the hot path built a LogRecord: 8 % of the
        # worker's CPU in a py-spy profile of `make bench`.
        worker.spinner = None
        try:
            worker.execute_from_commandline()
        finally:
            self.store.close()
