"""A worker's Prometheus metrics: what it applied, how long commands took, lag and recovery.

Counters are read from the partition processors' own counters (PartitionStats) when Prometheus
scrapes, per aggregate and partition, counting since this worker took the partition: when a
partition moves away and back, its series starts again from zero, which Prometheus treats as a
counter reset. Latencies come from a Faust sensor: a command's time in the worker runs from its
arrival in the agent's stream to its acknowledgement, which happens only after its transaction
committed; its age is measured from the record's timestamp (when it was produced) to that moment.
Lag gauges repeat the last `GET /lag` figures (offsets as Kafka reports them), and the
dead-letter gauge the records counted on each dead-letter topic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from faust.sensors import Sensor
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.lagmonitor import LagMonitor

if TYPE_CHECKING:
    from streams.worker import Worker

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
    ("batches", "batches", "Transactions committed."),
)


class _LatencySensor(Sensor):  # type: ignore[misc]
    """Times each command of the worker's commands topics from arrival to acknowledgement."""

    def __init__(self, aggregates: Mapping[str, str], in_worker: Any, age: Any) -> None:
        super().__init__()
        self._aggregates = aggregates
        self._in_worker = in_worker
        self._age = age
        self._arrived: dict[tuple[Any, int], float] = {}

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        if tp.topic in self._aggregates:
            self._arrived[(tp, offset)] = time.monotonic()

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        arrived = self._arrived.pop((tp, offset), None)
        if arrived is None:
            return
        aggregate = self._aggregates[tp.topic]
        self._in_worker.labels(aggregate).observe(time.monotonic() - arrived)
        stamp = float(getattr(message, "timestamp", 0) or 0)
        if stamp > 1e11:  # milliseconds
            stamp /= 1000
        if stamp > 0:
            self._age.labels(aggregate).observe(max(0.0, time.time() - stamp))


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
        for aggregate, (owned, done) in totals.items():
            assigned.add_metric([aggregate], owned)
            recovered.add_metric([aggregate], done)
        yield from counters.values()
        yield from (assigned, recovered, recovery)
        ready = GaugeMetricFamily("kes_ready", "1 once every owned partition is recovered.")
        ready.add_metric([], 1.0 if worker.ready() else 0.0)
        yield ready
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
        aggregates = {t.commands: name for name, t in worker.topics.items()}
        worker.app.sensors.add(_LatencySensor(aggregates, in_worker, age))

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return bytes(generate_latest(self.registry))
