"""`kes dlq list|show|redrive` against a real broker: a handler bug fixed by a new deployment,
and its dead-lettered commands redriven into it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_command
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode
from kes.streams.kafka.readback import read_records
from kes.streams.operations.deadletters import REDRIVEN_HEADER
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster


def test_list_show_and_redrive_dead_letters_into_a_fixed_deployment(
    app_cluster: Callable[..., AppCluster], tmp_path: Path
) -> None:
    faulty = app_cluster("tests.apps.faulty", ["account"], partitions=2)
    topics = faulty.settings.topics("account")
    bootstrap = faulty.settings.bootstrap_servers
    worker = faulty.worker("w1")
    worker.wait_ready()
    booms = produce(
        bootstrap, topics, [(f"b-{i}", bank_pb2.OpenAccount(owner="boom")) for i in range(3)]
    )
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topics.commands, b"\xffgarbage", b"g-1", partition=partition_for("g-1", 2))
    assert producer.flush(10) == 0
    fine = produce(bootstrap, topics, [("ok-1", bank_pb2.OpenAccount(owner="ann"))])
    replies = collect_replies(bootstrap, topics, [*booms, *fine])
    assert {replies[c][0].rejected.code for c in booms} == {RejectionCode.POISON}

    listed = faulty.kes("dlq", "list", "tests.apps.faulty", "account")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "4 dead letter(s)" in listed.stdout
    assert listed.stdout.count("HANDLER_ERROR") == 3 and listed.stdout.count("UNDECODABLE") == 1
    first = listed.stdout.splitlines()[0].split()[0]  # partition@offset on the dead-letter topic
    shown = json.loads(faulty.kes("dlq", "show", "tests.apps.faulty", "account", first).stdout)
    assert shown["from"].startswith(topics.commands) and shown["redrivable"]
    assert (shown["command"] is None) == (shown["reason"] == "UNDECODABLE")

    dry = faulty.kes(
        "dlq", "redrive", "tests.apps.faulty", "account", "--reason", "HANDLER_ERROR", "--dry-run"
    )
    assert dry.stdout.count("would redrive") == 3
    worker.stop()

    fixed = AppCluster("kes.examples.bank", faulty.settings, tmp_path)  # same topics and app id
    try:
        fixed.worker("w2").wait_ready()
        done = fixed.kes(
            "dlq", "redrive", "kes.examples.bank", "account", "--reason", "HANDLER_ERROR"
        )
        assert done.returncode == 0 and done.stdout.count("redriven to") == 3, done.stdout
        answered = collect_replies(bootstrap, topics, booms, each=2)
    finally:
        fixed.close()
    for command_id in booms:
        last = answered[command_id][-1]
        assert last.HasField("accepted") and not last.replay, last
    redriven = [
        r for r in read_records(topics.commands, 2, {"bootstrap.servers": bootstrap})
        if any(k == REDRIVEN_HEADER for k, _ in r.headers)
    ]  # fmt: skip
    assert sorted(decode_command(r.value, r.headers).command_id for r in redriven) == sorted(booms)
