"""docker-compose.yml cannot run here (no Docker engine); it must still agree with the project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streams.settings import DEFAULT_WEB_PORT, Settings
from topology.localbroker import kafka_version

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_are_a_broker_a_worker_and_a_projection() -> None:
    services = _compose()["services"]
    assert set(services) == {"kafka", "worker", "projection"}
    assert services["projection"]["command"] == [
        "projection",
        "run",
        "examples.bank",
        "account-balances",
    ]
    for name in ("worker", "projection"):
        assert services[name]["restart"] == "unless-stopped"
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_broker_image_is_the_pinned_kafka_version() -> None:
    image = _compose()["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{kafka_version()}"


def test_worker_publishes_the_default_web_port_and_reaches_the_broker() -> None:
    services = _compose()["services"]
    worker = services["worker"]
    assert f"{DEFAULT_WEB_PORT}:{DEFAULT_WEB_PORT}" in worker["ports"]
    env = worker["environment"]
    assert int(env["KES_WEB_PORT"]) == DEFAULT_WEB_PORT
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://{env['KAFKA_BOOTSTRAP_SERVERS']}" in advertised.split(",")
    assert worker["build"] == "."
    assert worker["command"][:2] == ["worker", "examples.bank"]
    assert (ROOT / "Dockerfile").exists()


def test_broker_publishes_the_clients_default_bootstrap_port() -> None:
    kafka = _compose()["services"]["kafka"]
    port = Settings().bootstrap_servers.rsplit(":", 1)[1]
    assert f"{port}:{port}" in kafka["ports"]
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"HOST://localhost:{port}" in advertised


def test_transactions_work_on_a_single_node() -> None:
    env = _compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 1
