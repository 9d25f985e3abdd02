"""The projection process's web views: health, Prometheus metrics, and reads of its rows.

`GET /health`                       200 while every projection runs, else 503 (JSON either way)
`GET /metrics`                      events read and applied, dead letters, store writes, time per
                                    batch, lag per partition (Prometheus text)
`GET /projections`                  each projection: running, lag, stored offsets (JSON)
`GET /projections/<name>/rows/<key>`          the row (its bytes; JSON rows as JSON), 404 if none
`GET /projections/<name>/rows/<key>?after=0:41,3:7[&aggregate=a][&timeout=5]`
    answers once the projection has applied the events at those offsets of the events topic
    (`partition:offset`, as a Reply's accepted events give them; `read_after(reply)` writes
    the value): read-your-writes from another process. 504 after `timeout` seconds (default
    5, at most 60): the events are not applied yet, or their partition is served by another
    process of the group.

The server is the standard library's threading HTTP server: a read that waits holds one thread,
never the projectors'.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from schemas.errors import ConfigurationError, ProjectionTimeoutError
from schemas.kes.v1.envelopes_pb2 import Reply
from stores.sqlmodel import SqlReadModel
from streams.projectionhost import ProjectionHost

__all__ = ["ProjectionWeb", "parse_after", "read_after"]

log = logging.getLogger(__name__)

_MAX_WAIT = 60.0
_COUNTERS = (
    ("records", "events_read", "Event records read (including skipped ones)."),
    ("applied", "events_applied", "Events a handler ran for successfully."),
    ("dead_letters", "dead_letters", "Events a handler failed on, sent to the dead-letter topic."),
    ("writes", "store_writes", "Atomic writes of rows and offsets to the read model's store."),
)


def read_after(reply: Reply) -> str:
    """The `after=` value that waits for a reply's accepted events ("" when it has none)."""
    if reply.WhichOneof("outcome") != "accepted" or not reply.accepted.event_offsets:
        return ""
    return f"{reply.accepted.partition}:{max(reply.accepted.event_offsets)}"


def parse_after(text: str) -> dict[int, int]:
    """`"0:41,3:7"` → `{0: 41, 3: 7}` (partition → event offset); ConfigurationError if not."""
    wanted: dict[int, int] = {}
    for part in filter(None, text.split(",")):
        partition, _, offset = part.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise ConfigurationError(f"after={text!r}: write partition:offset[,partition:offset]")
        wanted[int(partition)] = int(offset)
    return wanted


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


class ProjectionWeb:
    """Serves the views above for a ProjectionHost on `host:port` (port 0: any free port)."""

    def __init__(self, projections: ProjectionHost, host: str = "127.0.0.1", port: int = 0):
        self.projections = projections
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Metrics(projections))
        web = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                web.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        try:
            self._server = ThreadingHTTPServer((host, port), _Handler)
        except OSError as exc:
            raise ConfigurationError(
                f"projection web views cannot listen on {host}:{port} ({exc.strerror}): "
                "pass another --web-port, or 0 for none"
            ) from exc
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="projection-web", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        """Route one GET; a failure inside is a 503 with its reason (a projection stopping
        closes its store under a read)."""
        try:
            self._route(request)
        except Exception as exc:
            log.warning("projection web: %s failed: %s", request.path, exc)
            self._json(request, HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})

    def _route(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if parts == ["health"]:
            states = {name: self.projections.running(name) for name in self.projections.projectors}
            status = HTTPStatus.OK if all(states.values()) else HTTPStatus.SERVICE_UNAVAILABLE
            self._json(request, status, {"running": states})
        elif parts == ["metrics"]:
            body = generate_latest(self.registry)
            self._send(request, HTTPStatus.OK, body, "text/plain; version=0.0.4; charset=utf-8")
        elif parts == ["projections"]:
            self._json(request, HTTPStatus.OK, self._overview())
        elif len(parts) == 4 and parts[0] == "projections" and parts[2] == "rows":
            self._row(request, parts[1], parts[3], query)
        else:
            self._json(request, HTTPStatus.NOT_FOUND, {"error": f"no view at {url.path}"})

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

    def _row(
        self, request: BaseHTTPRequestHandler, name: str, key: str, query: dict[str, str]
    ) -> None:
        projector = self.projections.projectors.get(name)
        if projector is None:
            known = sorted(self.projections.projectors)
            self._json(
                request, HTTPStatus.NOT_FOUND, {"error": f"no projection {name!r} here: {known}"}
            )
            return
        try:
            wanted = parse_after(query.get("after", ""))
            timeout = min(float(query.get("timeout", "5")), _MAX_WAIT)
            if wanted:
                projector.wait_for(wanted, timeout, aggregate=query.get("aggregate"))
        except (ConfigurationError, ValueError) as exc:
            self._json(request, HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except ProjectionTimeoutError as exc:
            self._json(request, HTTPStatus.GATEWAY_TIMEOUT, {"error": str(exc)})
            return
        store = projector.store
        if isinstance(store, SqlReadModel):
            self._json(
                request,
                HTTPStatus.NOT_FOUND,
                {"error": f"{name} keeps its read model in SQL tables: query them"},
            )
            return
        row = store.get(key)
        if row is None:
            self._json(request, HTTPStatus.NOT_FOUND, {"error": f"no row {key!r} in {name}"})
            return
        self._send(request, HTTPStatus.OK, row, _content_type(row))

    def _json(self, request: BaseHTTPRequestHandler, status: HTTPStatus, body: object) -> None:
        self._send(request, status, json.dumps(body).encode(), "application/json")

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler, status: HTTPStatus, body: bytes, content_type: str
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


def _content_type(row: bytes) -> str:
    try:
        json.loads(row)
    except ValueError:
        return "application/octet-stream"
    return "application/json"
