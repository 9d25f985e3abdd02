"""`kes topics migrate` of an aggregate with personal data and erased entities, on a real broker.

Customers (name and email sealed) grow from 4 to 8 partitions after three of them were erased.
In `make test` the old topics are not compacted yet: the erased events and their tombstones are
still on the log. `KES_MIGRATE_COMPACTED=1` also runs the case where the cleaner removed them
first (slow: it waits for the broker's log cleaner); the unit test
`test_an_erased_entity_moves_as_erasure_and_compaction_leave_it` covers both logs without a
broker. The migration runs without the master key. On the new set: every data key is on its
entity's new keys partition, the sealed fields are readable through kes and absent from the raw
bytes, the erased customers hold only their EntityErased and markers and take no command, a
projection rebuilt there shows none of them, and `kes verify` passes.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kes.examples.customers.projections import directory
from kes.schemas.codec import decode_event, decode_snapshot, parse_event_key
from kes.schemas.customers.v1 import customers_pb2 as c
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode
from kes.schemas.kes.v1.personal_pb2 import DataKey
from kes.streams.cli import main
from kes.streams.cli.erasure import erase
from kes.streams.client.client import CommandClient
from kes.streams.config.settings import Settings
from kes.streams.cycle.idempotency import OUTCOME_PREFIX
from kes.streams.cycle.records import CHECKPOINT_KEY, ERASED_EVENT_TYPE
from kes.streams.kafka.readback import TopicRecord, read_records
from kes.streams.projections.projector import Projector
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.compaction import compact_soon
from tests.fixtures.workers import AppCluster

MASTER = base64.b64encode(os.urandom(32)).decode()
CUSTOMERS = 25
"""Registered: the first 16 before the erasures, the rest after them, on every old partition
(their records roll the segments the cleaner then compacts)."""
ERASED = {"c-0", "c-5", "c-10"}


pytestmark = pytest.mark.long  # minutes of scenario: make chaos runs it


def _secrets(i: int) -> list[bytes]:
    return [f"Secret-Name-{i:03d}".encode(), f"secret.{i:03d}@example.com".encode()]


def _raw(topics: AggregateTopics, topic: str, bootstrap: str) -> list[TopicRecord]:
    return list(read_records(topic, topics.partitions, {"bootstrap.servers": bootstrap}))


def _settings(cluster: AppCluster, tmp_path: Path, prefix: str, partitions: int) -> Settings:
    env = {**cluster.env(), "KES_MASTER_KEY": MASTER, "KES_TOPIC_PREFIX": prefix}
    return Settings.from_env(
        {**env, "KES_PARTITIONS": str(partitions)}, data_dir=str(tmp_path / f"reader-{prefix}")
    )


def _check_new_topics(new: AggregateTopics, bootstrap: str) -> None:
    """Nothing personal in the raw bytes; the erased hold EntityErased and markers only; every
    record on its entity's partition of 8."""
    secrets = [s for i in range(CUSTOMERS) for s in _secrets(i)]
    for topic in (new.events, new.snapshots, new.keys):
        for record in _raw(new, topic, bootstrap):
            assert not any(s in (record.value or b"") for s in secrets), topic
    erased_events = []
    for record in _raw(new, new.events, bootstrap):
        entity_id, revision = parse_event_key(record.key or b"")
        assert record.partition == partition_for(entity_id, 8)
        if entity_id in ERASED:
            erased_events.append((entity_id, revision, decode_event(record.value).event_type))
    assert sorted(erased_events) == sorted((e, 2, ERASED_EVENT_TYPE) for e in ERASED)
    for record in _raw(new, new.snapshots, bootstrap):
        if record.key == CHECKPOINT_KEY or (record.key or b"").startswith(OUTCOME_PREFIX.encode()):
            continue
        snapshot = decode_snapshot(record.value)
        assert record.partition == partition_for(snapshot.entity_id, 8)
        assert snapshot.erased == (snapshot.entity_id in ERASED)
        assert bool(snapshot.wrapped_key) != snapshot.erased  # a sealed live one has its key
    keys = {}
    for record in _raw(new, new.keys, bootstrap):
        entity_id = (record.key or b"").decode()
        assert record.partition == partition_for(entity_id, 8)
        keys[entity_id] = DataKey.FromString(record.value or b"")
    assert set(keys) == {f"c-{i}" for i in range(CUSTOMERS)}
    assert {e for e, k in keys.items() if k.erased and not k.wrapped_key} == ERASED


def _register(client: CommandClient, ids: range) -> None:
    for i in ids:
        name, email = (s.decode() for s in _secrets(i))
        reply = client.ask(f"c-{i}", c.RegisterCustomer(name=name, email=email), 30)
        assert reply.WhichOneof("outcome") == "accepted", reply


def _erased_events_left(old: AggregateTopics, bootstrap: str) -> list[bytes]:
    """Event records of the erased customers on the old set other than their EntityErased."""
    return [
        r.key or b""
        for r in _raw(old, old.events, bootstrap)
        if r.value is not None
        and parse_event_key(r.key or b"")[0] in ERASED
        and ERASED_EVENT_TYPE.encode() not in r.value
    ]


