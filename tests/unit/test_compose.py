"""docker-compose.yml cannot run here (no Docker engine); it must still agree with the project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from psycopg.conninfo import conninfo_to_dict

from kes.streams.config.settings import DEFAULT_WEB_PORT, Settings
from kes.streams.projections.projection import SqlProjection, projection_named
from kes.topology.localbroker import kafka_version
from kes.topology.localcluster import cluster_config

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _cluster() -> dict[str, dict[str, Any]]:
    """The services of the `cluster` profile."""
    services = _compose()["services"]
    return {name: s for name, s in services.items() if "cluster" in s.get("profiles", [])}


def test_services_are_a_broker_a_worker_projections_and_postgres() -> None:
    services = _compose()["services"]
    assert {name for name, s in services.items() if "profiles" not in s} == {
        "kafka",
        "worker",
        "projection",
        "postgres",
        "projection-sql",
    }
    assert services["projection"]["command"] == [
        "projection",
        "run",
        "kes.examples.bank",
        "account-balances",
    ]
    for name in ("worker", "projection", "projection-sql"):
        assert services[name]["restart"] == "unless-stopped"
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_the_sql_projection_runs_the_bank_table_in_the_compose_postgres() -> None:
    services = _compose()["services"]
    sql, postgres = services["projection-sql"], services["postgres"]
    name = sql["command"][3]
    assert sql["command"][:3] == ["projection", "run", "kes.examples.bank"]
    assert isinstance(projection_named("kes.examples.bank", name), SqlProjection)
    assert sql["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert postgres["healthcheck"]["test"]
    settings = Settings.from_env({k: str(v) for k, v in sql["environment"].items()})
    parts = conninfo_to_dict(settings.postgres_dsn)
    env = postgres["environment"]
    assert (parts["host"], parts["port"]) == ("postgres", "5432")
    assert (parts["user"], parts["password"], parts["dbname"]) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    )
    assert "5432:5432" in postgres["ports"]
    assert (
        settings.bootstrap_servers == services["worker"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    )


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
    assert worker["command"][:2] == ["worker", "kes.examples.bank"]
    assert (ROOT / "Dockerfile").exists()


def test_the_image_copies_what_the_package_build_reads() -> None:
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied.update(line.split()[1:-1])
    needed = {"pyproject.toml", "setup.py", "README.md"}
    needed |= {"streams", "topology", "stores", "schemas", "examples"}
    assert needed <= copied


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


def test_the_cluster_profile_is_three_combined_nodes_of_one_quorum() -> None:
    nodes = _cluster()
    assert set(nodes) == {"kafka-1", "kafka-2", "kafka-3"}
    envs = [nodes[f"kafka-{i}"]["environment"] for i in (1, 2, 3)]
    assert [env["KAFKA_NODE_ID"] for env in envs] == [1, 2, 3]
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    for env in envs:
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == ",".join(
            f"{i}@kafka-{i}:9093" for i in (1, 2, 3)
        )
    for node in nodes.values():
        assert node["image"] == f"apache/kafka:{kafka_version()}"
        assert node["healthcheck"]["test"]


def test_the_cluster_has_the_replicated_defaults_of_the_local_cluster() -> None:
    wanted = {f"KAFKA_{k.upper().replace('.', '_')}": v for k, v in cluster_config(3).items()}
    for name, node in _cluster().items():
        env = {k: str(v) for k, v in node["environment"].items()}
        assert {k: env.get(k) for k in wanted} == wanted, name


def test_each_cluster_node_publishes_the_host_port_it_advertises() -> None:
    host_ports = []
    for name, node in _cluster().items():
        (published,) = node["ports"]
        host, container = published.split(":")
        listeners = node["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert f"HOST://localhost:{host}" in listeners, name
        assert f"HOST://0.0.0.0:{container}" in node["environment"]["KAFKA_LISTENERS"], name
        assert f"PLAINTEXT://{name}:29092" in listeners, name
        host_ports.append(host)
    assert len(set(host_ports)) == 3
