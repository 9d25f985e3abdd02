"""A worker's Prometheus metrics: what it applied, how long commands took, lag and recovery.

Counters are read from the partition processors' own counters (PartitionStats) when Prometheus
scrapes, per aggregate and partition, counting since this worker took the partition: when a
partition moves away and back, its series starts again from zero, which Prometheus treats as a
counter reset. Latencies come from the engine's committed cycles: a command's time in the worker
runs from the poll that read it to the commit of its transaction; its age is measured from the
record's timestamp (when it was produced) to that moment. The Kafka clients the worker holds
and its cycles (transactions, aborts) are gauges and counters too.
Lag gauges repeat the last `GET /lag` figures (offsets as Kafka reports them), and the
dead-letter gauge the records counted on each dead-letter topic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kes.streams.operations.lagmonitor import LagMonitor

if TYPE_CHECKING:
    from kes.streams.runtime.transaction import PartitionWork
    from kes.streams.runtime.worker import Worker

__all__ = ["CONTENT_TYPE", "WorkerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4"
"""The Prometheus text exposition format (aiohttp adds the UTF-8 charset)."""

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_COUNTERS = (
    ("commands", "commands", "Commands applied (each has exactly one outcome)."),
    ("accepted", "commands_accepted", "Commands the aggregate accepted."),
    ("rejected", "commands_rejected", "Commands the aggregate rejected."),
    ("events", "events_written", "Events written to the event log."),
    ("dead_letters", "dead_letters", "Commands sent to the dead-letter topic."),
    ("skipped", "commands_skipped", "Redelivered commands skipped as already applied."),
    (
        "replayed",
        "commands_replayed",
        "Retries answered from the outcome store, not decided again.",
    ),
    ("batches", "batches", "Transactions committed."),
    ("snapshots", "snapshots_written", "Entity snapshots written to the snapshot changelog."),
)


class _Latency:
    """Observes each committed command's time in the worker and its age."""

    def __init__(self, in_worker: Any, age: Any) -> None:
        self._in_worker = in_worker
        self._age = age

    def __call__(self, work: Sequence[PartitionWork], arrived: float) -> None:
        now, wall = time.monotonic(), time.time()
        for item in work:
            aggregate = item.topics.name
            stamps = item.result.timestamps
            _observe_many(self._in_worker.labels(aggregate), now - arrived, len(stamps))
            age = self._age.labels(aggregate)
            for stamp in stamps:
                if stamp > 0:
                    age.observe(max(0.0, wall - stamp / 1000))


def _observe_many(histogram: Any, value: float, count: int) -> None:
    """`count` observations of one value (every command of a cycle spent the same time).

    Uses the histogram child's counters directly when they are there (prometheus_client's
    `_sum` and `_buckets`), else observes one by one.
    """
    buckets = getattr(histogram, "_buckets", None)
    upper = getattr(histogram, "_upper_bounds", None)
    if buckets is None or upper is None or count <= 1:
        for _ in range(count):
            histogram.observe(value)
        return
    histogram._sum.inc(value * count)
    for i, bound in enumerate(upper):
        if value <= bound:
            buckets[i].inc(count)
            break


