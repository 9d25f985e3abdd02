"""Security basics: no pickle, web views on loopback, SASL/TLS settings reach every Kafka client."""

from __future__ import annotations

import ast
import asyncio
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest

from kes.schemas.errors import ConfigurationError
from kes.streams.client import client as client_module
from kes.streams.client import reading, replies
from kes.streams.config.settings import Settings
from kes.streams.kafka import readback as records
from kes.streams.kafka.config import (
    KAFKA_LOG,
    aiokafka_options,
    confluent_config,
    faust_credentials,
)
from kes.streams.runtime import engine, recovery, transaction
from kes.topology import admin
from kes.topology.layout import AggregateTopics

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["streams", "topology", "stores", "schemas", "examples", "bench", "tests"]
UNSAFE = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "jsonpickle", "shelve", "marshal"}
CLIENTS = {"Consumer", "Producer", "AdminClient", "AIOKafkaConsumer", "AIOKafkaProducer"}
DEV_ONLY = {"topology/localbroker.py", "topology/localcluster.py"}  # local brokers' own probes

SASL = {
    "security.protocol": "sasl_ssl",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "kes",
    "sasl.password": "secret",
}
TOPICS = AggregateTopics("account", partitions=2)


def _sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_no_module_imports_pickle_or_another_code_executing_deserializer() -> None:
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in UNSAFE]
    assert found == []


def test_every_kafka_client_in_the_package_is_built_from_passed_in_settings() -> None:
    """A client config literal without the user's settings spread into it would drop SASL/TLS."""
    bare = []
    for pkg in ["streams", "topology", "stores"]:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if not isinstance(node, ast.Call) or _name(node.func) not in CLIENTS:
                    continue
                if rel not in DEV_ONLY and not _passes_settings(node):
                    bare.append(f"{rel}:{node.lineno}")
    assert bare == []


def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _passes_settings(call: ast.Call) -> bool:
    if any(k.arg is None for k in call.keywords):  # AIOKafka*(..., **options)
        return True
    for arg in call.args[:1]:
        if isinstance(arg, ast.Dict) and None in arg.keys:  # Consumer({**config, ...})
            return True
        if isinstance(arg, ast.Call) and _name(arg.func) in {"dict", "confluent_config"}:
            return True
    return False


def test_the_web_views_bind_to_loopback_by_default(tmp_path: Path) -> None:
    from kes.examples.bank import BEHAVIORS
    from kes.streams.runtime.worker import Worker

    assert Settings().web_host == "127.0.0.1"
    assert Settings.from_env({}).web_host == "127.0.0.1"
    worker = Worker(BEHAVIORS, Settings(data_dir=tmp_path))
    try:
        assert worker.app.conf.web_bind == "127.0.0.1"
        assert worker.app.conf.broker_credentials is None
    finally:
        worker.store.close()


def test_client_settings_come_from_kes_kafka_environment_variables() -> None:
    env = {
        "KES_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KES_KAFKA_SASL_MECHANISM": "PLAIN",
        "KES_KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
        "KES_KAFKA_SASL_USERNAME": "",  # empty: not set
    }
    assert Settings.from_env(env).client_config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "ssl.ca.location": "/etc/ca.pem",
    }
    assert Settings.from_env({}).client_config == {}


def test_confluent_and_aiokafka_and_faust_get_the_same_sasl_ssl_settings(tmp_path: Path) -> None:
    settings = Settings(bootstrap_servers="b1:9093,b2:9093", client_config=SASL)
    assert confluent_config(settings, **{"group.id": "g"}) == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "logger": KAFKA_LOG,
        **SASL,
        "group.id": "g",
    }
    options = aiokafka_options(settings)
    assert options["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("kes", "secret")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("kes", "secret")

    from kes.examples.bank import BEHAVIORS
    from kes.streams.runtime.worker import Worker

    worker = Worker(BEHAVIORS, Settings(data_dir=tmp_path, client_config=SASL))
    try:
        assert isinstance(worker.app.conf.broker_credentials, faust.SASLCredentials)
    finally:
        worker.store.close()


def test_tls_only_and_plaintext_settings() -> None:
    tls = Settings(client_config={"security.protocol": "SSL"})
    assert aiokafka_options(tls)["security_protocol"] == "SSL"
    assert isinstance(faust_credentials(tls), faust.SSLCredentials)
    assert faust_credentials(Settings()) is None
    with pytest.raises(ConfigurationError, match="no aiokafka equivalent"):
        aiokafka_options(Settings(client_config={"sasl.oauthbearer.config": "x"}))


class _Captured(Exception):
    """Raised by a stand-in client constructor once it has recorded its configuration."""


def _capture(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    seen: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[0] if args else kwargs)
        raise _Captured

    monkeypatch.setattr(module, name, make)
    return seen


def _has_sasl(config: Any) -> bool:
    if "sasl_plain_username" in config:  # aiokafka keyword arguments
        return bool(config["security_protocol"] == "SASL_SSL")
    return all(config.get(k) == v for k, v in SASL.items())


def test_every_client_kes_creates_gets_the_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"bootstrap.servers": "b:9093", **SASL}
    settings = Settings(bootstrap_servers="b:9093", client_config=SASL)
    seen = {
        "reply consumer": _capture(monkeypatch, replies, "Consumer"),
        "event reader": _capture(monkeypatch, reading, "Consumer"),
        "record reader (verify, rebuild, ...)": _capture(monkeypatch, records, "Consumer"),
        "admin": _capture(monkeypatch, admin, "AdminClient"),
        "transactional producer": _capture(monkeypatch, transaction, "Producer"),
        "committed-offsets reader": _capture(monkeypatch, recovery, "Consumer"),
        "changelog reader": _capture(monkeypatch, recovery, "AIOKafkaConsumer"),
    }
    with pytest.raises(_Captured):
        replies.ReplyRouter(TOPICS, config)
    with pytest.raises(_Captured):
        next(reading.read_events(TOPICS, "b:9093", client_config=SASL))
    with pytest.raises(_Captured):
        next(records.read_records("t", 1, config))
    with pytest.raises(_Captured):
        admin.plan(TOPICS, config)
    with pytest.raises(_Captured):
        transaction.TransactionalWriter(settings, "tx")
    request = recovery.RecoveryRequest("c", "s", 0, store=None)  # type: ignore[arg-type]
    with pytest.raises(_Captured):
        recovery._committed_offsets(settings, [request], timeout=1)
    monkeypatch.setattr(recovery, "_committed_offsets", lambda *args: [-1])
    with pytest.raises(_Captured):
        _run(recovery.recover(settings, [request], timeout=1))
    stand_in = SimpleNamespace(
        settings=settings, transactional_id="tx", client_id="http://w", _client_error=print
    )
    seen["command consumer"] = [engine.Engine.consumer_config(stand_in)]  # type: ignore[arg-type]
    producers = _capture(monkeypatch, client_module, "Producer")
    with pytest.raises(_Captured):
        client_module.CommandClient(TOPICS, "b:9093", SASL)
    seen["command producer"] = producers
    missing = [
        name for name, configs in seen.items() if len(configs) != 1 or not _has_sasl(configs[0])
    ]
    assert missing == []


def _run(coro: Any) -> Any:
    return asyncio.run(coro)
