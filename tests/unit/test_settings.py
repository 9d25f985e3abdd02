"""Worker settings from the environment and flags."""

from __future__ import annotations

import pytest

from kes.schemas.errors import ConfigurationError
from kes.streams.config.settings import Settings


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False)])
def test_take_over_comes_from_kes_take_over(value: str, expected: bool) -> None:
    assert Settings.from_env({"KES_TAKE_OVER": value}).take_over is expected
    assert Settings.from_env({}).take_over is False
    assert Settings.from_env({}, take_over=True).take_over is True


def test_a_cycle_takes_what_has_arrived_by_default_and_refuses_nonsense() -> None:
    settings = Settings.from_env({"KES_BATCH_MAX_COMMANDS": "50", "KES_BATCH_MAX_MS": "5"})
    assert (settings.batch_max_commands, settings.batch_max_ms) == (50, 5)
    assert Settings().batch_max_ms == 0
    with pytest.raises(ConfigurationError):
        Settings(batch_max_commands=0)


def test_replication_comes_from_the_environment_and_derives_min_insync() -> None:
    three = Settings.from_env({"KES_REPLICATION_FACTOR": "3"}).topics("account")
    assert (three.replication_factor, three.min_insync_replicas) == (3, 2)
    two = Settings.from_env({"KES_REPLICATION_FACTOR": "2"}).topics("account")
    assert (two.replication_factor, two.min_insync_replicas) == (2, 1)
    chosen = Settings.from_env(
        {"KES_REPLICATION_FACTOR": "5", "KES_MIN_INSYNC_REPLICAS": "3"}
    ).topics("account")
    assert (chosen.replication_factor, chosen.min_insync_replicas) == (5, 3)
    assert Settings().topics("account").replication_factor == 1  # `kes topics` asks the cluster
    with pytest.raises(ConfigurationError, match="min_insync_replicas"):
        Settings(replication_factor=2, min_insync_replicas=3).topics("account")


def test_retention_settings_reach_the_layout_and_are_checked_against_the_horizon() -> None:
    settings = Settings.from_env(
        {"KES_COMMANDS_RETENTION_MS": "3600000", "KES_REPLIES_RETENTION_MS": "60000"}
    )
    specs = {s.name: s.config for s in settings.topics("account").specs()}
    assert specs["account.commands"]["retention.ms"] == "3600000"
    assert specs["account.replies"]["retention.ms"] == "60000"
    (warning,) = settings.retention_warnings()
    assert "1 h, less than the outcome horizon (168 h)" in warning
    assert Settings().retention_warnings() == []
    assert Settings(commands_retention_ms=-1).retention_warnings() == []
    assert Settings(commands_retention_ms=1, outcome_horizon_s=0).retention_warnings() == []
