"""A process runner's web views: health, Prometheus metrics, and its processes.

`GET /health`               200 once the runner has joined its group, else 503
`GET /metrics`              cycles, routed inputs, inputs handled, timers fired, commands sent,
                            aborted cycles (counters); inbox partitions driven here, processes by
                            status, pending timers and stuck processes among them (gauges)
`GET /processes`            the same counts and the stuck processes' ids (JSON)
`GET /processes/<id>`       one process's record: status, steps, timers, state (JSON), 404 when
                            its inbox partition is driven by another runner or it does not exist

The counts over processes read every record of the partitions driven here, at most once per
`refresh` seconds (10 by default); a stuck process is failed, or running with no progress for
`stuck_after` seconds (300) and no timer ahead, as `kes process status` says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http import HTTPStatus

from google.protobuf.json_format import MessageToDict
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kes.streams.processes.runner import ProcessRunner
from kes.streams.processes.status import STATUSES, ProcessSummary, describe, summarize
from kes.streams.web.httpviews import Answer, Request, WebViews, json_answer, metrics_answer

__all__ = ["ProcessWeb"]

_COUNTERS = (
    ("cycles", "cycles", "Cycles that read something."),
    ("routed", "inputs_routed", "Events and rejections routed to the inbox."),
    ("inputs", "inputs_handled", "Inbox records and timers handled."),
    ("timers", "timers_fired", "Timers fired."),
    ("commands", "commands_sent", "Commands sent to aggregates."),
    ("aborted", "cycles_aborted", "Cycles whose transaction aborted (redone)."),
)


class _Summary:
    """The counts over the runner's processes, recomputed at most every `refresh` seconds."""

    def __init__(self, runner: ProcessRunner, refresh: float, stuck_after: float) -> None:
        self._runner = runner
        self._refresh = refresh
        self._stuck_after_ms = int(stuck_after * 1000)
        self._lock = threading.Lock()
        self._at = -refresh
        self._summary = ProcessSummary()

    def get(self) -> ProcessSummary:
        with self._lock:
            if time.monotonic() - self._at >= self._refresh:
                records = {r.process_id: r for r in self._runner.records()}
                self._summary = summarize(records, self._runner.clock(), self._stuck_after_ms)
                self._at = time.monotonic()
            return self._summary


class _Metrics(Collector):
    def __init__(self, runner: ProcessRunner, summary: _Summary) -> None:
        self._runner = runner
        self._summary = summary

    def collect(self) -> Iterator[Metric]:
        labels = ["process"]
        name = self._runner.process.name
        for attr, metric, text in _COUNTERS:
            family = CounterMetricFamily(f"kes_process_{metric}", text, labels=labels)
            family.add_metric([name], getattr(self._runner.stats, attr))
            yield family
        partitions = GaugeMetricFamily(
            "kes_process_partitions", "Inbox partitions driven here.", labels=labels
        )
        partitions.add_metric([name], len(self._runner.partitions()))
        summary = self._summary.get()
        by_status = GaugeMetricFamily(
            "kes_process_processes",
            "Processes on the inbox partitions driven here, by status.",
            labels=[*labels, "status"],
        )
        for status in STATUSES:  # every status, zero included: "none running" is a sample
            by_status.add_metric([name, status], summary.by_status[status])
        timers = GaugeMetricFamily(
            "kes_process_timers_pending", "Timers of running processes.", labels=labels
        )
        timers.add_metric([name], summary.timers)
        stuck = GaugeMetricFamily(
            "kes_process_stuck",
            "Processes failed, or without progress past the stuck time and no timer ahead.",
            labels=labels,
        )
        stuck.add_metric([name], len(summary.stuck))
        yield from (partitions, by_status, timers, stuck)


class ProcessWeb(WebViews):
    """Serves the views above for a ProcessRunner on `host:port` (port 0: any free port)."""

    def __init__(
        self,
        runner: ProcessRunner,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        refresh: float = 10.0,
        stuck_after: float = 300.0,
    ) -> None:
        self.runner = runner
        self._summary = _Summary(runner, refresh, stuck_after)
        self._metrics = metrics_answer(_Metrics(runner, self._summary))
        super().__init__(host, port, "process web views")

    def route(self, request: Request) -> Answer:
        """Answer one GET."""
        parts = request.parts
        if parts == ["health"]:
            up = self.runner.started
            status = HTTPStatus.OK if up else HTTPStatus.SERVICE_UNAVAILABLE
            return json_answer(status, {"running": up, "partitions": self.runner.partitions()})
        if parts == ["metrics"]:
            return self._metrics()
        if parts == ["processes"]:
            summary = self._summary.get()
            body = {
                "processes": dict(summary.by_status),
                "timers": summary.timers,
                "stuck": summary.stuck[:100],
                "partitions": self.runner.partitions(),
            }
            return json_answer(HTTPStatus.OK, body)
        if len(parts) == 2 and parts[0] == "processes":
            record = self.runner.record(parts[1])
            if record is None:
                error = f"no process {parts[1]!r} on the partitions driven here"
                return json_answer(HTTPStatus.NOT_FOUND, {"error": error})
            body = {"record": MessageToDict(record), "text": describe(record)}
            return json_answer(HTTPStatus.OK, body)
        return json_answer(HTTPStatus.NOT_FOUND, {"error": f"no view at {request.path}"})
