"""A paused worker (a zombie) that wakes up after its partitions moved must not write."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.workers import AppCluster
from tests.integration.test_engine import assert_invariants


def test_a_paused_worker_is_fenced_when_it_wakes_up(app_cluster: Callable[..., AppCluster]) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    commands = bank_commands(6000, accounts=80, seed=17)
    zombie = cluster.worker("w1")
    zombie.wait_ready()
    ids = produce(bootstrap, topics, commands[:3000])
    time.sleep(0.3)
    assert zombie.proc is not None
    zombie.proc.send_signal(signal.SIGSTOP)  # mid-run, transactions open
    try:
        successor = cluster.worker("w2")
        successor.wait_ready(120)  # after the zombie's session timed out
        ids += produce(bootstrap, topics, commands[3000:4500])
        time.sleep(1)
    finally:
        zombie.proc.send_signal(signal.SIGCONT)
    # Woken up, the zombie's old producers are fenced; it drops what it had in flight, and a
    # worker that finds a fenced partition still assigned restarts (exit 70) to re-read it.
    time.sleep(8)
    if zombie.proc.poll() is not None:
        assert zombie.proc.returncode == 70, zombie.log_tail()
        zombie.start()
    zombie.wait_ready(120)
    ids += produce(bootstrap, topics, commands[4500:])
    replies = collect_replies(bootstrap, topics, ids, timeout=180)
    assert_invariants(cluster, replies, ids)
