"""Commands from a transactional producer: only committed ones are ever applied.

The worker reads its commands topics read_committed. A producer (another service, or a kes
worker forwarding a misrouted command) whose transaction aborts, or dies with it open, must
leave no trace: no event, no reply, and the partition flows on with what comes next.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

from confluent_kafka import Producer

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_command, new_command
from kes.streams.kafka.readback import read_topic
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import ROOT, AppCluster


def _transactional_commands(
    bootstrap: str, topics: AggregateTopics, accounts: list[str], txn_id: str
) -> tuple[Producer, list[str]]:
    """Open a transaction holding an OpenAccount per account (reply wanted); returns its ids."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id})
    producer.init_transactions(30)
    producer.begin_transaction()
    ids = []
    for account in accounts:
        env = new_command(account, bank_pb2.OpenAccount(owner=account), aggregate=topics.name)
        env.reply_wanted = True
        value, headers = encode_command(env)
        partition = partition_for(account, topics.partitions)
        producer.produce(
            topics.commands, value, account.encode(), partition=partition, headers=headers
        )
        ids.append(env.command_id)
    assert producer.flush(30) == 0
    return producer, ids


def _outcomes(bootstrap: str, topics: AggregateTopics, ids: list[str]) -> list[str]:
    """Every event or reply (read_committed) that carries one of these command ids."""
    wanted = {i.encode() for i in ids}
    found = []
    config = {"bootstrap.servers": bootstrap}
    for _, key, _ in read_topic(topics.replies, topics.partitions, config):
        if key in wanted:
            found.append(f"reply {key!r}")
    for topic in (topics.events,):
        for _, _, value in read_topic(topic, topics.partitions, config):
            if any(i in value for i in wanted):
                found.append(f"event with {value[:60]!r}")
    return found


def test_aborted_commands_are_never_applied_and_the_partition_flows_on(
    app_cluster: Callable[..., AppCluster],
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    cluster.worker("w1").wait_ready()
    # Commands applied first: each partition's checkpoint then points at the aborted records,
    # and the next batch starts past them (a gap of aborted records and markers only).
    before = produce(bootstrap, topics, [(f"first-{i}", bank_pb2.OpenAccount()) for i in range(8)])
    collect_replies(bootstrap, topics, before, timeout=60)
    aborted_accounts = [f"gone-{i}" for i in range(20)]
    producer, aborted = _transactional_commands(
        bootstrap, topics, aborted_accounts, f"{topics.prefix}upstream"
    )
    producer.abort_transaction(30)
    # The same accounts, opened for real afterwards: their first event must be revision 1.
    after = produce(
        bootstrap, topics, [(a, bank_pb2.OpenAccount(owner=a)) for a in aborted_accounts]
    )
    replies = collect_replies(bootstrap, topics, after, timeout=60)
    assert {replies[i][0].accepted.revision for i in after} == {1}
    assert _outcomes(bootstrap, topics, aborted) == []


def test_a_producer_killed_inside_its_transaction_leaves_nothing_applied(
    app_cluster: Callable[..., AppCluster],
) -> None:
    """As a worker SIGKILLed after forwarding misrouted commands, before its commit."""
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    cluster.worker("w1").wait_ready()
    before = produce(bootstrap, topics, [(f"first-{i}", bank_pb2.OpenAccount()) for i in range(8)])
    collect_replies(bootstrap, topics, before, timeout=60)  # checkpoints before the open txn
    script = textwrap.dedent(
        f"""
        import os, signal
        from confluent_kafka import Producer
        from kes.schemas.bank.v1 import bank_pb2
        from kes.schemas.codec import encode_command, new_command
        from kes.topology.partitioning import partition_for
        producer = Producer({{"bootstrap.servers": {bootstrap!r},
                             "transactional.id": {topics.prefix + "forwarder"!r},
                             "transaction.timeout.ms": 5000}})
        producer.init_transactions(30)
        producer.begin_transaction()
        for i in range(10):
            account = f"fwd-{{i}}"
            env = new_command(account, bank_pb2.OpenAccount(owner=account), aggregate="account")
            env.reply_wanted = True
            value, headers = encode_command(env)
            headers = [*headers, ("kes-forwarded-from", b"0")]
            producer.produce({topics.commands!r}, value, account.encode(),
                             partition=partition_for(account, {topics.partitions}), headers=headers)
            print(env.command_id, flush=True)
        producer.flush(30)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -9, done.stderr
    forwarded = done.stdout.split()
    assert len(forwarded) == 10
    began = time.monotonic()
    after = produce(
        bootstrap, topics, [(f"fwd-{i}", bank_pb2.OpenAccount(owner="x")) for i in range(10)]
    )
    # The open transaction holds read_committed readers back until the coordinator aborts it
    # (its 5 s timeout); then the partition flows on.
    replies = collect_replies(bootstrap, topics, after, timeout=90)
    assert {replies[i][0].accepted.revision for i in after} == {1}
    assert time.monotonic() - began < 60
    assert _outcomes(bootstrap, topics, forwarded) == []
