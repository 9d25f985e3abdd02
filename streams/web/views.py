"""The operator's views on a worker's Faust web server (read-only; 127.0.0.1 unless configured).

- `GET /`: the dashboard (streams/web/static/, no CDN): lag per group and partition, charts of lag
  and throughput, which worker owns which partition, dead-letter counts; it polls `/lag`.
- `GET /lag`: lag per group and partition as Kafka reports it (kes.streams.operations.lag), with
  `?history=SECONDS` the figures of the last seconds too; also the dead-letter counts.
- `GET /entities/<aggregate>/<id>`: an entity's state and revision (kes.streams.web.entities).
- `GET /metrics`: Prometheus text format (kes.streams.web.metrics).
- `GET /health` is the worker's own (ready once its partitions are recovered).

`install_views(worker)` registers them, before Faust adds its built-in pages, so `/` is ours.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kes.streams.kafka.config import confluent_config
from kes.streams.operations.lag import LagReport, LagTarget
from kes.streams.operations.lagmonitor import LagMonitor
from kes.streams.web.entities import entity_response
from kes.streams.web.metrics import CONTENT_TYPE, WorkerMetrics

if TYPE_CHECKING:
    from kes.streams.runtime.worker import Worker

__all__ = ["OperatorViews", "command_targets", "install_views"]

STATIC = Path(__file__).parent / "static"
_ASSETS = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}
_SAMPLE_SECONDS = 2.0
_MAX_HISTORY = 600.0


def command_targets(worker: Worker) -> list[LagTarget]:
    """The command processor's group on each aggregate's commands topic."""
    group = worker.settings.group_id
    return [
        LagTarget(group, t.commands, kind="commands", dead_letters=t.dlq)
        for t in worker.topics.values()
    ]


def _number(value: Any) -> Any:
    """JSON has no infinity or NaN: such rates become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class OperatorViews:
    """State behind the views: the lag monitor and the metrics registry of one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.lag = LagMonitor(
            confluent_config(worker.settings), command_targets(worker), isolated=True
        )
        self.metrics = WorkerMetrics(worker, self.lag)

    def watch(self, targets: list[LagTarget]) -> None:
        """Also report these groups (projections) in /lag, the dashboard and /metrics."""
        self.lag.watch(targets)

    def lag_json(self, report: LagReport, history: float = 0.0) -> dict[str, Any]:
        """The /lag body: the report, owners' worker URLs, dead letters, optional history."""
        body = report.to_json()
        for group, lag in zip(body["groups"], report.groups, strict=True):
            for row in group["partitions"]:
                url = (row["owner"] or {}).get("client_id", "")
                if url.startswith("http") and group["group"] == self.worker.settings.group_id:
                    row["owner"] = {**row["owner"], "worker": url}
            group["dead_letters"] = (  # a dead-letter topic not created yet holds none
                self.lag.dead_letters.get(lag.target.dead_letters, 0)
                if lag.target.dead_letters
                else None
            )
            group["dead_letter_topic"] = lag.target.dead_letters
            if history > 0:
                group["history"] = [
                    {"at": g.at, "lag": g.lag, "consume_rate": _number(g.consume_rate),
                     "produce_rate": _number(g.produce_rate)}
                    for g in self.lag.series(lag.target, history)
                ]  # fmt: skip
        body["worker"] = self.worker.settings.advertised_url
        body["app_id"] = self.worker.settings.app_id
        body["error"] = self.lag.error
        return body


def install_views(worker: Worker) -> OperatorViews:
    """Register the operator's views on the worker's Faust app; returns their state."""
    views = OperatorViews(worker)
    app = worker.app
    index = STATIC / "index.html"

    @app.page("/")
    async def dashboard(web: Any, request: Any) -> Any:
        """The dashboard page."""
        return web.html(index.read_text())

    @app.page("/static/{name}")
    async def asset(web: Any, request: Any, name: str) -> Any:
        """The dashboard's script and style sheet."""
        content_type = _ASSETS.get(name)
        if content_type is None:
            return web.text("not found", status=404)
        return web.text((STATIC / name).read_text(), content_type=content_type)

    @app.page("/lag")
    async def lag(web: Any, request: Any) -> Any:
        """Lag per group and partition, from Kafka's offsets."""
        try:
            history = min(float(request.query.get("history", 0)), _MAX_HISTORY)
        except ValueError:
            return web.json({"error": "history must be a number of seconds"}, status=400)
        report = await views.lag.report(max_age=1.0)
        return web.json(views.lag_json(report, history))

    @app.page("/entities/{aggregate}/{entity_id}")
    async def entity(web: Any, request: Any, aggregate: str, entity_id: str) -> Any:
        """An entity's current state and revision, from the worker that owns it."""
        return await entity_response(worker, views.lag.reader, web, request, aggregate, entity_id)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        """Prometheus metrics of this worker."""
        return web.text(views.metrics.render().decode(), content_type=CONTENT_TYPE)

    @app.timer(interval=_SAMPLE_SECONDS)  # type: ignore[untyped-decorator]
    async def sample_lag() -> None:
        """Keep the lag history filled for the charts, polled or not."""
        await views.lag.report(max_age=_SAMPLE_SECONDS / 2)

    return views
