"""Every command retried once, at a random delay and across a worker SIGKILL, through real Kafka.

A retry (the same record again: same entity, same command id) arrives right after its command or
after up to 100 more commands on the same entity; half-way the worker is killed and a second
worker, with an empty data dir, takes the partitions over from the changelog. Every retry must be
answered its command's original outcome, marked as a replay, and nothing may be applied twice.
1,000 commands in the default run; `KES_RETRY_COMMANDS=10000` (as `make chaos` sets) for the
full run.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Callable

from confluent_kafka import Producer

from kes.examples.bank import account
from kes.schemas.codec import encode_command, new_command
from kes.streams.operations.outcomes import read_outcomes
from kes.streams.operations.verify import verify
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import bank_commands, collect_replies
from tests.fixtures.workers import AppCluster


def _plan(n: int, rng: random.Random) -> list[tuple[str, bytes, list[tuple[str, bytes]], str]]:
    """(entity, value, headers, command id) to send in order: each command, and its retry
    after 0 to 100 later commands on the same entity (or at the end)."""
    sends: list[tuple[str, bytes, list[tuple[str, bytes]], str]] = []
    waiting: dict[str, list[tuple[int, tuple[str, bytes, list[tuple[str, bytes]], str]]]] = (
        defaultdict(list)
    )
    for entity, message in bank_commands(n, accounts=50, seed=29):
        env = new_command(entity, message, aggregate="account", reply_wanted=True)
        value, headers = encode_command(env)
        record = (entity, value, headers, env.command_id)
        due = []
        for item in waiting[entity]:
            if item[0] <= 0:
                due.append(item[1])
        waiting[entity] = [(k - 1, r) for k, r in waiting[entity] if k > 0]
        sends.extend(due)
        sends.append(record)
        waiting[entity].append((rng.randrange(101), record))
        if rng.random() < 0.1:  # an immediate retry: often in the same batch as its command
            sends.append(record)
            waiting[entity].pop()
    sends.extend(r for pending in waiting.values() for _, r in pending)
    return sends


def test_every_retry_gets_the_original_outcome_across_a_worker_kill(
    app_cluster: Callable[..., AppCluster],
) -> None:
    n = int(os.environ.get("KES_RETRY_COMMANDS", "1000"))
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    first = cluster.worker("w1")
    first.wait_ready()
    sends = _plan(n, random.Random(29))
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    half = len(sends) // 2
    for i, (entity, value, headers, _) in enumerate(sends):
        if i == half:
            assert producer.flush(60) == 0
            first.kill()  # while it works through the first half
            cluster.worker("w2").wait_ready()  # an empty data dir: outcomes come from Kafka
        partition = partition_for(entity, topics.partitions)
        producer.produce(
            topics.commands, value, entity.encode(), partition=partition, headers=headers
        )
        producer.poll(0)
    assert producer.flush(60) == 0

    ids = {command_id for *_, command_id in sends}
    assert len(ids) == n
    replies = collect_replies(bootstrap, topics, list(ids), timeout=240, each=2)
    for command_id in ids:
        answers = replies[command_id]
        assert len(answers) == 2, answers
        original, retry = sorted(answers, key=lambda r: r.replay)
        assert (original.replay, retry.replay) == (False, True), answers
        assert original.WhichOneof("outcome") == retry.WhichOneof("outcome"), answers
        if original.HasField("accepted"):
            assert retry.accepted.revision == original.accepted.revision
            assert retry.accepted.event_offsets == original.accepted.event_offsets
        else:
            assert retry.rejected.code == original.rejected.code
            assert retry.rejected.message == original.rejected.message
    config = {"bootstrap.servers": bootstrap}
    checked = verify(account, topics, config)
    assert checked.ok, checked.summary()
    accepted = sum(r[0].HasField("accepted") for r in replies.values())
    assert checked.events == accepted  # one event per accepted bank command: none twice
    outcomes = read_outcomes(topics, "account", config)
    assert outcomes.ok and outcomes.pending == 0, outcomes.summary()
