"""`kes topics migrate` for durable state: the bank's `profile` grows from 12 to 24 partitions.

Retention is played by deleting the first half of six events partitions (`delete_records`), so
some profiles' early changes are gone and some profiles live in the changelog alone. A first
migration run is interrupted mid-transaction, a second completes it; then the new set holds every
snapshot (revision and state), every retained change once (its key, in revision order, on its
profile's new partition), its events topic is declared delete with the retention, and `kes verify`
passes there. A worker on the new set continues every profile at its revision + 1, and retries of
old commands, one whose change was deleted and one whose change was kept, are answered their
original outcome: nothing lost, nothing applied twice, `kes verify --commands` passes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from kes.examples.bank.profiles import profile
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_event, encode_command, new_command, parse_event_key, unpack
from kes.schemas.kes.v1.envelopes_pb2 import CommandEnvelope
from kes.streams.config.durablestate import layout_of
from kes.streams.core.decision import Accepted
from kes.streams.kafka.readback import read_records
from kes.streams.operations import migrator
from kes.streams.operations.migration import MIGRATED_FROM_HEADER
from kes.streams.operations.migrator import Migration, migrate
from kes.streams.operations.verify import verify
from kes.topology.admin import plan
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster
from tests.integration.test_durable_state import expected, profile_commands

APP = "kes.examples.bank.profiles"


def _delete_first_half(topics: AggregateTopics, partitions: range, config: dict[str, Any]) -> None:
    """Retention, played: the oldest half of each of `partitions` of the events topic is gone."""
    reader = Consumer({**config, "group.id": "kes-test-watermarks"})
    try:
        cut = [
            TopicPartition(topics.events, p, reader.get_watermark_offsets(
                TopicPartition(topics.events, p), timeout=10)[1] // 2)
            for p in partitions
        ]  # fmt: skip
    finally:
        reader.close()
    admin = AdminClient(config)  # kept while its futures are served
    for future in admin.delete_records(cut).values():
        future.result(30)


def _retained(topics: AggregateTopics, config: dict[str, Any]) -> dict[str, list[int]]:
    kept: dict[str, list[int]] = defaultdict(list)
    for record in read_records(topics.events, topics.partitions, config):
        entity_id, revision = parse_event_key(record.key or b"")
        kept[entity_id].append(revision)
    return dict(kept)


def _send(
    topics: AggregateTopics, envelopes: list[CommandEnvelope], config: dict[str, Any]
) -> None:
    producer = Producer({**config, "enable.idempotence": True})
    for env in envelopes:
        value, headers = encode_command(env)
        partition = partition_for(env.entity_id, topics.partitions)
        producer.produce(topics.commands, value, env.entity_id.encode(), partition, headers=headers)
    assert producer.flush(30) == 0


# 31 s: make chaos runs it; in make test the rules are unit-tested (tests/unit/test_migration.py)
# and tests/integration/test_migrate.py migrates an event-sourced aggregate
@pytest.mark.long
def test_durable_state_grows_12_to_24_partitions_with_expired_changes(
    app_cluster: Callable[..., AppCluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = app_cluster(APP, ["profile"], partitions=12)
    old = layout_of(cluster.settings, profile)
    bootstrap = cluster.settings.bootstrap_servers
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    commands = profile_commands(1_500, customers=300, seed=23)
    worker = cluster.worker("w1")
    worker.wait_ready()
    ids = produce(bootstrap, old, commands)
    replies = collect_replies(bootstrap, old, ids, timeout=180)
    worker.stop()
    decisions, states = expected(commands)
    for command_id, decision in zip(ids, decisions, strict=True):
        [reply] = replies[command_id]
        assert (reply.WhichOneof("outcome") == "accepted") == (decision is not None), reply

    _delete_first_half(old, range(6), config)
    retained = _retained(old, config)
    profiles = {e for e, h in states.items() if h}
    assert profiles - retained.keys(), "some profiles live in the changelog alone"
    assert any(r[0] > 1 for r in retained.values()), "some lost their early changes"
    before = verify(profile, old, config)
    assert before.ok, before.summary()
    assert before.revisions == {e: len(h) for e, h in states.items() if h}

    # Retries to send on the new set: a command whose change was deleted, one whose was kept.
    applied = [
        (command_id, entity_id, decision)
        for (entity_id, _), command_id, decision in zip(commands, ids, decisions, strict=True)
        if isinstance(decision, Accepted)
    ]
    gone = next(a for a in applied if a[2].revision not in retained.get(a[1], []))
    kept = next(a for a in applied if a[2].revision in retained.get(a[1], []))

    new_prefix = cluster.settings.topic_prefix + "v2-"
    target = replace(old, prefix=new_prefix, partitions=24)
    sent = 0
    real_send = migrator._Writer.send

    def crashing_send(self: migrator._Writer, record: Any, landed: Any = None) -> None:
        nonlocal sent
        sent += 1
        if sent > 150:  # 2 transactions of 60 committed, 30 changes left in an open one
            raise RuntimeError("simulated crash")
        real_send(self, record, landed)

    monkeypatch.setattr(migrator._Writer, "send", crashing_send)
    with pytest.raises(RuntimeError, match="simulated crash"):
        migrate(Migration(old, target, chunk=60, wait=30), config)
    monkeypatch.undo()
    done = cluster.kes(
        "topics", "migrate", APP, "profile", "--partitions", "24",
        "--to-prefix", new_prefix,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    events = sum(len(r) for r in retained.values())
    assert f"{events} retained changes (120 copied by an earlier run)" in done.stdout, done.stdout

    after = verify(profile, target, config)
    assert after.ok, after.summary()
    assert (after.states, after.revisions) == (before.states, before.revisions)
    [events_check] = [c for c in plan(target, config).checks if c.spec.name == target.events]
    assert events_check.actual is not None and events_check.actual.partitions == 24
    assert events_check.actual.config["cleanup.policy"] == "delete"
    assert events_check.actual.config["retention.ms"] == str(7 * 24 * 3600 * 1000)
    moved: dict[str, list[int]] = defaultdict(list)
    keys: set[bytes] = set()
    for record in read_records(target.events, 24, config):
        assert record.key not in keys  # each change once
        keys.add(record.key or b"")
        entity_id, revision = parse_event_key(record.key or b"")
        assert record.partition == partition_for(entity_id, 24)
        moved[entity_id].append(revision)  # in log order: revision order per profile
        env = decode_event(record.value or b"")
        assert unpack(env.payload) == states[entity_id][revision - 1]
        assert MIGRATED_FROM_HEADER in dict(record.headers)
    assert moved == retained

    grown = AppCluster(APP, replace(cluster.settings, partitions=24, topic_prefix=new_prefix),
                       tmp_path / "new")  # fmt: skip
    grown.workdir.mkdir()
    try:
        grown.worker("n1").wait_ready()
        more = [(e, bank_pb2.ChangeEmail(email=f"{e}.moved@example.com")) for e in sorted(profiles)]
        more_ids = produce(bootstrap, target, more)
        retries = []
        for command_id, entity_id, _ in (gone, kept):
            env = new_command(entity_id, bank_pb2.ChangeEmail(email="x@y.z"), aggregate="profile",
                              reply_wanted=True)  # fmt: skip
            env.command_id = command_id
            retries.append(env)
        _send(target, retries, config)
        answers = collect_replies(bootstrap, target, [*more_ids, gone[0], kept[0]])
        for (entity_id, _), command_id in zip(more, more_ids, strict=True):
            [reply] = answers[command_id]
            assert reply.accepted.revision == before.revisions[entity_id] + 1, (entity_id, reply)
        for command_id, entity_id, decision in (gone, kept):
            [reply] = answers[command_id]
            assert reply.replay and reply.accepted.revision == decision.revision, reply
            assert reply.accepted.partition == partition_for(entity_id, 24)
        assert not answers[gone[0]].pop().accepted.event_offsets  # its change expired
        assert len(answers[kept[0]][0].accepted.event_offsets) == 1
        checked = grown.kes("verify", APP, "profile", "--commands")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        final = verify(profile, target, config)
        assert final.ok, final.summary()
        assert final.revisions == {e: r + 1 for e, r in before.revisions.items()}
        assert final.events == events + len(more)  # nothing lost, nothing applied twice
    finally:
        grown.close()
