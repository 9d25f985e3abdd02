"""The engine against a real broker: every command exactly one outcome, no gap, no repeat."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Producer

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_dead_letter, encode_command, new_command, unpack
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode, Reply
from kes.streams.kafka.readback import read_topic
from kes.streams.operations.verify import verify
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.workers import AppCluster


def assert_invariants(cluster: AppCluster, replies: dict[str, list[Reply]], ids: list[str]) -> None:
    """Exactly one outcome per command; the log verifies; last replies agree with the fold."""
    settings = cluster.settings
    topics = settings.topics("account")
    multiple = {cid: len(r) for cid, r in replies.items() if len(r) != 1}
    assert not multiple, f"commands with more than one outcome: {list(multiple.items())[:5]}"
    assert set(ids) <= replies.keys()
    checked = verify(account, topics, {"bootstrap.servers": settings.bootstrap_servers})
    assert checked.ok, checked.summary()
    last: dict[str, Reply] = {}
    for cid in ids:
        reply = replies[cid][0]
        if reply.WhichOneof("outcome") == "accepted":
            last[reply.entity_id] = reply
    accepted = sum(1 for cid in ids if replies[cid][0].WhichOneof("outcome") == "accepted")
    assert checked.events == accepted  # the bank emits one event per accepted command
    for entity_id, reply in last.items():
        assert reply.accepted.revision == checked.revisions[entity_id]
        assert unpack(reply.accepted.state) == checked.states[entity_id]


def test_ten_thousand_commands_through_one_worker(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    cluster.worker("w1").wait_ready()
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    ids = produce(bootstrap, topics, bank_commands(10_000, accounts=100))
    replies = collect_replies(bootstrap, topics, ids)
    assert_invariants(cluster, replies, ids)
    outcomes = {r[0].WhichOneof("outcome") for r in replies.values()}
    assert outcomes == {"accepted", "rejected"}  # some debits bounce: both paths ran


def test_sigkill_three_times_loses_nothing_and_applies_nothing_twice(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    commands = bank_commands(10_000, accounts=100, seed=11)
    worker = cluster.worker("w1")
    worker.wait_ready()
    ids: list[str] = []
    for chunk in range(4):
        ids += produce(bootstrap, topics, commands[chunk * 2500 : (chunk + 1) * 2500])
        if chunk < 3:
            time.sleep(0.4)  # mid-batch, with transactions open
            worker.kill()
            worker.start().wait_ready(90)
    replies = collect_replies(bootstrap, topics, ids, timeout=180)
    assert_invariants(cluster, replies, ids)


def test_a_second_worker_takes_partitions_mid_run(app_cluster: Callable[..., AppCluster]) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    commands = bank_commands(10_000, accounts=100, seed=5)
    first = cluster.worker("w1")
    first.wait_ready()
    ids = produce(bootstrap, topics, commands[:5000])
    second = cluster.worker("w2")
    ids += produce(bootstrap, topics, commands[5000:])
    body = second.wait_ready(90)
    assert body["partitions"], "the second worker should own partitions after the rebalance"
    replies = collect_replies(bootstrap, topics, ids, timeout=180)
    assert_invariants(cluster, replies, ids)
    owned_first = set(first.wait_ready()["partitions"])
    assert owned_first and owned_first.isdisjoint(body["partitions"])


def test_each_bad_command_has_its_documented_outcome_and_the_partition_flows(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("tests.apps.faulty", ["account"], partitions=4)
    cluster.worker("w1").wait_ready()
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    producer = Producer({"bootstrap.servers": bootstrap})

    def send(entity: str, msg: object, partition: int | None = None, **kw: object) -> str:
        env = new_command(entity, msg, aggregate="account", reply_wanted=True, **kw)  # type: ignore[arg-type]
        value, headers = encode_command(env)
        p = partition_for(entity, topics.partitions) if partition is None else partition
        producer.produce(topics.commands, value, entity.encode(), partition=p, headers=headers)
        return env.command_id

    acc = "acc-1"
    home = partition_for(acc, topics.partitions)
    opened = send(acc, bank_pb2.OpenAccount(owner="ann"), command_id="open-1")
    duplicate = send(acc, bank_pb2.OpenAccount(owner="ann"), command_id="open-1")
    conflict = send(acc, bank_pb2.OpenAccount(owner="x"), expected_revision=7)
    unknown = send(acc, bank_pb2.AccountOpened(owner="not a command"))
    boom = send("acc-2", bank_pb2.OpenAccount(owner="boom"))
    producer.produce(topics.commands, b"\x0a\xff\xff garbage", b"acc-1", partition=home)
    misrouted_entity = "acc-3"
    wrong = (partition_for(misrouted_entity, topics.partitions) + 1) % topics.partitions
    misrouted = send(misrouted_entity, bank_pb2.OpenAccount(owner="carl"), partition=wrong)
    after = send(acc, bank_pb2.OpenAccount(owner="again"))  # the partition still flows
    assert producer.flush(30) == 0

    assert opened == duplicate == "open-1"
    ids = [opened, conflict, unknown, boom, misrouted, after]
    replies = collect_replies(bootstrap, topics, ids)
    assert all(len(replies[c]) == 1 for c in ids if c != opened)
    # The same command id twice: applied once, the second answered with the first's outcome
    # (was: Rejected(DUPLICATE); the outcome store replays the original acceptance).
    first_open, second_open = replies[opened]
    assert first_open.accepted.revision == 1 and not first_open.replay
    assert second_open.replay
    assert second_open.accepted.revision == 1
    assert second_open.accepted.event_offsets == first_open.accepted.event_offsets
    first = {c: replies[c][0] for c in ids}
    assert first[conflict].rejected.code == RejectionCode.CONFLICT
    assert first[unknown].rejected.code == RejectionCode.UNKNOWN_COMMAND
    assert first[boom].rejected.code == RejectionCode.POISON
    assert first[misrouted].accepted.partition == partition_for(misrouted_entity, topics.partitions)
    assert first[after].accepted.revision == 2

    letters = [
        decode_dead_letter(v)
        for _, _, v in read_topic(topics.dlq, topics.partitions, {"bootstrap.servers": bootstrap})
    ]
    reasons = sorted(letter.reason for letter in letters)
    assert reasons == ["HANDLER_ERROR", "UNDECODABLE", "UNKNOWN_COMMAND"]
    garbage = next(letter for letter in letters if letter.reason == "UNDECODABLE")
    assert garbage.original_value == b"\x0a\xff\xff garbage" and garbage.partition == home

    events = list(read_topic(topics.events, topics.partitions, {"bootstrap.servers": bootstrap}))
    assert len(events) == 3  # open acc-1, open acc-3 (forwarded, applied once), acc-1 again


def test_sigterm_stops_cleanly_and_a_restart_goes_on(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    commands = bank_commands(4000, accounts=50, seed=13)
    worker = cluster.worker("w1")
    worker.wait_ready()
    ids = produce(bootstrap, topics, commands[:2000])
    time.sleep(0.3)
    worker.stop()
    assert worker.proc is not None and worker.proc.returncode == 0, worker.log_tail()
    ids += produce(bootstrap, topics, commands[2000:])
    worker.start().wait_ready(90)
    replies = collect_replies(bootstrap, topics, ids, timeout=120)
    assert_invariants(cluster, replies, ids)


def test_at_least_once_is_an_explicit_option_with_the_same_outcomes(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    cluster.worker("w1", KES_GUARANTEE="at_least_once").wait_ready()
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    ids = produce(bootstrap, topics, bank_commands(3000, accounts=60, seed=21))
    replies = collect_replies(bootstrap, topics, ids)
    assert_invariants(cluster, replies, ids)
