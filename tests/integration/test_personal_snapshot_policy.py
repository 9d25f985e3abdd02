"""Personal data with a snapshot interval of 10 through real Kafka: customers registered, changed
and some erased, a worker SIGKILLed mid-load and a new one started on an empty data dir. The cold
restore folds the unsnapshotted tails with each entity's data key (from the keys topic for those
with no changelog snapshot yet), so every entity goes on at its revision + 1 with its one key,
the sealed fields read back through kes, the erased stay erased, and verify passes. Then
`kes snapshots rebuild` snapshots every entity (sealed, erased as markers, no low-water) and a
worker goes on from it; verify refuses an erased entity's old snapshot put back."""

from __future__ import annotations

import base64
import os
import re
import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from kes.examples.customers import customer
from kes.schemas.codec import decode_snapshot
from kes.schemas.customers.v1 import customers_pb2 as c
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode
from kes.schemas.kes.v1.personal_pb2 import DataKey
from kes.streams.cli import main
from kes.streams.client.client import CommandClient
from kes.streams.config.settings import Settings
from kes.streams.cycle.records import CHECKPOINT_KEY
from kes.streams.kafka.keyreader import keyring_for
from kes.streams.kafka.readback import read_records
from kes.streams.operations.verify import verify
from kes.topology.partitioning import partition_for
from tests.fixtures.workers import AppCluster

pytestmark = [pytest.mark.integration, pytest.mark.long]

MASTER = base64.b64encode(os.urandom(32)).decode()
ENV = {"KES_MASTER_KEY": MASTER, "KES_SNAPSHOT_EVERY": "10"}


def _latest(settings: Settings, topic: str) -> dict[str, bytes | None]:
    """The latest value per entity key of a compacted topic (None: a tombstone)."""
    config = {"bootstrap.servers": settings.bootstrap_servers}
    return {
        (r.key or b"").decode(): r.value
        for r in read_records(topic, settings.partitions, config)
        if r.key and r.key != CHECKPOINT_KEY and not r.key.startswith(b"\x00")
    }