_SLOW = pytest.mark.skipif(
    not os.environ.get("KES_MIGRATE_COMPACTED"), reason="KES_MIGRATE_COMPACTED=1 runs it"
)


@pytest.mark.parametrize(
    "compacted", [False, pytest.param(True, marks=_SLOW)], ids=["uncompacted", "compacted"]
)
def test_migrating_customers_keeps_their_keys_and_their_erasures(
    compacted: bool,
    app_cluster: Callable[..., AppCluster],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = app_cluster("kes.examples.customers", ["customer"], partitions=4)
    bootstrap = cluster.settings.bootstrap_servers
    old_prefix = cluster.settings.topic_prefix
    new_prefix = old_prefix + "v2-"
    old = cluster.settings.topics("customer")
    worker = cluster.worker("w1", KES_MASTER_KEY=MASTER)
    worker.wait_ready()
    with CommandClient(old, bootstrap, aggregate="customer") as client:
        _register(client, range(16))
        for entity_id in sorted(ERASED):
            assert erase(client, entity_id).erased
        if compacted:
            compact_soon(bootstrap, [old.events, old.snapshots, old.keys])
            time.sleep(1)
        later = range(16, CUSTOMERS)
        assert {partition_for(f"c-{i}", 4) for i in later} == {0, 1, 2, 3}
        _register(client, later)
    deadline = time.monotonic() + 240
    while compacted and (left := _erased_events_left(old, bootstrap)):
        assert time.monotonic() < deadline, f"not compacted in time: {left}"
        time.sleep(3)
    assert bool(_erased_events_left(old, bootstrap)) != compacted
    worker.stop()

    monkeypatch.delenv("KES_MASTER_KEY", raising=False)  # the migration needs no master key
    cli = ["-b", bootstrap, "--topic-prefix", old_prefix]
    migrate = ["topics", "migrate", "kes.examples.customers", "customer", "--partitions", "8"]
    assert main([*migrate, "--to-prefix", new_prefix, *cli]) == 0
    out = capsys.readouterr().out
    behind = re.search(r"25 entities \(3 erased: (\d+) records of their erased events left", out)
    assert behind is not None, out
    assert int(behind[1]) <= 3 if compacted else int(behind[1]) == 6, out  # events, tombstones
    assert "25 events, 25 snapshots, 25 outcomes, 25 data keys" in out, out

    settings = _settings(cluster, tmp_path, new_prefix, 8)
    new = settings.topics("customer")
    _check_new_topics(new, bootstrap)

    grown = AppCluster(cluster.app, settings, tmp_path / "new")
    grown.workdir.mkdir()
    try:
        grown.worker("w1", KES_MASTER_KEY=MASTER).wait_ready()
        with CommandClient(new, bootstrap, aggregate="customer") as client:
            changed = client.ask("c-1", c.ChangeEmail(email="moved@example.com"), 30)
            assert changed.accepted.revision == 2, changed
            refused = client.ask("c-5", c.ChangeEmail(email="back@example.com"), 30)
            assert refused.rejected.code == RejectionCode.ERASED, refused
            again = erase(client, "c-0")  # its erasure's outcome came along: a retry
            assert again.erased and again.revision == 2

        monkeypatch.setenv("KES_MASTER_KEY", MASTER)
        new_cli = ["-b", bootstrap, "--topic-prefix", new_prefix, "--partitions", "8"]
        capsys.readouterr()
        assert main(["events", "kes.examples.customers", "customer", *new_cli]) == 0
        out = capsys.readouterr().out
        assert out.count("CustomerRegistered") == CUSTOMERS - len(ERASED)
        assert out.count("EntityErased") == len(ERASED)
        for i in range(1, CUSTOMERS):  # each opened with its key from the new keys topic
            assert (_secrets(i)[0].decode() in out) == (f"c-{i}" not in ERASED), i
        assert "moved@example.com" in out
        # verify opens the events with the new keys topic, the snapshots with their own keys,
        # and compares the fold with the snapshot (a key missing there is a violation); each
        # command on the new set has one outcome (the erasure retried: its migrated one)
        assert main(["verify", "kes.examples.customers", "customer", "--commands", *new_cli]) == 0
        summary = (
            f"{CUSTOMERS} entities, {CUSTOMERS + 1} events, {CUSTOMERS} snapshots, 3 erased: OK"
        )
        out = capsys.readouterr().out
        assert summary in out and "3 command records (0 pending)" in out, out

        projector = Projector(directory, settings)  # a read model rebuilt on the new set
        stop = threading.Event()
        thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
        thread.start()
        kept = {f"c-{i}" for i in range(CUSTOMERS)} - ERASED
        try:
            deadline = time.monotonic() + 30
            rows: dict[str, bytes] = {}
            while set(rows) != kept or b"moved@" not in rows["c-1"]:
                assert time.monotonic() < deadline, f"the projection holds {sorted(rows)}"
                time.sleep(0.2)
                rows = dict(projector.store.items())
        finally:
            stop.set()
            thread.join(30)
        assert b"Secret-Name-007" in rows["c-7"]
    finally:
        grown.close()
