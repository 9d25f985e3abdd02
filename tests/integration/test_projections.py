"""Projections against a real broker: the balances read model equals the fold of the log, through
SIGKILLs and a rebuild; read-your-writes on a Reply; adapters and dead letters in a projector."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from kes.examples.bank import account
from kes.examples.bank.projections import BalanceRow, balance_of, balances
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_dead_letter, decode_event
from kes.schemas.errors import ProjectionTimeoutError
from kes.stores.readmodels import RocksDBReadModelStore
from kes.streams.client.client import CommandClient
from kes.streams.config.settings import Settings
from kes.streams.core.adapters import EventAdapters
from kes.streams.kafka.readback import read_topic
from kes.streams.operations.verify import Verification, verify
from kes.streams.projections.admin import rebuild
from kes.streams.projections.projector import Projector, store_path
from kes.topology.admin import apply
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.groups import committed_and_ends as group_offsets
from tests.fixtures.standins import EventWriter, event
from tests.fixtures.workers import ROOT, AppCluster, ProjectionProcess

NAME = "account-balances"
LEGACY = "kestest.projections.LegacyCredited"


@pytest.fixture
def projection_env(tmp_path: Path) -> Callable[[AppCluster], dict[str, str]]:
    return lambda cluster: {**cluster.env(), "KES_DATA_DIR": str(tmp_path / "projection")}


def kes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kes.streams.cli", "projection", *args, "kes.examples.bank", NAME],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def committed_and_ends(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """The balances group's committed offsets and the log's ends, per events partition."""
    return group_offsets(settings, balances.group_id(settings.topic_prefix))


def wait_idle(settings: Settings, process: ProjectionProcess, timeout: float = 120) -> None:
    """Until the group's committed offsets equal the log's end."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.alive(), process.log_path.read_text(errors="replace")[-3000:]
        committed, ends = committed_and_ends(settings)
        if committed == ends:
            return
        assert time.monotonic() < deadline, f"not idle: committed {committed}, ends {ends}"
        time.sleep(0.5)


def wait_progress(settings: Settings, process: ProjectionProcess, beyond: int) -> int:
    """Until the group's committed offsets add up to more than `beyond`; their sum."""
    deadline = time.monotonic() + 120
    while True:
        assert process.alive(), process.log_path.read_text(errors="replace")[-3000:]
        total = sum(max(0, offset) for offset in committed_and_ends(settings)[0].values())
        if total > beyond:
            return total
        assert time.monotonic() < deadline, f"no progress beyond {beyond}"
        time.sleep(0.05)


def read_model(settings: Settings) -> dict[str, BalanceRow]:
    store = RocksDBReadModelStore(store_path(balances, settings), read_only=True)
    try:
        return {key: BalanceRow.decode(value) for key, value in store.items()}
    finally:
        store.close()


def assert_matches_fold(rows: dict[str, BalanceRow], checked: Verification) -> None:
    assert checked.ok, checked.summary()
    assert rows.keys() == checked.states.keys()
    for entity, state in checked.states.items():
        assert isinstance(state, bank_pb2.Account)
        revision = checked.revisions[entity]
        assert rows[entity] == BalanceRow(state.balance, revision, revision, state.owner), entity


