"""A reactor process under load: SIGKILLed five times, its data directory deleted each time
(a pod rescheduled on another host), it resumes from the group's committed offset; each side
effect runs at most twice. Stopped and started cleanly, each runs exactly once.

The reactor is `large-transactions` of tests.fixtures.threeviews: one line per side effect in
the file KES_TEST_EFFECTS names (entity, revision, kind, amount).
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from kes.examples.bank.projections import LARGE_AMOUNT
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import unpack
from kes.streams.client.reading import read_events
from kes.streams.config.settings import Settings
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.groups import committed_and_ends
from tests.fixtures.threeviews import PROJECTIONS
from tests.fixtures.workers import AppCluster
from tests.integration.test_projection_host import APP, Host

REACTOR = next(p for p in PROJECTIONS if p.name == "large-transactions")


def _large_events(settings: Settings) -> set[str]:
    found = set()
    for event in read_events(settings.topics("account"), settings.bootstrap_servers):
        payload = unpack(event.payload)
        moved = isinstance(payload, bank_pb2.AccountCredited | bank_pb2.AccountDebited)
        if moved and payload.amount >= LARGE_AMOUNT:
            found.add(f"{event.entity_id} {event.revision}")
    return found


def _effects(host: Host) -> Counter[str]:
    if not host.effects.exists():
        return Counter()
    lines = host.effects.read_text().splitlines()
    return Counter(" ".join(line.split()[:2]) for line in lines)


def _committed(settings: Settings) -> int:
    committed, _ = committed_and_ends(settings, REACTOR.group_id(settings.topic_prefix))
    return sum(max(0, offset) for offset in committed.values())


def _ends(settings: Settings) -> int:
    _, ends = committed_and_ends(settings, REACTOR.group_id(settings.topic_prefix))
    return sum(ends.values())


def _wait(check: Callable[[], bool], failure: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def _cluster(app_cluster: Callable[..., AppCluster]) -> AppCluster:
    cluster = app_cluster(APP, ["account"], partitions=2)
    cluster.worker("w1").wait_ready()
    return cluster


@pytest.mark.long  # make chaos runs it (CI time)
def test_a_reactor_losing_its_volume_five_times_runs_each_effect_at_most_twice(
    app_cluster: Callable[..., AppCluster], tmp_path: Path
) -> None:
    cluster = _cluster(app_cluster)
    settings, bootstrap = cluster.settings, cluster.settings.bootstrap_servers
    topics = settings.topics("account")
    host = Host(cluster.env(), tmp_path, (REACTOR.name,)).start()
    commands = bank_commands(900, accounts=30, seed=5)
    ids: list[str] = []
    try:
        for chunk in range(6):
            ids += produce(bootstrap, topics, commands[chunk * 150 : (chunk + 1) * 150])
            if chunk == 5:
                break
            seen = sum(_effects(host).values())
            _wait(lambda seen=seen: sum(_effects(host).values()) > seen, "no side effect")
            end = _ends(settings)
            host.kill()
            shutil.rmtree(tmp_path / "data")  # the volume is gone: only Kafka remembers
            host.start()
            # before the next kill, the offsets must pass what the killed process may have
            # done: an effect is then redone at most once, by this process
            _wait(lambda end=end: _committed(settings) >= end, "the group never caught up")
        collect_replies(bootstrap, topics, ids, timeout=180)
        _wait(lambda: _committed(settings) >= _ends(settings), "the reactor never caught up")
    finally:
        host.kill()
    large = _large_events(settings)
    effects = _effects(host)
    assert large and set(effects) == large  # every large movement reacted to
    assert max(effects.values()) <= 2, effects.most_common(3)


def test_a_reactor_stopped_and_started_cleanly_runs_each_effect_once(
    app_cluster: Callable[..., AppCluster], tmp_path: Path
) -> None:
    cluster = _cluster(app_cluster)
    settings, bootstrap = cluster.settings, cluster.settings.bootstrap_servers
    topics = settings.topics("account")
    host = Host(cluster.env(), tmp_path, (REACTOR.name,)).start()
    commands = bank_commands(600, accounts=20, seed=6)
    ids = produce(bootstrap, topics, commands[:300])
    _wait(lambda: sum(_effects(host).values()) > 0, "no side effect")
    assert host.proc is not None
    host.proc.terminate()  # SIGTERM: the batch in hand is stored, the group left cleanly
    assert host.proc.wait(60) == 0
    ids += produce(bootstrap, topics, commands[300:])
    host.start()
    try:
        collect_replies(bootstrap, topics, ids, timeout=180)
        _wait(lambda: _committed(settings) >= _ends(settings), "the reactor never caught up")
    finally:
        host.kill()
    large = _large_events(settings)
    effects = _effects(host)
    assert set(effects) == large and set(effects.values()) == {1}
