"""The topic-layout reads ask again after a transient failure and give up on a lasting one.

A stand-in AdminClient stands for the broker here: what is under test is the retry decision,
which a real cluster produces only by chance (a bootstrap connection retired mid-request)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from kes.schemas.errors import AdminError
from kes.topology import admin
from kes.topology.layout import TopicSpec

_SPEC = TopicSpec(name="t.commands", partitions=2, replication_factor=1, config={})


def _failed(code: int) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(KafkaException(KafkaError(code)))
    return future


def _done(value: object) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


class _Partition:
    def __init__(self, pid: int) -> None:
        self.id, self.replicas, self.leader = pid, [1], 1


class _Description:
    partitions = [_Partition(0), _Partition(1)]


class _Admin:
    """Fails describe_topics with `errors` in turn, then describes the topic."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors
        self.asked = 0

    def describe_topics(self, topics: Any, request_timeout: float) -> dict[str, Future[Any]]:
        self.asked += 1
        if self.errors:
            return {_SPEC.name: _failed(self.errors.pop(0))}
        return {_SPEC.name: _done(_Description())}

    def describe_configs(self, resources: list[Any], request_timeout: float) -> dict[Any, Any]:
        return {r: _done({}) for r in resources}


def test_a_retired_bootstrap_connection_is_asked_again() -> None:
    stand_in = _Admin([KafkaError._DESTROY_BROKER, KafkaError._TRANSPORT])
    result = admin._inspect(stand_in, [_SPEC], timeout=5)  # type: ignore[arg-type]
    assert stand_in.asked == 3
    assert result.checks[0].actual is not None
    assert result.checks[0].actual.partitions == 2


def test_a_lasting_failure_is_raised_with_the_topic_named() -> None:
    stand_in = _Admin([KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3)
    with pytest.raises(AdminError, match=r"describing topic t\.commands"):
        admin._inspect(stand_in, [_SPEC], timeout=5)  # type: ignore[arg-type]
    assert stand_in.asked == 1


def test_a_transient_failure_that_lasts_past_the_timeout_is_raised() -> None:
    stand_in = _Admin([KafkaError._DESTROY_BROKER] * 1000)
    with pytest.raises(AdminError, match=r"_DESTROY_BROKER"):
        admin._inspect(stand_in, [_SPEC], timeout=0.5)  # type: ignore[arg-type]
    assert 1 < stand_in.asked < 1000
