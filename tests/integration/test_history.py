"""One entity's history is read from its first event's offset, not from the start of the topic."""

from __future__ import annotations

from collections.abc import Callable

from kes.examples.bank import account
from kes.schemas.codec import unpack
from kes.streams.client.history import find_snapshot, read_history
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.workers import AppCluster


def test_history_starts_at_the_entitys_first_event(app_cluster: Callable[..., AppCluster]) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    cluster.worker("w1").wait_ready()
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    first = produce(bootstrap, topics, bank_commands(600, accounts=20, seed=3))
    late = "late-comer"
    later = produce(bootstrap, topics, [(late, c) for _, c in bank_commands(5, accounts=1)])
    collect_replies(bootstrap, topics, first + later)

    snapshot = find_snapshot(topics, late, {"bootstrap.servers": bootstrap})
    assert snapshot is not None and snapshot.revision >= 1
    assert snapshot.first_event_offset > 0  # other entities' events come before it

    history = list(read_history(topics, bootstrap, late))
    assert [e.revision for e in history] == list(range(1, snapshot.revision + 1))
    assert all(e.entity_id == late for e in history)
    assert history[0].source_partition == partition_for(late, topics.partitions)
    state = account.fold(account.initial_state(late), (unpack(e.payload) for e in history))
    assert state == unpack(snapshot.state)
    assert find_snapshot(topics, "never-seen", {"bootstrap.servers": bootstrap}) is None
