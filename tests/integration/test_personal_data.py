"""Personal data on a real broker: sealed on every topic, readable through kes, and erased.

`KES_ERASURE_ENTITIES=1000` runs the erasure scenario at full size (1,000 customers, 100 erased);
`make test` runs it with 100 customers and 10 erased.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kes.examples.customers import customer
from kes.examples.customers.projections import directory
from kes.schemas.codec import decode_snapshot, parse_event_key
from kes.schemas.customers.v1 import customers_pb2 as c
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode
from kes.schemas.kes.v1.personal_pb2 import DataKey
from kes.streams.cli import main
from kes.streams.client.client import CommandClient, state_of
from kes.streams.config.settings import Settings
from kes.streams.cycle.records import ERASED_EVENT_TYPE
from kes.streams.kafka.keyreader import keyring_for
from kes.streams.kafka.readback import read_records
from kes.streams.operations.verify import verify
from kes.streams.projections.projector import Projector
from tests.fixtures.compaction import compact_soon
from tests.fixtures.workers import ROOT, AppCluster

pytestmark = pytest.mark.integration

MASTER = base64.b64encode(os.urandom(32)).decode()


def _name(i: int) -> str:
    return f"Secret-Name-{i:05d}"


def _email(i: int) -> str:
    return f"secret.mail.{i:05d}@example.com"


@pytest.fixture
def customers(
    app_cluster: Callable[..., AppCluster], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[AppCluster, Settings]]:
    """The customers app on the test broker, a worker with a master key, and its settings."""
    cluster = app_cluster("kes.examples.customers", ["customer"], partitions=2)
    monkeypatch.setenv("KES_MASTER_KEY", MASTER)  # for kes events / verify / erase in-process
    settings = Settings.from_env(
        {**cluster.env(), "KES_MASTER_KEY": MASTER}, data_dir=str(tmp_path / "reader")
    )
    cluster.worker("w1", KES_MASTER_KEY=MASTER).wait_ready()
    yield cluster, settings


def _cli(settings: Settings) -> list[str]:
    return [
        "-b", settings.bootstrap_servers, "--partitions", str(settings.partitions),
        "--topic-prefix", settings.topic_prefix,
    ]  # fmt: skip


def _register(settings: Settings, ids: range, emails: bool = False) -> None:
    topics = settings.topics("customer")
    with CommandClient(topics, settings.bootstrap_servers, aggregate="customer") as client:
        for i in ids:
            reply = client.ask(f"c-{i}", c.RegisterCustomer(name=_name(i), email=_email(i)), 30)
            assert reply.WhichOneof("outcome") == "accepted", reply
            if emails and i % 2 == 0:
                changed = client.ask(f"c-{i}", c.ChangeEmail(email=f"new.{_email(i)}"), 30)
                assert changed.WhichOneof("outcome") == "accepted", changed


def _raw(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    config = {"bootstrap.servers": settings.bootstrap_servers}
    return [(r.key, r.value) for r in read_records(topic, settings.partitions, config)]


def test_personal_fields_are_unreadable_on_the_topics_and_readable_through_kes(
    customers: tuple[AppCluster, Settings],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster, settings = customers
    topics = settings.topics("customer")
    _register(settings, range(10), emails=True)
    with CommandClient(topics, settings.bootstrap_servers, aggregate="customer") as client:
        reply = client.ask("c-0", c.ChangeEmail(email="latest.secret@example.com"), 30)
    public = state_of(reply, c.Customer)
    assert public is not None and public.registered and not public.email  # sealed in the reply
    secrets = [s.encode() for i in range(10) for s in (_name(i), _email(i))]
    secrets.append(b"latest.secret")
    for topic in (topics.events, topics.snapshots, topics.replies, topics.keys):
        records = _raw(settings, topic)
        assert records, topic
        for _, value in records:
            assert not any(s in (value or b"") for s in secrets), topic
    keys = [DataKey.FromString(v or b"") for _, v in _raw(settings, topics.keys)]
    assert sorted(k.entity_id for k in keys) == sorted(f"c-{i}" for i in range(10))
    assert all(len(k.wrapped_key) == 12 + 32 + 16 for k in keys)  # nonce, key, tag

    assert (
        main(["events", "kes.examples.customers", "customer", "--entity", "c-0", *_cli(settings)])
        == 0
    )
    out = capsys.readouterr().out
    assert _name(0) in out and "latest.secret@example.com" in out
    monkeypatch.delenv("KES_MASTER_KEY")  # without the master key, kes shows what is public
    assert main(["events", "kes.examples.customers", "customer", *_cli(settings)]) == 0
    out = capsys.readouterr().out
    assert out.count("CustomerRegistered") == 10 and _name(0) not in out

    refused = cluster.worker("no-key", KES_MASTER_KEY="")
    assert refused.proc is not None and refused.proc.wait(60) == 1
    assert "no master key is configured" in refused.log_tail()


def _left_of(settings: Settings, erased: set[str]) -> list[str]:
    """What the topics still hold of the erased entities, besides what erasure leaves."""
    topics = settings.topics("customer")
    left = []
    for key, value in _raw(settings, topics.events):
        if value is None or key is None:
            continue
        entity, _ = parse_event_key(key)
        if entity in erased and ERASED_EVENT_TYPE.encode() not in value:
            left.append(f"event {key!r}")
    for key, value in _raw(settings, topics.snapshots):
        entity = (key or b"").decode("utf-8", "replace")
        if entity in erased and value is not None and not decode_snapshot(value).erased:
            left.append(f"snapshot {entity}")
    for key, value in _raw(settings, topics.keys):
        entity = (key or b"").decode("utf-8", "replace")
        if entity in erased and value is not None and not DataKey.FromString(value).erased:
            left.append(f"key {entity}")
    return left


def test_erasure_then_compaction_leaves_nothing_of_the_erased_entities(
    customers: tuple[AppCluster, Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    _, settings = customers
    total = int(os.environ.get("KES_ERASURE_ENTITIES", "100"))
    _register(settings, range(total), emails=True)
    projector = Projector(directory, settings)
    stop = threading.Event()
    thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        erased_ids = [f"c-{i}" for i in range(0, total, 10)]
        erased = set(erased_ids)
        deadline = time.monotonic() + 120
        while sum(1 for _ in projector.store.items()) < total:
            assert time.monotonic() < deadline, "the projection did not catch up"
            time.sleep(0.2)
        assert b"Secret-Name-00000" in (projector.store.get("c-0") or b"")
        assert (
            main(["erase", "kes.examples.customers", "customer", *erased_ids, *_cli(settings)]) == 0
        )
        out = capsys.readouterr().out
        assert out.count(": erased (EntityErased at revision ") == len(erased_ids)
        topics = settings.topics("customer")
        with CommandClient(topics, settings.bootstrap_servers, aggregate="customer") as client:
            later = client.ask("c-0", c.ChangeEmail(email="back@example.com"), 30)
        assert later.rejected.code == RejectionCode.ERASED
        while any(projector.store.get(e) is not None for e in erased):
            assert time.monotonic() < deadline, "the projection kept erased rows"
            time.sleep(0.2)
        kept = {k for k, _ in projector.store.items()}
        assert kept == {f"c-{i}" for i in range(total)} - erased
    finally:
        stop.set()
        thread.join(60)

    assert _left_of(settings, erased)  # superseded, not yet removed: compaction does that
    compact_soon(settings.bootstrap_servers, [topics.events, topics.snapshots, topics.keys])
    time.sleep(1)
    _register(settings, range(total, total + 20))  # new records roll the dirty segments
    deadline = time.monotonic() + 180
    while left := _left_of(settings, erased):
        assert time.monotonic() < deadline, f"not compacted in time: {left[:5]}"
        time.sleep(3)
    raw = b"".join(v or b"" for _, v in _raw(settings, topics.events))
    assert _name(0).encode() not in raw  # nor sealed: the records are gone

    config = {"bootstrap.servers": settings.bootstrap_servers}
    checked = verify(customer, topics, config, keys=keyring_for(topics, config, settings.master()))
    assert checked.ok, checked.summary()
    assert checked.erased == len(erased_ids)
    assert checked.entities == total + 20
    assert checked.states["c-1"].name == _name(1)  # the others intact, readable through kes
    assert main(["verify", "kes.examples.customers", "customer", *_cli(settings)]) == 0


def test_an_erasure_interrupted_by_kills_completes_when_run_again(
    customers: tuple[AppCluster, Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster, settings = customers
    _register(settings, range(40))
    ids = [f"c-{i}" for i in range(40)]
    eraser = subprocess.Popen(
        [sys.executable, "-m", "kes.streams.cli", "erase", "kes.examples.customers", "customer",
         *ids, *_cli(settings)],
        cwd=ROOT, env={**os.environ, "KES_MASTER_KEY": MASTER}, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert eraser.stdout is not None
    for _ in range(5):  # some erased, the rest not yet
        assert b": erased" in eraser.stdout.readline()
    [worker] = cluster.workers
    worker.kill()  # mid-erasure: its open transaction is aborted
    eraser.send_signal(signal.SIGKILL)
    eraser.wait(30)
    cluster.worker("w1", KES_MASTER_KEY=MASTER).wait_ready()
    capsys.readouterr()
    assert main(["erase", "kes.examples.customers", "customer", *ids, *_cli(settings)]) == 0
    assert capsys.readouterr().out.count(": erased (EntityErased at revision 2)") == 40
    topics = settings.topics("customer")
    config = {"bootstrap.servers": settings.bootstrap_servers}
    checked = verify(customer, topics, config, keys=keyring_for(topics, config, settings.master()))
    assert checked.ok, checked.summary()
    assert checked.erased == 40