def test_a_cold_restore_with_an_interval_folds_sealed_tails_and_keeps_erasures(
    app_cluster: Callable[..., AppCluster],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = app_cluster("kes.examples.customers", ["customer"], partitions=2)
    monkeypatch.setenv("KES_MASTER_KEY", MASTER)  # kes erase / events / verify in-process
    settings = Settings.from_env({**cluster.env(), **ENV}, data_dir=str(cluster.workdir / "r"))
    topics = settings.topics("customer")
    config = {"bootstrap.servers": settings.bootstrap_servers}
    cli = ["-b", settings.bootstrap_servers, "--partitions", "2",
           "--topic-prefix", settings.topic_prefix]  # fmt: skip
    first = cluster.worker("w1", **ENV)
    first.wait_ready()
    revisions: dict[str, int] = {}
    with CommandClient(topics, settings.bootstrap_servers, aggregate="customer") as client:
        for i in range(40):
            entity = f"c-{i}"
            changes = 11 if i < 10 else 2 if i < 20 else 0  # 12, 3 and 1 revisions
            reply = client.ask(entity, c.RegisterCustomer(name=f"Name-{i}", email=f"{i}@x.io"), 30)
            for n in range(changes):
                reply = client.ask(entity, c.ChangeEmail(email=f"{i}.{n}@x.io"), 30)
            assert reply.accepted.revision == 1 + changes, reply
            revisions[entity] = 1 + changes
    snapshots = _latest(settings, topics.snapshots)
    assert all(f"c-{i}" not in snapshots for i in range(10, 40))  # their keys: keys topic only
    assert all(decode_snapshot(snapshots[f"c-{i}"] or b"").revision == 10 for i in range(10))
    before_erasure = snapshots["c-0"] or b""

    assert main(["erase", "kes.examples.customers", "customer", "c-0", "c-10", *cli]) == 0
    capsys.readouterr()
    snapshots = _latest(settings, topics.snapshots)
    for entity in ("c-0", "c-10"):  # logged at once, whatever the interval
        marker = decode_snapshot(snapshots[entity] or b"")
        assert marker.erased and marker.revision == revisions[entity] + 1, marker
    live = [f"c-{i}" for i in range(40) if i not in (0, 10)]

    with CommandClient(topics, settings.bootstrap_servers, aggregate="customer") as client:
        for n in range(3):  # mid-load: some of it in an open transaction at the kill
            for entity in live:
                client.send(entity, c.ChangeEmail(email=f"{entity}.late{n}@x.io"))
        time.sleep(0.3)
        first.kill()
        cold = cluster.worker("w2", **ENV)  # an empty data dir: the changelog and the events
        cold.wait_ready(120)
        for entity in live:
            reply = client.ask(entity, c.ChangeEmail(email=f"{entity}.final@x.io"), 60)
            assert reply.accepted.revision == revisions[entity] + 4, (entity, reply)
        for entity in ("c-0", "c-10"):
            reply = client.ask(entity, c.ChangeEmail(email="back@x.io"), 60)
            assert reply.rejected.code == RejectionCode.ERASED, reply

    log = cold.log_path.read_text(errors="replace")
    assert sum(int(n) for n in re.findall(r"folded (\d+) of \d+ events", log)) > 0, log[-2000:]
    keys = Counter(
        (r.key or b"").decode()
        for r in read_records(topics.keys, 2, config)
        if r.value and not DataKey.FromString(r.value).erased
    )
    assert keys == Counter(f"c-{i}" for i in range(40)), keys  # one key each, never a second
    checked = verify(customer, topics, config, keys=keyring_for(topics, config, settings.master()))
    assert checked.ok, checked.summary()
    assert checked.erased == 2
    for entity in live:
        i = int(entity[2:])
        assert checked.states[entity].name == f"Name-{i}"  # sealed, opened with its one key
        assert checked.states[entity].email == f"{entity}.final@x.io"
    assert main(["events", "kes.examples.customers", "customer", "--entity", "c-25", *cli]) == 0
    out = capsys.readouterr().out
    assert "Name-25" in out and "c-25.final@x.io" in out
    assert main(["verify", "kes.examples.customers", "customer", *cli]) == 0

    # kes snapshots rebuild (workers stopped): every entity's latest, sealed with its one key,
    # the erased as markers, and checkpoints without a low-water; a worker goes on from there
    cold.stop()
    rebuild = ["snapshots", "rebuild", "kes.examples.customers", "customer", "--app-id"]
    assert main([*rebuild, cluster.settings.app_id, *cli]) == 0
    snapshots = _latest(settings, topics.snapshots)
    for entity in live:
        snap = decode_snapshot(snapshots[entity] or b"")
        assert snap.revision == checked.revisions[entity] and snap.pending_revisions == 0
        assert (
            snap.wrapped_key
            == DataKey.FromString(_latest(settings, topics.keys)[entity] or b"").wrapped_key
        )
    assert all(decode_snapshot(snapshots[e] or b"").erased for e in ("c-0", "c-10"))
    last = {r.partition: r for r in read_records(topics.snapshots, 2, config) if r.key == b""}
    assert len(last) == 2 and not any(r.headers for r in last.values())
    again = cluster.worker("w3", **ENV)
    again.wait_ready(120)
    with CommandClient(topics, settings.bootstrap_servers, aggregate="customer") as client:
        reply = client.ask("c-5", c.ChangeEmail(email="c-5.rebuilt@x.io"), 60)
    assert reply.accepted.revision == checked.revisions["c-5"] + 1, reply
    again.stop()
    rebuilt = verify(customer, topics, config, keys=keyring_for(topics, config, settings.master()))
    assert rebuilt.ok, rebuilt.summary()
    assert rebuilt.states["c-5"].name == "Name-5"

    # verify's rules together: an erased entity's snapshot must be the marker, whatever the
    # low-water (an erasure is never left in a tail)
    producer = Producer(config)
    producer.produce(topics.snapshots, before_erasure, b"c-0", partition=partition_for("c-0", 2))
    assert producer.flush(30) == 0
    broken = verify(customer, topics, config, keys=keyring_for(topics, config, settings.master()))
    assert broken.violations == ["c-0: erased, but its snapshot is not the marker"]
