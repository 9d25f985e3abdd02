"""`kes topics migrate`: an aggregate grows from 12 to 24 partitions on a real broker.

Without load: every entity's events and state are on the new set (a first run is interrupted
mid-transaction and a second one completes it), `kes verify` passes there, a worker on the new
set continues every entity's revisions and answers a retry of an old command from the migrated
outcome. Under load: commands flow, pause, migrate, resume on the new set: nothing lost, and
the balances are the fold of every command's outcome. The second test runs when
`KES_MIGRATE_COMMANDS` says how many commands it sends (`make chaos` sends 5,000; 20,000 for a
longer run): a worker, the migration and a second worker take half a minute even for a few
hundred, and the first test covers the migration itself in every `make test`.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from google.protobuf.message import Message

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_event, encode_command, new_command, parse_event_key
from kes.schemas.kes.v1.envelopes_pb2 import CommandEnvelope, Reply
from kes.streams.client.history import find_snapshot, read_history
from kes.streams.kafka.readback import read_records
from kes.streams.operations import migrator
from kes.streams.operations.migration import MIGRATED_FROM_HEADER
from kes.streams.operations.migrator import Migration, migrate
from kes.streams.operations.verify import Verification, verify
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.workers import AppCluster


def _migrate(
    cluster: AppCluster, prefix: str, wait: float = 30
) -> subprocess.CompletedProcess[str]:
    return cluster.kes(
        "topics", "migrate", "kes.examples.bank", "account",
        "--partitions", "24", "--to-prefix", prefix, "--wait", str(wait),
    )  # fmt: skip


def _new_set(cluster: AppCluster, prefix: str, workdir: Path) -> AppCluster:
    workdir.mkdir()
    settings = replace(cluster.settings, partitions=24, topic_prefix=prefix)
    return AppCluster(cluster.app, settings, workdir)


def _send(bootstrap: str, topics: AggregateTopics, envelopes: Sequence[CommandEnvelope]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for env in envelopes:
        value, headers = encode_command(env)
        partition = partition_for(env.entity_id, topics.partitions)
        producer.produce(topics.commands, value, env.entity_id.encode(), partition, headers=headers)
    assert producer.flush(30) == 0


def _check_new_events(
    topics: AggregateTopics, config: dict[str, Any], before: Verification
) -> None:
    """Every committed event once, on its entity's new partition, in revision order there."""
    records = list(read_records(topics.events, topics.partitions, config))
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys)) == before.events
    last: dict[str, int] = defaultdict(int)
    for record in records:
        entity_id, revision = parse_event_key(record.key or b"")
        assert record.partition == partition_for(entity_id, 24)
        assert revision == last[entity_id] + 1  # in revision order on the log
        last[entity_id] = revision
        assert decode_event(record.value).revision == revision  # the value is the original
        assert dict(record.headers)[MIGRATED_FROM_HEADER].startswith(b"t-")


