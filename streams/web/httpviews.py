"""A small HTTP server for a process's read-only views (health, metrics, lookups), on threads.

Projection processes and process runners have no event loop to host aiohttp as the worker's
Faust app does; the standard library's threading server is enough for GET views. A view that
waits (a read-your-writes read) holds only its own thread. A view that fails answers 503 with
its reason: a projection or runner stopping closes its stores under a read.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from kes.schemas.errors import ConfigurationError

__all__ = ["Answer", "Request", "ViewServer", "WebViews", "json_answer", "metrics_answer"]

log = logging.getLogger(__name__)

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """A GET: the path's segments (unquoted) and the query's last value per name."""

    path: str
    parts: list[str]
    query: dict[str, str]


@dataclass(frozen=True)
class Answer:
    """What a view answers."""

    status: HTTPStatus
    body: bytes
    content_type: str = "application/json"


def json_answer(status: HTTPStatus, body: object) -> Answer:
    """An answer with a JSON body."""
    return Answer(status, json.dumps(body).encode())


def metrics_answer(collector: Collector) -> Callable[[], Answer]:
    """A view that renders `collector` in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return lambda: Answer(HTTPStatus.OK, generate_latest(registry), METRICS_TYPE)


class ViewServer:
    """Serves `route(request) -> Answer` on `host:port` (port 0: any free port) in a thread.

    `what` names the views in the error when the port cannot be had (e.g. "projection web
    views"), with the flag that moves them.
    """

    def __init__(
        self, route: Callable[[Request], Answer], host: str, port: int, what: str, flag: str
    ) -> None:

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                _answer(self, route)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        try:
            self._server = ThreadingHTTPServer((host, port), _Handler)
        except OSError as exc:
            raise ConfigurationError(
                f"{what} cannot listen on {host}:{port} ({exc.strerror}): "
                f"pass another {flag}, or 0 for none"
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
            target=self._server.serve_forever, name="http-views", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class WebViews:
    """A process's views served by a ViewServer: subclasses answer in `route`."""

    def __init__(self, host: str, port: int, what: str) -> None:
        self._server = ViewServer(self.route, host, port, what, "--web-port")

    def route(self, request: Request) -> Answer:
        """Answer one GET."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self._server.port

    def start(self) -> None:
        """Serve in a background thread."""
        self._server.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.close()


def _answer(handler: BaseHTTPRequestHandler, route: Callable[[Request], Answer]) -> None:
    url = urlsplit(handler.path)
    parts = [unquote(p) for p in url.path.strip("/").split("/")]
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    try:
        answer = route(Request(url.path, parts, query))
    except Exception as exc:
        log.warning("%s failed: %s", handler.path, exc)
        answer = json_answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
    handler.send_response(answer.status)
    handler.send_header("Content-Type", answer.content_type)
    handler.send_header("Content-Length", str(len(answer.body)))
    handler.end_headers()
    handler.wfile.write(answer.body)
