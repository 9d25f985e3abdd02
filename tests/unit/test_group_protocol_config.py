"""KES_GROUP_PROTOCOL: the command consumer's configuration under each group protocol."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Consumer

from kes.schemas.errors import ConfigurationError
from kes.streams.config.settings import Settings
from kes.streams.runtime.engine import Engine

CLASSIC_ONLY = {"partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"}


def _config(settings: Settings) -> dict[str, Any]:
    stand_in = SimpleNamespace(
        settings=settings, transactional_id="app-1", client_id="http://w", _client_error=print
    )
    return Engine.consumer_config(stand_in)  # type: ignore[arg-type]


def test_classic_is_the_default_with_cooperative_sticky_and_static_membership() -> None:
    settings = Settings.from_env({})
    assert settings.group_protocol == "classic"
    config = _config(settings)
    assert "group.protocol" not in config
    assert config["group.instance.id"] == "app-1"
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["session.timeout.ms"] == settings.session_timeout_ms


def test_consumer_protocol_leaves_assignment_and_session_to_the_broker() -> None:
    settings = Settings.from_env({"KES_GROUP_PROTOCOL": "consumer"})
    config = _config(settings)
    assert config["group.protocol"] == "consumer"
    assert not CLASSIC_ONLY & config.keys()
    assert "group.instance.id" not in config
    Consumer({k: v for k, v in config.items() if k != "logger"}).close()  # librdkafka accepts it


def test_an_unknown_group_protocol_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="group_protocol"):
        Settings.from_env({"KES_GROUP_PROTOCOL": "cooperative"})
