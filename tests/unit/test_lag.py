"""Lag figures from readings: lag, rates, time to catch up, history, the `kes lag` table."""

from __future__ import annotations

import pytest

from kes.streams.cli.lag import format_report
from kes.streams.config.settings import Settings
from kes.streams.operations.lag import (
    GroupReading,
    LagHistory,
    LagTarget,
    PartitionReading,
    app_targets,
    figures,
)

TARGET = LagTarget("g", "t.commands", dead_letters="t.dlq")


def reading(at: float, *rows: tuple[int | None, int]) -> GroupReading:
    parts = tuple(PartitionReading(p, c, e) for p, (c, e) in enumerate(rows))
    return GroupReading(TARGET, at, parts, "STABLE")


def test_lag_is_log_end_minus_committed_and_unknown_without_a_commit() -> None:
    lag = figures(reading(10.0, (5, 8), (None, 4), (7, 7)))
    assert [p.lag for p in lag.partitions] == [3, None, 0]
    assert lag.lag == 3
    assert lag.consume_rate is None and lag.eta_seconds is None
    assert [p.eta_seconds for p in lag.partitions] == [None, None, 0.0]


def test_no_committed_offset_anywhere_means_no_group_lag() -> None:
    lag = figures(reading(1.0, (None, 4), (None, 0)))
    assert lag.lag is None and lag.eta_seconds is None


def test_rates_and_time_to_catch_up_from_two_readings() -> None:
    earlier = reading(0.0, (0, 100), (0, 0))
    now = reading(10.0, (50, 150), (0, 0))
    lag = figures(now, [earlier])
    p0 = lag.partitions[0]
    assert p0.consume_rate == 5.0 and p0.produce_rate == 5.0
    assert p0.lag == 100 and p0.eta_seconds is None  # not gaining on the producer: never
    quiet = figures(reading(20.0, (100, 150), (0, 0)), [now])
    assert quiet.partitions[0].eta_seconds == pytest.approx(50 / 5.0)
    assert quiet.lag == 50 and quiet.eta_seconds == pytest.approx(10.0)


def test_history_uses_the_oldest_reading_within_the_rate_window() -> None:
    history = LagHistory(rate_window=30.0, keep=100.0)
    history.add([reading(0.0, (0, 0))])
    history.add([reading(20.0, (100, 200))])
    report = history.add([reading(40.0, (300, 400))])
    assert report.groups[0].consume_rate == pytest.approx((300 - 100) / 20)
    assert [g.at for g in history.series(TARGET)] == [0.0, 20.0, 40.0]
    assert [g.at for g in history.series(TARGET, 20)] == [20.0, 40.0]
    history.add([reading(200.0, (300, 400))])
    assert [g.at for g in history.series(TARGET)] == [200.0]


def test_a_failed_reading_keeps_the_history_and_reports_the_error() -> None:
    history = LagHistory()
    history.add([reading(0.0, (0, 10))])
    report = history.add([GroupReading(TARGET, 5.0, error="topic t.commands does not exist")])
    assert report.groups[0].error and report.groups[0].partitions == ()
    assert len(history.series(TARGET)) == 1


def test_json_and_table_show_the_same_figures() -> None:
    report = LagHistory().add([reading(0.0, (5, 8), (None, 4))])
    body = report.to_json()
    rows = body["groups"][0]["partitions"]
    assert [(r["committed"], r["log_end"], r["lag"]) for r in rows] == [(5, 8, 3), (None, 4, None)]
    lines = format_report(report).splitlines()
    assert lines[0].split()[:6] == ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"]
    assert lines[1].split()[:6] == ["g", "t.commands", "0", "5", "8", "3"]
    assert lines[2].split()[:6] == ["g", "t.commands", "1", "-", "4", "-"]
    assert lines[3].split()[:5] == ["g", "t.commands", "TOTAL", "12", "3"]


def test_app_targets_are_the_command_group_and_each_projection_group() -> None:
    settings = Settings(topic_prefix="p-", app_id="bank")
    targets = app_targets("kes.examples.bank", settings)
    assert targets[0] == LagTarget("bank", "p-account.commands", "commands", "p-account.dlq")
    kinds = {(t.group, t.topic, t.kind) for t in targets[1:]}
    assert ("p-account-balances", "p-account.events", "projection") in kinds
    assert ("p-large-transactions", "p-account.events", "reactor") in kinds


def test_a_partition_rate_uses_its_oldest_reading_with_a_committed_offset() -> None:
    first = reading(0.0, (None, 10))
    second = reading(10.0, (10, 10))
    lag = figures(reading(20.0, (30, 30)), [first, second])
    assert lag.partitions[0].consume_rate == 2.0  # from the second reading: 20 offsets in 10 s
    assert lag.partitions[0].produce_rate == 1.0  # from the first: 20 offsets in 20 s
