"""W3C trace context through kes: client -> command -> worker's decision -> events -> projections.

kes uses the OpenTelemetry API only; with no SDK installed (or none configured) every call here
is a no-op, and a `traceparent` header that arrives on a command still travels on to the
command's events unchanged. With an SDK, kes adds spans: `send <aggregate>` in the client
(producer), `decide <aggregate>` in the worker for each command that carries a trace
(consumer; its events carry its context), `transaction <app>` around the worker's Kafka
transaction when a command of it was traced (one span per transaction, linked to each traced
decision it commits), and `project <name>` around a projection's handler.
`KES_TRACE_FILE=<path>` makes a process record its spans as JSON lines in that file (needs the
SDK): a way to see a trace without a collector, and what the tests read.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind

__all__ = [
    "TRACEPARENT",
    "TRACE_HEADERS",
    "command_span",
    "install_file_exporter",
    "producer_headers",
    "project_span",
    "transaction_span",
]

TRACEPARENT = "traceparent"
"""The W3C header a traced record carries (its presence is what starts a span)."""
TRACE_HEADERS = (TRACEPARENT, "tracestate")
"""The W3C trace-context headers kes carries from a command to its events."""

_tracer = trace.get_tracer("kes")


def _carrier(headers: Sequence[tuple[str, Any]]) -> dict[str, str]:
    out = {}
    for key, value in headers:
        if key in TRACE_HEADERS and value:
            out[key] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return out


def producer_headers(name: str) -> tuple[Any, list[tuple[str, bytes]]]:
    """Start a producer span `name` (child of the current context); its headers to send.

    Returns `(span, headers)`; end the span once the record is sent. Without an SDK the span is
    a no-op and the headers carry the caller's own context, if it has one."""
    span = _tracer.start_span(name, kind=SpanKind.PRODUCER)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return span, [(k, v.encode()) for k, v in carrier.items()]


@contextmanager
def command_span(
    name: str, headers: Sequence[tuple[str, Any]]
) -> Iterator[list[tuple[str, bytes]]]:
    """Around a command's decision: yields the trace headers its events carry (empty when the
    command carries no trace: then no span either, so untraced commands cost one scan)."""
    carrier = _carrier(headers)
    if not carrier:
        yield []
        return
    context = propagate.extract(carrier)
    with _tracer.start_as_current_span(name, context=context, kind=SpanKind.CONSUMER) as span:
        out: dict[str, str] = {}
        if span.get_span_context().is_valid:
            propagate.inject(out)
        else:  # no SDK: pass the caller's context on as it came
            out = carrier
        yield [(k, v.encode()) for k, v in out.items()]


@contextmanager
def project_span(name: str, headers: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """Around a projection handler's run for one event (a child of the event's context)."""
    carrier = _carrier(headers)
    if not carrier:
        yield
        return
    with _tracer.start_as_current_span(
        name, context=propagate.extract(carrier), kind=SpanKind.CONSUMER
    ):
        yield


@contextmanager
def transaction_span(name: str, traced: Sequence[Sequence[tuple[str, Any]]]) -> Iterator[None]:
    """Around a transaction that commits the traced decisions whose trace headers are `traced`:
    one span linked to each (a transaction serves many traces, so it is no one's child). No
    traced decision, no span."""
    links = []
    for headers in traced:
        context = trace.get_current_span(propagate.extract(_carrier(headers))).get_span_context()
        if context.is_valid:
            links.append(Link(context))
    if not links:
        yield
        return
    with _tracer.start_as_current_span(name, kind=SpanKind.INTERNAL, links=links):
        yield


def install_file_exporter(path: str | None = None) -> bool:
    """With `KES_TRACE_FILE` (or `path`) set and the SDK installed, record this process's spans
    as JSON lines there; False when not installed (no file, or no SDK)."""
    found = path or os.environ.get("KES_TRACE_FILE")
    if not found:
        return False
    target: str = found
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return False

    lock = threading.Lock()

    class _JsonLines(SpanExporter):  # type: ignore[misc]
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            with lock, open(target, "a", encoding="utf-8") as out:
                for span in spans:
                    parent = span.parent
                    out.write(
                        json.dumps(
                            {
                                "name": span.name,
                                "trace_id": f"{span.context.trace_id:032x}",
                                "span_id": f"{span.context.span_id:016x}",
                                "parent_id": f"{parent.span_id:016x}" if parent else None,
                                "links": [
                                    {
                                        "trace_id": f"{link.context.trace_id:032x}",
                                        "span_id": f"{link.context.span_id:016x}",
                                    }
                                    for link in span.links
                                ],
                            }
                        )
                        + "\n"
                    )
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_JsonLines()))
    trace.set_tracer_provider(provider)
    return True
