"""A snapshot interval of 10 through real Kafka: a SIGKILLed worker restarted on its data dir
(warm), another started on an empty one (cold), and the first restarted again beside it (some
partitions move back to a store behind the changelog) all fold the unsnapshotted tail, so every
entity goes on at its last revision + 1; `verify` passes, replies equal the fold, and the
changelog holds far fewer snapshots than there are events."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable

from confluent_kafka import Producer

from kes.examples.bank import account
from kes.streams.cycle.records import CHECKPOINT_KEY, decode_checkpoint, encode_checkpoint
from kes.streams.cycle.snapshotpolicy import EVENTS_FROM_HEADER
from kes.streams.kafka.readback import read_records
from kes.streams.operations.verify import verify
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.workers import AppCluster, WorkerProcess
from tests.integration.test_engine import assert_invariants

EVERY = {"KES_SNAPSHOT_EVERY": "10"}


def _folded(worker: WorkerProcess) -> list[int]:
    """Events folded per recovered partition, as the worker's log says."""
    text = worker.log_path.read_text(errors="replace")
    return [int(n) for n in re.findall(r"folded (\d+) of \d+ events from offset", text)]


def test_an_interval_of_ten_survives_sigkill_warm_and_cold_restores(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    commands = bank_commands(8_000, accounts=200, seed=23)
    worker = cluster.worker("w1", **EVERY)
    worker.wait_ready()
    ids = produce(bootstrap, topics, commands[:2_000])
    time.sleep(0.4)  # mid-load, transactions open
    worker.kill()
    worker.start().wait_ready(90)  # warm: its own local store
    ids += produce(bootstrap, topics, commands[2_000:4_000])
    time.sleep(0.4)
    worker.kill()
    cold = cluster.worker("w2", **EVERY)  # cold: an empty data dir
    cold.wait_ready(120)
    ids += produce(bootstrap, topics, commands[4_000:6_000])
    warm_folds = len(_folded(worker))
    # Back beside it (its restart also aborts the transaction its kill left open): partitions
    # move to a store that is behind the changelog, while commands flow.
    worker.start().wait_ready(120)
    ids += produce(bootstrap, topics, commands[6_000:])
    replies = collect_replies(bootstrap, topics, ids, timeout=240)
    assert_invariants(cluster, replies, ids)  # verify, one outcome each, replies == the fold

    assert warm_folds, "the warm restart did not read the tail"
    assert sum(_folded(cold)) > 0, "the cold restore folded no event"
    assert len(_folded(worker)) > warm_folds, "no partition moved back"
    checked = verify(account, topics, config)
    for entity_id in list(checked.states)[:40]:  # the worker's store holds the fold
        url = f"http://127.0.0.1:{cold.web_port}/entities/account/{entity_id}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["revision"] == checked.revisions[entity_id], body
    snapshots = sum(
        1
        for r in read_records(topics.snapshots, topics.partitions, config)
        if r.key and r.key != CHECKPOINT_KEY and not r.key.startswith(b"\x00") and r.value
    )
    assert snapshots < 0.3 * checked.events, (snapshots, checked.events)


def test_verify_refuses_a_low_water_past_an_unsnapshotted_event(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=1)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    cluster.worker("w1", **EVERY).wait_ready()
    ids = produce(bootstrap, topics, bank_commands(300, accounts=20, seed=3))
    collect_replies(bootstrap, topics, ids)
    checked = verify(account, topics, config)
    assert checked.ok, checked.summary()
    last = [r for r in read_records(topics.snapshots, 1, config) if r.key == CHECKPOINT_KEY][-1]
    assert dict(last.headers).get(EVENTS_FROM_HEADER), "no entity had a tail"
    # A checkpoint naming a low-water at the events' end: the tails are now out of reach.
    cluster.close()
    next_command, group = decode_checkpoint(last.value or b"")
    producer = Producer(config)
    producer.produce(
        topics.snapshots,
        encode_checkpoint(next_command, group),
        CHECKPOINT_KEY,
        partition=0,
        headers=[(EVENTS_FROM_HEADER, str(checked.events + 1000).encode())],
    )
    assert producer.flush(30) == 0
    broken = verify(account, topics, config)
    assert not broken.ok
    assert any("differs from the fold" in v or "no snapshot" in v for v in broken.violations)
