"""One trace from `CommandClient.ask` through the worker's decision (and the transaction that
commits it, linked) to a projection's handler.

The client and the projection run in this process with the OpenTelemetry SDK's in-memory
exporter; the worker is its own process and records its spans with `KES_TRACE_FILE`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kes.examples.bank.projections import balances
from kes.schemas.bank.v1 import bank_pb2
from kes.streams.client.client import CommandClient
from kes.streams.config.settings import Settings
from kes.streams.projections.projector import Projector
from tests.fixtures.workers import AppCluster


def test_one_trace_from_ask_to_the_projection_handler(
    app_cluster: Callable[..., AppCluster], tmp_path: Path
) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)  # once per process: no other test sets one

    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    worker_spans = tmp_path / "worker-spans.jsonl"
    cluster.worker("w1", KES_TRACE_FILE=str(worker_spans)).wait_ready()
    settings = Settings.from_env(cluster.env(), data_dir=str(tmp_path / "data"))
    projector = Projector(balances, settings)
    stop = threading.Event()
    running = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    running.start()
    try:
        topics = settings.topics("account")
        with (
            CommandClient(topics, settings.bootstrap_servers) as client,
            trace.get_tracer("test").start_as_current_span("checkout") as root,
        ):
            reply = client.ask("acc-t", bank_pb2.OpenAccount(owner="Tia"), 30)
        projector.wait_for(reply, 60)
    finally:
        stop.set()
        running.join(60)

    spans = {s.name: s for s in memory.get_finished_spans()}
    send, project = spans["send account"], spans["project account-balances"]
    trace_id = root.get_span_context().trace_id
    assert (
        send.context.trace_id == trace_id and send.parent.span_id == root.get_span_context().span_id
    )
    deadline = time.monotonic() + 10
    while not worker_spans.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    recorded = {
        span["name"]: span
        for span in (json.loads(line) for line in worker_spans.read_text().splitlines())
    }
    decide = recorded["decide account"]
    assert decide["trace_id"] == f"{trace_id:032x}"
    assert (
        decide["parent_id"] == f"{send.context.span_id:016x}"
    )  # the worker's span: the send's child
    assert project.context.trace_id == trace_id
    assert (
        f"{project.parent.span_id:016x}" == decide["span_id"]
    )  # the handler: the decision's child
    (transaction,) = [s for name, s in recorded.items() if name.startswith("transaction ")]
    assert transaction["links"] == [
        {"trace_id": decide["trace_id"], "span_id": decide["span_id"]}
    ]  # the transaction that committed the decision links to it
