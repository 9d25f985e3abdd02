"""Code older than its data, through real Kafka: it stops with exit code 78 and writes nothing,
and the newer code started afterwards goes on with nothing lost.

A worker running the wallet's version 1 on a partition whose snapshots version 2 wrote refuses
the partition, naming it and both versions; the command it was given is then answered by
version 2, once. A cold worker running version 2 whose tail fold meets events of schema version
3 (tests/apps/wallet_v3.py) refuses, naming the event's topic, partition and offset; `kes
verify` with version 2 reports those events as violations."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import pytest

from kes.schemas.evolution.v1.evolution_pb2 import Deposit, Wallet
from kes.streams.kafka.readback import read_records
from kes.streams.operations.verify import verify
from kes.streams.runtime.engine import EXIT_CONFIGURATION
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.apps import wallet_v2
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster

V1, V2, V3 = "tests.apps.wallet_v1", "tests.apps.wallet_v2", "tests.apps.wallet_v3"
WALLETS = [f"w-{i}" for i in range(4)]


def _written(topics: AggregateTopics, config: dict[str, str]) -> dict[str, int]:
    """Committed records per topic the worker writes."""
    return {
        topic: sum(1 for _ in read_records(topic, topics.partitions, config))
        for topic in (topics.events, topics.snapshots, topics.replies)
    }


def test_a_v1_worker_refuses_v2_snapshots_and_v2_goes_on(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster(V2, ["wallet"], partitions=2)
    topics = cluster.settings.topics("wallet")
    bootstrap = cluster.settings.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    v2 = cluster.worker("w1")
    v2.wait_ready()
    ids = produce(bootstrap, topics, [(w, Deposit(amount=10, currency="EUR")) for w in WALLETS])
    collect_replies(bootstrap, topics, ids)
    v2.stop()
    before = _written(topics, config)

    pending = []
    for data_dir in ("w1", "w2"):  # a rollback on the same volume, and a cold worker
        v1 = cluster.worker(data_dir, app=V1)
        pending += produce(bootstrap, topics, [("w-0", Deposit(amount=1))])
        assert v1.proc is not None
        assert v1.proc.wait(120) == EXIT_CONFIGURATION, v1.log_tail()
        partition = partition_for("w-0", topics.partitions)
        refusal = (
            rf"refusing to run {re.escape(topics.commands)}\[{partition}\]: "
            r".*schema version 2, newer than this code's 1"
        )
        log = v1.log_path.read_text(errors="replace")
        assert re.search(refusal, log), log[-3000:]
        assert _written(topics, config) == before  # nothing written

    again = cluster.worker("w1")  # version 2 again: the refused commands were not lost
    again.wait_ready(90)
    replies = collect_replies(bootstrap, topics, pending)
    assert sorted(r.accepted.revision for c in pending for r in replies[c]) == [2, 3]  # each once
    expected = Wallet(balance_cents=10 + 1 + 1, currency="EUR", deposits=3)
    checked = verify(wallet_v2.wallet, topics, config, wallet_v2.EVENT_ADAPTERS)
    assert checked.ok, checked.summary()
    assert checked.revisions["w-0"] == 3 and checked.states["w-0"] == expected


# 34 s: make chaos runs it; in make test its sibling (a v1 worker refusing v2 snapshots) and the
# pure check (tests/unit/test_schema_checks.py)
@pytest.mark.long
def test_a_tail_of_events_newer_than_the_code_is_refused(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster(V3, ["wallet"], partitions=2)
    topics = cluster.settings.topics("wallet")
    bootstrap = cluster.settings.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    every = {"KES_SNAPSHOT_EVERY": "10"}
    v3 = cluster.worker("w1", **every)
    v3.wait_ready()
    for _ in range(12):  # the changelog snapshot at 10, two events of version 3 in the tail
        ids = produce(bootstrap, topics, [(w, Deposit(amount=1)) for w in WALLETS[:2]])
        collect_replies(bootstrap, topics, ids)
    v3.kill()
    before = _written(topics, config)

    v2 = cluster.worker("w2", app=V2, **every)  # cold: changelog, then the tail fold
    assert v2.proc is not None
    assert v2.proc.wait(120) == EXIT_CONFIGURATION, v2.log_tail()
    log = v2.log_path.read_text(errors="replace")
    found = re.search(
        rf"refusing to run {re.escape(topics.commands)}\[\d\]: the event at "
        rf"{re.escape(topics.events)}\[\d\]@\d+ .*DepositedV2 is at schema version 3, newer than "
        r"this code's 2",
        log,
    )
    assert found, log[-3000:]
    assert _written(topics, config) == before

    checked = verify(wallet_v2.wallet, topics, config, wallet_v2.EVENT_ADAPTERS)
    assert not checked.ok
    assert all("schema version 3, newer than this code's 2" in v for v in checked.violations)
    assert len(checked.violations) == 2  # one per entity, not one per event

    # a rebuild by hand with the same code refuses as the worker did: nothing is written to a
    # partition holding a newer event (a partition without one, rebuilt before, is rebuilt)
    held = {partition_for(w, 2) for w in WALLETS[:2]}
    snapshots = Counter(r.partition for r in read_records(topics.snapshots, 2, config))
    done = cluster.kes("snapshots", "rebuild", V2, "wallet", "--wait", "30")
    assert done.returncode == EXIT_CONFIGURATION, done.stdout + done.stderr
    assert "refused: " in done.stdout and "newer than this code's 2" in done.stdout, done.stdout
    after = Counter(r.partition for r in read_records(topics.snapshots, 2, config))
    assert {p: after[p] for p in held} == {p: snapshots[p] for p in held}
    written = _written(topics, config)
    assert {t: written[t] for t in (topics.events, topics.replies)} == {
        t: before[t] for t in (topics.events, topics.replies)
    }
