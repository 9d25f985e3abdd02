"""A worker on 256 partitions: it starts, recovers, processes, and holds one consumer and one
producer for all of them (the engine-v1 worker held a producer per partition)."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable

from kes.schemas.bank.v1 import bank_pb2
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def test_256_partitions_one_consumer_one_producer(app_cluster: Callable[..., AppCluster]) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=256)
    topics = cluster.settings.topics("account")
    bootstrap = cluster.settings.bootstrap_servers
    worker = cluster.worker("w1")
    body = worker.wait_ready(180)
    assert len(body["partitions"]) == 256
    accounts = [f"wide-{i}" for i in range(1000)]
    ids = produce(bootstrap, topics, [(a, bank_pb2.OpenAccount(owner=a)) for a in accounts])
    replies = collect_replies(bootstrap, topics, ids, timeout=120)
    assert {r[0].WhichOneof("outcome") for r in replies.values()} == {"accepted"}
    assert len({r[0].accepted.partition for r in replies.values()}) > 200
    text = _metrics(worker.web_port)
    clients = dict(re.findall(r'^kes_kafka_clients\{role="(\w+)"\} (\S+)$', text, re.M))
    assert clients == {"consumer": "1.0", "producer": "1.0", "recovery": "0.0"}
    transactions = float(re.findall(r"^kes_transactions_total (\S+)$", text, re.M)[0])
    assert 0 < transactions < len(accounts) / 4  # many partitions' batches per transaction