def test_grow_12_to_24_partitions_resumes_after_a_crash_and_a_worker_goes_on(
    app_cluster: Callable[..., AppCluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=12)
    old = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    worker = cluster.worker("w1")
    worker.wait_ready()
    collect_replies(bootstrap, old, produce(bootstrap, old, bank_commands(300, accounts=40)))
    retried = new_command(
        "acc-0003", bank_pb2.CreditAccount(amount=7), aggregate="account", reply_wanted=True
    )
    _send(bootstrap, old, [retried])
    original = collect_replies(bootstrap, old, [retried.command_id])[retried.command_id][0]
    worker.stop()

    late = produce(bootstrap, old, [("acc-0001", bank_pb2.CreditAccount(amount=1))])
    refused = _migrate(cluster, "never-", wait=15)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "holds commands no worker has applied (partition" in refused.stderr
    worker = cluster.worker("w1")
    worker.wait_ready()
    collect_replies(bootstrap, old, late)
    worker.stop()
    before = verify(account, old, config)
    assert before.ok, before.summary()

    new_prefix = cluster.settings.topic_prefix + "v2-"
    target = replace(old, prefix=new_prefix, partitions=24)
    sent = 0
    real_send = migrator._Writer.send

    def crashing_send(self: migrator._Writer, record: Any, landed: Any = None) -> None:
        nonlocal sent
        sent += 1
        if sent > 150:  # 2 transactions of 60 committed, 30 events left in an open one
            raise RuntimeError("simulated crash")
        real_send(self, record, landed)

    monkeypatch.setattr(migrator._Writer, "send", crashing_send)
    with pytest.raises(RuntimeError, match="simulated crash"):
        migrate(Migration(old, target, chunk=60, wait=30), config)
    monkeypatch.undo()

    done = _migrate(cluster, new_prefix)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{before.events} events (120 copied by an earlier run)" in done.stdout, done.stdout
    assert f"KES_TOPIC_PREFIX={new_prefix} KES_PARTITIONS=24 kes worker" in done.stdout
    after = verify(account, target, config)
    assert after.ok, after.summary()
    assert (after.states, after.revisions, after.events) == (
        before.states, before.revisions, before.events,
    )  # fmt: skip
    _check_new_events(target, config, before)
    for entity_id in ("acc-0000", "acc-0017", "acc-0039"):
        snapshot = find_snapshot(target, entity_id, config)
        assert snapshot is not None and snapshot.source_offset == -1
        first = [
            r.offset
            for r in read_records(target.events, 24, config)
            if r.key == b"%s@%020d" % (entity_id.encode(), 1)
        ]
        assert snapshot.first_event_offset == first[0]
        history = list(read_history(target, bootstrap, entity_id))
        assert [e.revision for e in history] == list(range(1, before.revisions[entity_id] + 1))
    again = _migrate(cluster, new_prefix)
    assert again.returncode == 0 and "completed before" in again.stdout, again.stdout

    grown = _new_set(cluster, new_prefix, tmp_path / "new")
    try:
        grown.worker("w1").wait_ready()
        busy = _migrate(cluster, cluster.settings.topic_prefix + "v3-", wait=0)
        assert busy.returncode == 1 and "member(s)" in busy.stderr, busy.stderr
        more = [(f"acc-{i:04d}", bank_pb2.CreditAccount(amount=1)) for i in range(40)]
        ids = produce(bootstrap, target, more)
        _send(bootstrap, target, [retried])
        replies = collect_replies(bootstrap, target, [*ids, retried.command_id])
        for (entity_id, _), command_id in zip(more, ids, strict=True):
            reply = replies[command_id][0]
            assert reply.accepted.revision == before.revisions[entity_id] + 1, entity_id
        replay = replies[retried.command_id][0]
        assert replay.replay and replay.accepted.revision == original.accepted.revision
        assert replay.accepted.partition == partition_for("acc-0003", 24)
        key = b"acc-0003@%020d" % original.accepted.revision
        moved = [r.offset for r in read_records(target.events, 24, config) if r.key == key]
        assert list(replay.accepted.event_offsets) == moved
        final = verify(account, target, config)
        assert final.ok, final.summary()
        assert final.events == before.events + len(more)
        keys = [r.key for r in read_records(target.events, 24, config)]
        assert len(keys) == len(set(keys))  # no key written twice
        checked = grown.kes("verify", "kes.examples.bank", "account", "--commands")
        assert checked.returncode == 0, checked.stdout  # the retry: its migrated revision
        assert "41 command records (0 pending): 41 replied" in checked.stdout, checked.stdout
    finally:
        grown.close()


def _flow(
    bootstrap: str, topics: AggregateTopics, commands: Sequence[tuple[str, Message]]
) -> list[str]:
    """Send commands in small slices while the worker applies them."""
    ids: list[str] = []
    for start in range(0, len(commands), 25):
        ids += produce(bootstrap, topics, commands[start : start + 25])
        time.sleep(0.05)
    return ids


def _fold_of_outcomes(
    commands: Sequence[tuple[str, Message]], ids: Sequence[str], replies: dict[str, list[Reply]]
) -> dict[str, int]:
    """Each account's balance from the accepted commands' amounts (rejected ones change nothing)."""
    balances: dict[str, int] = defaultdict(int)
    for (entity_id, msg), command_id in zip(commands, ids, strict=True):
        (reply,) = replies[command_id]
        if reply.WhichOneof("outcome") != "accepted":
            continue
        if isinstance(msg, bank_pb2.OpenAccount):
            balances[entity_id] += msg.opening_balance
        elif isinstance(msg, bank_pb2.CreditAccount):
            balances[entity_id] += msg.amount
        else:
            balances[entity_id] -= msg.amount  # type: ignore[attr-defined]
    return dict(balances)


def _balance(state: Message) -> int:
    assert isinstance(state, bank_pb2.Account)
    return state.balance


@pytest.mark.skipif(
    not os.environ.get("KES_MIGRATE_COMMANDS"),
    reason="half a minute: KES_MIGRATE_COMMANDS=N (make chaos) runs it",
)
def test_migrate_under_load_with_a_pause_for_the_cut_over(
    app_cluster: Callable[..., AppCluster], tmp_path: Path
) -> None:
    total = int(os.environ["KES_MIGRATE_COMMANDS"])
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=12)
    old = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    commands = bank_commands(total, accounts=max(50, total // 40), seed=11)
    half = len(commands) // 2
    worker = cluster.worker("w1")
    worker.wait_ready()
    ids = _flow(bootstrap, old, commands[:half])  # commands flowing ...
    replies = collect_replies(bootstrap, old, ids, timeout=300)  # ... pause: every one answered
    worker.stop()

    new_prefix = cluster.settings.topic_prefix + "v2-"
    began = time.monotonic()
    done = _migrate(cluster, new_prefix)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"migrated {half} commands' events in {time.monotonic() - began:.1f}s: {done.stdout}")
    grown = _new_set(cluster, new_prefix, tmp_path / "new")
    target = grown.settings.topics("account")
    try:
        grown.worker("w1").wait_ready()
        rest = _flow(bootstrap, target, commands[half:])  # resume on the new set
        replies.update(collect_replies(bootstrap, target, rest, timeout=300))
        exact = grown.kes("verify", "kes.examples.bank", "account", "--commands")
        assert exact.returncode == 0, exact.stdout  # each command on the new set: one outcome
    finally:
        grown.close()
    ids += rest
    checked = verify(account, target, config)
    assert checked.ok, checked.summary()
    accepted = sum(r[0].WhichOneof("outcome") == "accepted" for r in replies.values())
    assert checked.events == accepted  # nothing lost, nothing applied twice
    balances = {e: _balance(state) for e, state in checked.states.items()}
    assert balances == _fold_of_outcomes(commands, ids, replies)


@pytest.mark.long  # make chaos runs it (CI time)
def test_a_set_with_an_interval_is_migrated_once_its_snapshots_are_rebuilt(
    app_cluster: Callable[..., AppCluster], tmp_path: Path
) -> None:
    """KES_SNAPSHOT_EVERY=10 leaves snapshots behind their events: the migration copies
    snapshots and does not fold, so it refuses and says to rebuild them; after `kes snapshots
    rebuild` it moves everything, the new set's checkpoints name no low-water, and a worker there
    with the same interval goes on at every entity's revision + 1."""
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    old = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    worker = cluster.worker("w1", KES_SNAPSHOT_EVERY="10")
    worker.wait_ready()
    collect_replies(bootstrap, old, produce(bootstrap, old, bank_commands(400, accounts=30)))
    worker.stop()
    before = verify(account, old, config)
    assert before.ok, before.summary()
    new_prefix = cluster.settings.topic_prefix + "v2-"
    refused = _migrate(cluster, new_prefix, wait=15)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "KES_SNAPSHOT_EVERY > 1" in refused.stderr, refused.stderr
    assert "kes snapshots rebuild" in refused.stderr
    rebuilt = cluster.kes("snapshots", "rebuild", "kes.examples.bank", "account", "--wait", "15")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    done = _migrate(cluster, new_prefix)
    assert done.returncode == 0, done.stdout + done.stderr
    new = _new_set(cluster, new_prefix, tmp_path / "new")
    target = new.settings.topics("account")
    after = verify(account, target, config)
    assert after.ok, after.summary()
    assert after.revisions == before.revisions and after.states == before.states
    checkpoints = [r for r in read_records(target.snapshots, 24, config) if r.key == b""]
    assert len(checkpoints) == 24 and not any(r.headers for r in checkpoints)
    new.worker("n1", KES_SNAPSHOT_EVERY="10").wait_ready()
    envs = [
        new_command(e, bank_pb2.CreditAccount(amount=1), aggregate="account", reply_wanted=True)
        for e in sorted(before.revisions)
    ]
    _send(bootstrap, target, envs)
    replies = collect_replies(bootstrap, target, [e.command_id for e in envs])
    for env in envs:
        [reply] = replies[env.command_id]
        assert reply.accepted.revision == before.revisions[env.entity_id] + 1, reply