class _WorkerCollector(Collector):
    """Counters and gauges computed at scrape time from the worker's state."""

    def __init__(self, worker: Worker, monitor: LagMonitor) -> None:
        self._worker = worker
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        worker = self._worker
        labels = ["aggregate", "partition"]
        counters = {
            attr: CounterMetricFamily(f"kes_{name}", doc, labels=labels)
            for attr, name, doc in _COUNTERS
        }
        assigned = GaugeMetricFamily(
            "kes_partitions_assigned", "Command partitions this worker owns.", labels=["aggregate"]
        )
        recovered = GaugeMetricFamily(
            "kes_partitions_recovered",
            "Owned command partitions whose snapshots are recovered (ready).",
            labels=["aggregate"],
        )
        recovery = GaugeMetricFamily(
            "kes_recovery_seconds", "How long recovering the partition took.", labels=labels
        )
        cached = GaugeMetricFamily(
            "kes_entities_cached",
            "Entities held decoded in memory (the active ones).",
            labels=labels,
        )
        outcomes = GaugeMetricFamily(
            "kes_outcomes_stored", "Command outcomes kept to answer retries.", labels=labels
        )
        tails = GaugeMetricFamily(
            "kes_entities_unsnapshotted",
            "Entities whose latest events are not in their changelog snapshot yet (recovery "
            "folds them): see KES_SNAPSHOT_EVERY.",
            labels=labels,
        )
        totals: dict[str, list[int]] = {name: [0, 0] for name in worker.behaviors}
        for tp, task in list(worker.processors.items()):
            aggregate = worker.topics_of(tp).name
            totals[aggregate][0] += 1
            if not task.done() or task.cancelled() or task.exception() is not None:
                continue
            totals[aggregate][1] += 1
            processor = task.result()
            values = [aggregate, str(tp.partition)]
            for attr, family in counters.items():
                family.add_metric(values, getattr(processor.stats, attr))
            recovery.add_metric(values, processor.stats.recovery_seconds)
            cached.add_metric(values, processor.step.cached)
            outcomes.add_metric(values, processor.store.outcomes())
            tails.add_metric(values, len(processor.tails))
        for aggregate, (owned, done) in totals.items():
            assigned.add_metric([aggregate], owned)
            recovered.add_metric([aggregate], done)
        yield from counters.values()
        yield from (assigned, recovered, recovery, cached, outcomes, tails)
        ready = GaugeMetricFamily("kes_ready", "1 once every owned partition is recovered.")
        ready.add_metric([], 1.0 if worker.ready() else 0.0)
        yield ready
        clients = GaugeMetricFamily(
            "kes_kafka_clients", "Kafka clients this worker holds, by role.", labels=["role"]
        )
        for role, count in worker.engine.clients().items():
            clients.add_metric([role], count)
        yield clients
        stats = worker.engine.stats
        for name, value, doc in (
            ("kes_cycles", stats.cycles, "Cycles that decided commands."),
            ("kes_transactions", stats.transactions, "Cycles committed (one transaction each)."),
            ("kes_transactions_aborted", stats.aborted, "Cycles aborted and redone."),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
        yield from self._lag()

    def _lag(self) -> Iterator[Metric]:
        report = self._monitor.last
        names = ["group", "topic", "partition"]
        lag = GaugeMetricFamily("kes_consumer_lag", "Log end minus committed offset.", labels=names)
        committed = GaugeMetricFamily(
            "kes_committed_offset", "The group's committed offset.", labels=names
        )
        end = GaugeMetricFamily(
            "kes_log_end_offset", "The partition's high watermark.", labels=names
        )
        for group in report.groups if report is not None else ():
            for p in group.partitions:
                values = [group.target.group, group.target.topic, str(p.partition)]
                end.add_metric(values, p.log_end)
                if p.committed is not None and p.lag is not None:
                    committed.add_metric(values, p.committed)
                    lag.add_metric(values, p.lag)
        yield from (lag, committed, end)
        letters = GaugeMetricFamily(
            "kes_dead_letter_records", "Records on a dead-letter topic.", labels=["topic"]
        )
        for topic, count in sorted(self._monitor.dead_letters.items()):
            letters.add_metric([topic], count)
        yield letters


class WorkerMetrics:
    """The registry behind `GET /metrics` for one worker."""

    def __init__(self, worker: Worker, monitor: LagMonitor) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_WorkerCollector(worker, monitor))
        per_cycle = Histogram(
            "kes_commands_per_cycle",
            "Commands each committed cycle (one transaction) carried.",
            registry=self.registry,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
        )
        worker.engine.on_committed.append(
            lambda work, arrived: per_cycle.observe(sum(w.result.commands for w in work))
        )
        in_worker = Histogram(
            "kes_command_seconds",
            "Time from a command's arrival in the worker to the commit of its transaction.",
            ["aggregate"],
            registry=self.registry,
            buckets=_BUCKETS,
        )
        age = Histogram(
            "kes_command_age_seconds",
            "Time from a command's record timestamp (produced) to the commit of its transaction.",
            ["aggregate"],
            registry=self.registry,
            buckets=_BUCKETS,
        )
        worker.engine.on_committed.append(_Latency(in_worker, age))

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return bytes(generate_latest(self.registry))