def test_balances_match_the_fold_through_two_sigkills_and_a_rebuild(
    app_cluster: Callable[..., AppCluster],
    projection_env: Callable[[AppCluster], dict[str, str]],
    tmp_path: Path,
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    settings = Settings.from_env(projection_env(cluster))
    topics = settings.topics("account")
    bootstrap = settings.bootstrap_servers
    env = projection_env(cluster)
    worker = cluster.worker("w1")
    projection = ProjectionProcess(env, tmp_path / "projection.log").start()
    try:
        worker.wait_ready()
        commands = bank_commands(3000, accounts=60, seed=3)
        ids: list[str] = []
        progress = 0
        for chunk in range(3):
            ids += produce(bootstrap, topics, commands[chunk * 1000 : (chunk + 1) * 1000])
            if chunk < 2:  # kill it as soon as this process has applied some of the new events
                progress = wait_progress(settings, projection, progress)
                projection.kill()
                projection.start()
        collect_replies(bootstrap, topics, ids, timeout=180)
        checked = verify(account, topics, {"bootstrap.servers": bootstrap})
        assert checked.events > 1000
        wait_idle(settings, projection)
        before = read_model(settings)
        assert_matches_fold(before, checked)

        shown = kes(env, "status")
        assert shown.returncode == 0, shown.stderr
        assert f"projection {NAME}: lag 0" in shown.stdout
        refused = kes(env, "rebuild")
        assert refused.returncode == 1 and "a running projection" in refused.stderr

        projection.stop()
        rebuilt = kes(env, "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert read_model(settings) == {}
        committed, _ = committed_and_ends(settings)
        assert committed == dict.fromkeys(range(settings.partitions), 0)
        projection.start()
        wait_idle(settings, projection)
        assert read_model(settings) == before
    finally:
        if projection.alive():
            projection.kill()


def test_wait_for_returns_once_a_reply_is_applied(
    app_cluster: Callable[..., AppCluster],
    in_process: Callable[[Projector], Projector],
    tmp_path: Path,
) -> None:
    cluster = app_cluster("kes.examples.bank", ["account"], partitions=4)
    settings = Settings.from_env(cluster.env(), data_dir=str(tmp_path / "data"))
    topics = settings.topics("account")
    cluster.worker("w1").wait_ready()
    projector = in_process(Projector(balances, settings))
    with CommandClient(topics, settings.bootstrap_servers, aggregate="account") as client:
        opened = client.ask("acc-ryw", bank_pb2.OpenAccount(owner="Ann", opening_balance=10), 30)
        projector.wait_for(opened, 60)
        assert balance_of(projector.store, "acc-ryw") == BalanceRow(10, 1, 1, "Ann")
        credited = client.ask("acc-ryw", bank_pb2.CreditAccount(amount=5), 30)
        projector.wait_for(credited, 30)
        assert balance_of(projector.store, "acc-ryw") == BalanceRow(15, 2, 2, "Ann")
        bounced = client.ask("acc-ryw", bank_pb2.DebitAccount(amount=500), 30)
        assert bounced.WhichOneof("outcome") == "rejected"
        projector.wait_for(bounced, 0.1)  # nothing to wait for
    partition = credited.accepted.partition
    with pytest.raises(ProjectionTimeoutError, match="has not applied"):
        projector.wait_for({partition: 10**9}, 0.5)


def test_an_adapter_upgrades_old_events_and_a_failing_event_is_dead_lettered(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    in_process: Callable[[Projector], Projector],
    tmp_path: Path,
) -> None:
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        partitions=2,
        topic_prefix=unique_name("t") + "-",
        data_dir=tmp_path / "data",
        session_timeout_ms=6000,
    )
    topics = settings.topics("account")
    apply(topics, {"bootstrap.servers": kafka_bootstrap})
    legacy = any_pb2.Any(type_url=f"type.googleapis.com/{LEGACY}", value=b"32")
    writer = EventWriter(kafka_bootstrap, topics)
    writer.write(
        event("a", 1, bank_pb2.AccountOpened(owner="Ann", balance=10)),
        event("a", 2, legacy),
        event("ghost", 1, bank_pb2.AccountCredited(amount=1)),  # no account: the handler raises
        event("a", 3, bank_pb2.AccountDebited(amount=2)),
    )
    adapters = EventAdapters()

    @adapters.adapter(LEGACY, packed=True)
    def legacy_credited(old: Message) -> Message:
        assert isinstance(old, any_pb2.Any)
        return bank_pb2.AccountCredited(amount=int(old.value.decode()))

    projector = in_process(Projector(balances, settings, adapters=adapters))
    _, ends = committed_and_ends(settings)
    projector.wait_for({p: end - 1 for p, end in ends.items() if end > 0}, 60)  # all of it
    assert balance_of(projector.store, "a") == BalanceRow(40, 3, 3, "Ann")
    assert balance_of(projector.store, "ghost") is None
    assert projector.stats.dead_letters == 1
    config = {"bootstrap.servers": kafka_bootstrap}
    [letter] = [decode_dead_letter(v) for _, _, v in read_topic(projector.dlq_topic, 1, config)]
    assert letter.reason == "HANDLER_ERROR" and "unknown account" in letter.error
    assert decode_event(letter.original_value).entity_id == "ghost"
    assert letter.topic == topics.events


def test_rebuild_from_a_time_replays_only_later_events(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        partitions=1,
        topic_prefix=unique_name("t") + "-",
        data_dir=tmp_path / "data",
        session_timeout_ms=6000,
    )
    topics = settings.topics("account")
    apply(topics, {"bootstrap.servers": kafka_bootstrap})
    writer = EventWriter(kafka_bootstrap, topics)
    writer.write(event("a", 1, bank_pb2.AccountOpened(owner="Ann", balance=1)))
    time.sleep(0.05)
    since = int(time.time() * 1000)
    time.sleep(0.05)
    writer.write(event("b", 1, bank_pb2.AccountOpened(owner="Bob", balance=2)))

    def run_until_idle() -> dict[str, BalanceRow]:
        projector = Projector(balances, settings)
        stop = threading.Event()
        thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
        thread.start()
        try:
            projector.wait_for({0: 3}, 60)  # a, marker, b, marker: offsets 0..3
            return {k: BalanceRow.decode(v) for k, v in projector.store.items()}
        finally:
            stop.set()
            thread.join(60)

    assert run_until_idle().keys() == {"a", "b"}
    store = RocksDBReadModelStore(store_path(balances, settings))
    try:
        restart = rebuild(balances, settings, store, from_timestamp_ms=since)
        assert restart == {(topics.events, 0): 2}
        assert list(store.items()) == []
    finally:
        store.close()
    assert run_until_idle() == {"b": BalanceRow(2, 1, 1, "Bob")}
