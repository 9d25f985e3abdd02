"""The projection process's web views: health, Prometheus metrics, and reads of its rows.

`GET /health`                       200 while every projection runs, else 503 (JSON either way)
`GET /metrics`                      events read and applied, dead letters, store writes, time per
                                    batch, lag per partition (Prometheus text)
`GET /projections`                  each projection: running, lag, stored offsets (JSON)
`GET /projections/<name>/rows/<key>`          the row (its bytes; JSON rows as JSON), 404 if none
`GET /projections/<name>/rows/<key>?after=0:41,3:7[&aggregate=a][&timeout=5]`
    answers once the projection has applied the events at those offsets of the events topic
    (`partition:offset`, as a Reply's accepted events give them;
    `kes.streams.client.read_after(reply)` writes the value): read-your-writes from another process.
    504 after `timeout` seconds (default
    5, at most 60): the events are not applied yet, or their partition is served by another
    process of the group.

The server is kes.streams.web.httpviews' (threads): a read that waits holds one thread, never the
projectors'.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from kes.schemas.errors import ConfigurationError, ProjectionTimeoutError
from kes.stores.sqlmodel import SqlReadModel
from kes.streams.client.after import parse_after
from kes.streams.projections.host import ProjectionHost
from kes.streams.web.httpviews import Answer, Request, WebViews, json_answer, metrics_answer

__all__ = ["ProjectionWeb"]

_MAX_WAIT = 60.0
_COUNTERS = (
    ("records", "events_read", "Event records read (including skipped ones)."),
    ("applied", "events_applied", "Events a handler ran for successfully."),
    ("dead_letters", "dead_letters", "Events a handler failed on, sent to the dead-letter topic."),
    ("writes", "store_writes", "Atomic writes of rows and offsets to the read model's store."),
)


class _Metrics(Collector):
    """The host's projectors' counters and lag, read at scrape time."""

    def __init__(self, host: ProjectionHost) -> None:
        self._host = host

    def collect(self) -> Iterator[Metric]:
        families = {
            attr: CounterMetricFamily(f"kes_projection_{name}", text, labels=["projection"])
            for attr, name, text in _COUNTERS
        }
        batches = SummaryMetricFamily(
            "kes_projection_batch_seconds",
            "Time to apply and store one batch of events.",
            labels=["projection"],
        )
        running = GaugeMetricFamily(
            "kes_projection_running", "1 while the projection runs.", labels=["projection"]
        )
        lag = GaugeMetricFamily(
            "kes_projection_lag",
            "Events in the log not applied yet, per partition assigned to this process.",
            labels=["projection", "topic", "partition"],
        )
        for name, projector in self._host.projectors.items():
            stats = projector.stats
            for attr, family in families.items():
                family.add_metric([name], getattr(stats, attr))
            batches.add_metric([name], stats.batches, stats.batch_seconds)
            running.add_metric([name], 1.0 if self._host.running(name) else 0.0)
            for (topic, partition), behind in sorted(projector.lag().items()):
                lag.add_metric([name, topic, str(partition)], behind)
        yield from families.values()
        yield from (batches, running, lag)


class ProjectionWeb(WebViews):
    """Serves the views above for a ProjectionHost on `host:port` (port 0: any free port)."""

    def __init__(self, projections: ProjectionHost, host: str = "127.0.0.1", port: int = 0):
        self.projections = projections
        self._metrics = metrics_answer(_Metrics(projections))
        super().__init__(host, port, "projection web views")

    def route(self, request: Request) -> Answer:
        """Answer one GET."""
        parts = request.parts
        if parts == ["health"]:
            states = {name: self.projections.running(name) for name in self.projections.projectors}
            status = HTTPStatus.OK if all(states.values()) else HTTPStatus.SERVICE_UNAVAILABLE
            return json_answer(status, {"running": states})
        if parts == ["metrics"]:
            return self._metrics()
        if parts == ["projections"]:
            return json_answer(HTTPStatus.OK, self._overview())
        if len(parts) == 4 and parts[0] == "projections" and parts[2] == "rows":
            return self._row(parts[1], parts[3], request.query)
        return json_answer(HTTPStatus.NOT_FOUND, {"error": f"no view at {request.path}"})

    def _overview(self) -> dict[str, Any]:
        out = {}
        for name, projector in self.projections.projectors.items():
            out[name] = {
                "running": self.projections.running(name),
                "group": projector.group_id,
                "lag": {f"{t}[{p}]": n for (t, p), n in sorted(projector.lag().items())},
                "offsets": {f"{t}[{p}]": o for (t, p), o in sorted(projector.offsets().items())},
            }
        return out

    def _row(self, name: str, key: str, query: dict[str, str]) -> Answer:
        projector = self.projections.projectors.get(name)
        if projector is None:
            error = f"no projection {name!r} here: {sorted(self.projections.projectors)}"
            return json_answer(HTTPStatus.NOT_FOUND, {"error": error})
        store = projector.store
        if isinstance(store, SqlReadModel):
            error = f"{name} keeps its read model in SQL tables: query them"
            return json_answer(HTTPStatus.NOT_FOUND, {"error": error})
        try:
            wanted = parse_after(query.get("after", ""))
            timeout = min(float(query.get("timeout", "5")), _MAX_WAIT)
            if wanted:
                projector.wait_for(wanted, timeout, aggregate=query.get("aggregate"))
        except (ConfigurationError, ValueError) as exc:
            return json_answer(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except ProjectionTimeoutError as exc:
            return json_answer(HTTPStatus.GATEWAY_TIMEOUT, {"error": str(exc)})
        row = store.get(key)
        if row is None:
            return json_answer(HTTPStatus.NOT_FOUND, {"error": f"no row {key!r} in {name}"})
        return Answer(HTTPStatus.OK, row, _content_type(row))


def _content_type(row: bytes) -> str:
    try:
        json.loads(row)
    except ValueError:
        return "application/octet-stream"
    return "application/json"
