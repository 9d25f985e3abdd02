"""Schema evolution through real Kafka: a worker running the wallet's version 1 writes v1 events
and v1 snapshots; a worker running version 2 on the same topics goes on from them. Its replies
show migrated states, its events say `schema-version: 2` (whatever a command's metadata says),
`kes verify` folds v1 and v2 events through the adapters against migrated snapshots, and
`kes snapshots rebuild` refolds the same states; with a snapshot interval the tail fold of a
cold worker upcasts v1 events onto a migrated v1 snapshot."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from kes.schemas.codec import decode_event, decode_snapshot, encode_command, new_command, unpack
from kes.schemas.errors import ConfigurationError
from kes.schemas.evolution.v1.evolution_pb2 import Deposit, Wallet
from kes.streams.cli import main
from kes.streams.client.client import state_of
from kes.streams.core.adapters import VERSION_KEY
from kes.streams.cycle.records import CHECKPOINT_KEY
from kes.streams.kafka.readback import read_records
from kes.streams.operations.verify import verify
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.apps import wallet_v2
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster

V1, V2 = "tests.apps.wallet_v1", "tests.apps.wallet_v2"
WALLETS = [f"w-{i}" for i in range(6)]


def _forged(bootstrap: str, topics: AggregateTopics, entity_id: str, amount: int) -> str:
    """A deposit whose metadata claims a schema version: kes must not copy it to the event."""
    env = new_command(
        entity_id,
        Deposit(amount=amount, currency="EUR"),
        aggregate=topics.name,
        reply_wanted=True,
        metadata={VERSION_KEY: "99", "tenant": "t-1"},
    )
    value, headers = encode_command(env)
    producer = Producer({"bootstrap.servers": bootstrap})
    partition = partition_for(entity_id, topics.partitions)
    producer.produce(
        topics.commands, value, entity_id.encode(), partition=partition, headers=headers
    )
    assert producer.flush(30) == 0
    return env.command_id


def _latest_snapshots(topics: AggregateTopics, config: dict[str, str]) -> dict[str, bytes]:
    latest: dict[str, bytes] = {}
    for r in read_records(topics.snapshots, topics.partitions, config):
        if r.key and r.key != CHECKPOINT_KEY and not r.key.startswith(b"\x00") and r.value:
            latest[r.key.decode()] = r.value
    return latest


def test_a_v2_worker_goes_on_from_a_v1_log(app_cluster: Callable[..., AppCluster]) -> None:
    cluster = app_cluster(V1, ["wallet"], partitions=2)
    topics = cluster.settings.topics("wallet")
    bootstrap = cluster.settings.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    v1 = cluster.worker("w1")
    v1.wait_ready()
    ids = produce(
        bootstrap, topics, [(w, Deposit(amount=n + 1)) for n in range(3) for w in WALLETS]
    )
    collect_replies(bootstrap, topics, ids)
    v1.stop()
    old = {k: decode_snapshot(v) for k, v in _latest_snapshots(topics, config).items()}
    assert {s.state_version for s in old.values()} == {0}  # unset: version 1
    assert {s.state.TypeName() for s in old.values()} == {"evolution.v1.WalletV1"}

    # Version 2 on the same data dir: its local store holds v1 snapshots too.
    v2 = cluster.worker("w1", app=V2)
    v2.wait_ready(90)
    touched = WALLETS[:4]  # w-4 and w-5 keep only v1 events and v1 snapshots
    ids = produce(bootstrap, topics, [(w, Deposit(amount=50, currency="EUR")) for w in touched])
    forged = _forged(bootstrap, topics, "w-0", 7)
    replies = collect_replies(bootstrap, topics, [*ids, forged])
    for wallet_id, command_id in zip(touched, ids, strict=True):
        state = state_of(replies[command_id][0], Wallet)
        assert state == Wallet(balance_cents=600 + 50, currency="EUR", deposits=4), wallet_id
    assert state_of(replies[forged][0], Wallet) == Wallet(
        balance_cents=657, currency="EUR", deposits=5
    )

    events = [decode_event(r.value) for r in read_records(topics.events, 2, config) if r.value]
    versions = {(e.event_type, e.metadata.get(VERSION_KEY)) for e in events}
    assert versions == {("evolution.v1.Deposited", None), ("evolution.v1.DepositedV2", "2")}
    forged_event = next(e for e in events if e.command_id == forged)
    assert dict(forged_event.metadata) == {VERSION_KEY: "2", "tenant": "t-1"}

    checked = verify(wallet_v2.wallet, topics, config, wallet_v2.EVENT_ADAPTERS)
    assert checked.ok, checked.summary()
    assert checked.states["w-5"] == Wallet(balance_cents=600, currency="EUR", deposits=3)
    assert decode_snapshot(_latest_snapshots(topics, config)["w-5"]).state_version == 0
    argv = ["verify", V2, "wallet", "-b", bootstrap, "--partitions", "2"]
    assert main([*argv, "--topic-prefix", cluster.settings.topic_prefix]) == 0
    with pytest.raises(ConfigurationError, match=r"no event handler for evolution\.v1\.Deposited"):
        verify(wallet_v2.wallet, topics, config)  # without the adapters, v1 events do not fold

    v2.stop()
    done = cluster.kes("snapshots", "rebuild", V2, "wallet", "--wait", "30")
    assert done.returncode == 0, done.stdout + done.stderr
    rebuilt = {k: decode_snapshot(v) for k, v in _latest_snapshots(topics, config).items()}
    assert {s.state_version for s in rebuilt.values()} == {2}
    assert {k: unpack(s.state) for k, s in rebuilt.items()} == checked.states
    again = verify(wallet_v2.wallet, topics, config, wallet_v2.EVENT_ADAPTERS)
    assert again.ok, again.summary()


# 35 s: make chaos runs it; its sibling in make test: a v2 worker going on from a v1 log
@pytest.mark.long
def test_the_tail_fold_upcasts_v1_events_onto_a_migrated_snapshot(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster(V1, ["wallet"], partitions=2)
    topics = cluster.settings.topics("wallet")
    bootstrap = cluster.settings.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    every = {"KES_SNAPSHOT_EVERY": "10"}
    v1 = cluster.worker("w1", **every)
    v1.wait_ready()
    for _ in range(13):  # one event per entity and batch: the changelog snapshot is at 10
        ids = produce(bootstrap, topics, [(w, Deposit(amount=1)) for w in WALLETS[:3]])
        collect_replies(bootstrap, topics, ids)
    v1.kill()  # as in a crash: the tails stay unsnapshotted
    old = {k: decode_snapshot(v) for k, v in _latest_snapshots(topics, config).items()}
    assert {k: s.revision for k, s in old.items()} == {w: 10 for w in WALLETS[:3]}

    cold = cluster.worker("w2", app=V2, **every)  # an empty data dir: changelog + tail fold
    cold.wait_ready(90)
    log = cold.log_path.read_text(errors="replace")
    assert sum(int(n) for n in re.findall(r"folded (\d+) of \d+ events from offset", log)) == 9
    ids = produce(bootstrap, topics, [(w, Deposit(amount=5)) for w in WALLETS[:3]])
    replies = collect_replies(bootstrap, topics, ids)
    for command_id in ids:
        assert replies[command_id][0].accepted.revision == 14
        state = state_of(replies[command_id][0], Wallet)
        assert state == Wallet(balance_cents=1305, currency="EUR", deposits=14)
    checked = verify(wallet_v2.wallet, topics, config, wallet_v2.EVENT_ADAPTERS)
    assert checked.ok, checked.summary()
