"""A worker whose static membership is taken by another process stops instead of hanging.

After a group-coordinator failover that outlasts the session, librdkafka rejoins with the
worker's `group.instance.id` and can find it fenced: a fatal error after which the consumer never
fetches again (the worker stayed up and applied nothing). Here another consumer joins with the
worker's instance id, which fences the worker the same way; the worker must exit 70.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer

from kes.streams.runtime.engine import EXIT_BATCH_FAILED
from tests.fixtures.workers import AppCluster


def test_a_fenced_static_member_exits_70(app_cluster: Callable[..., AppCluster]) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=2)
    worker = cluster.worker("w1")
    worker.wait_ready()
    instance = (worker.data_dir / "instance-id").read_text().strip()
    group = cluster.settings.group_id
    intruder = Consumer(
        {
            "bootstrap.servers": cluster.settings.bootstrap_servers,
            "group.id": group,
            "group.instance.id": f"{group}-{instance}",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 6000,
        }
    )
    intruder.subscribe([cluster.settings.topics("account").commands])
    try:
        deadline = time.monotonic() + 60
        assert worker.proc is not None
        while worker.proc.poll() is None and time.monotonic() < deadline:
            intruder.poll(0.2)
        assert worker.proc.poll() == EXIT_BATCH_FAILED, worker.log_tail()
        assert "the consumer cannot go on" in worker.log_tail(100)
    finally:
        intruder.close()
