"""Several projections in one process, its web views, and read-your-writes from another process.

The projection process is `kes projection run tests.fixtures.threeviews --all` (the bank's
balances, a copy of them under another name, and the large-transactions reactor); this test's
process sends commands and reads rows over HTTP with the replies' offsets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kes.examples.bank import account
from kes.examples.bank.projections import LARGE_AMOUNT, BalanceRow, balances
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import unpack
from kes.stores.readmodels import RocksDBReadModelStore
from kes.streams.client.after import read_after
from kes.streams.client.client import CommandClient
from kes.streams.client.reading import read_events
from kes.streams.config.settings import Settings
from kes.streams.operations.verify import verify
from kes.streams.projections.projection import AnyProjection
from kes.streams.projections.projector import store_path
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.groups import committed_and_ends
from tests.fixtures.metrics import samples
from tests.fixtures.threeviews import PROJECTIONS, copy
from tests.fixtures.workers import ROOT, AppCluster, free_port

APP = "tests.fixtures.threeviews"


class Host:
    """The projection process, its port and its side-effect file."""

    def __init__(self, env: dict[str, str], workdir: Path, names: tuple[str, ...] = ()) -> None:
        self.names = names or ("--all",)
        self.port = free_port()
        self.effects = workdir / "effects.txt"
        self.log = workdir / "projections.log"
        self.env = {
            **env,
            "KES_DATA_DIR": str(workdir / "data"),
            "KES_TEST_EFFECTS": str(self.effects),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Host:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kes.streams.cli", "projection", "run", APP, *self.names,
                 "--web-port", str(self.port), "--loglevel", "INFO"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while self.get("/health")[0] != 200:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the projections never became healthy"
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=70) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError):
            return 0, b""


@pytest.fixture
def host(
    app_cluster: Callable[..., AppCluster], tmp_path: Path
) -> Iterator[tuple[AppCluster, Host]]:
    cluster = app_cluster(APP, ["account"], partitions=2)
    cluster.worker("w1").wait_ready()
    running = Host(cluster.env(), tmp_path).start()
    try:
        yield cluster, running
    finally:
        if running.proc is not None and running.proc.poll() is None:
            running.kill()


def test_a_row_read_with_the_replys_offsets_from_another_process_sees_the_command(
    host: tuple[AppCluster, Host],
) -> None:
    cluster, web = host
    topics = cluster.settings.topics("account")
    with CommandClient(topics, cluster.settings.bootstrap_servers) as client:
        opened = client.ask("acc-web", bank_pb2.OpenAccount(owner="Wu", opening_balance=10), 30)
        status, body = web.get(
            f"/projections/account-balances/rows/acc-web?after={read_after(opened)}&timeout=30"
        )
        assert status == 200, body
        assert BalanceRow.decode(body).balance == 10
        for _ in range(5):  # each read right after its command: never the state before it
            credited = client.ask("acc-web", bank_pb2.CreditAccount(amount=7), 30)
            after = read_after(credited)
            status, body = web.get(
                f"/projections/balances-copy/rows/acc-web?after={after}&timeout=30"
            )
            assert status == 200, body
            assert BalanceRow.decode(body).revision == credited.accepted.revision
    assert BalanceRow.decode(body).balance == 10 + 5 * 7

    # the same from the command line: `kes send` says what to read with
    sent = subprocess.run(
        [sys.executable, "-m", "kes.streams.cli", "send", APP, "account", "acc-cli", "OpenAccount",
         '{"owner": "Cy", "opening_balance": 3}'],
        cwd=ROOT, env=web.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    (hint,) = [line for line in sent.stderr.splitlines() if "?after=" in line]
    status, body = web.get(f"/projections/account-balances/{hint.split('.../')[1]}&timeout=30")
    assert status == 200 and BalanceRow.decode(body).balance == 3

    assert web.get("/projections/account-balances/rows/nobody")[0] == 404
    assert web.get("/projections/no-such/rows/acc-web")[0] == 404
    assert web.get("/projections/account-balances/rows/acc-web?after=zero")[0] == 400
    assert (
        web.get("/projections/account-balances/rows/acc-web?after=0:99999999&timeout=1")[0] == 504
    )

    status, body = web.get("/health")
    assert status == 200 and json.loads(body)["running"] == {p.name: True for p in PROJECTIONS}
    _wait(lambda: _lags(web) == [0.0] * 6, "lag is not 0 on every partition")  # 3 x 2
    status, body = web.get("/metrics")
    metrics = samples(body.decode())
    for name in ("account-balances", "balances-copy"):
        assert metrics[f'kes_projection_events_applied_total{{projection="{name}"}}'] == 7
        assert metrics[f'kes_projection_running{{projection="{name}"}}'] == 1
        assert metrics[f'kes_projection_batch_seconds_count{{projection="{name}"}}'] >= 1


def test_three_projections_in_one_process_lose_nothing_through_two_sigkills(
    host: tuple[AppCluster, Host],
) -> None:
    cluster, web = host
    settings = cluster.settings
    topics = settings.topics("account")
    bootstrap = settings.bootstrap_servers
    commands = bank_commands(1500, accounts=40, seed=11)
    ids: list[str] = []
    for chunk in range(3):
        ids += produce(bootstrap, topics, commands[chunk * 500 : (chunk + 1) * 500])
        if chunk < 2:  # kill the process once it has applied some of the new events
            _wait(lambda: _applied(web) > 0, "no progress")
            web.kill()
            web.start()
    collect_replies(bootstrap, topics, ids, timeout=180)
    checked = verify(account, topics, {"bootstrap.servers": bootstrap})
    assert checked.ok, checked.summary()
    for projection in PROJECTIONS:
        _wait(lambda p=projection: _lag(settings, p) == 0, f"{projection.name} never caught up")
    web.kill()

    data = Settings.from_env(web.env)
    for projection in (balances, copy):
        rows = _rows(projection, data)
        assert rows.keys() == checked.states.keys()
        for entity, state in checked.states.items():
            assert isinstance(state, bank_pb2.Account)
            revision = checked.revisions[entity]
            assert rows[entity] == BalanceRow(state.balance, revision, revision, state.owner)

    large = set()
    for event in read_events(topics, bootstrap):
        payload = unpack(event.payload)
        moved = isinstance(payload, bank_pb2.AccountCredited | bank_pb2.AccountDebited)
        if moved and payload.amount >= LARGE_AMOUNT:
            large.add(f"{event.entity_id} {event.revision}")
    effects = Counter(" ".join(line.split()[:2]) for line in web.effects.read_text().splitlines())
    assert large and set(effects) == large  # every large movement reacted to, at least once
    assert max(effects.values()) <= 3  # again at most once per kill: the batch in flight


def _lags(web: Host) -> list[float]:
    metrics = samples(web.get("/metrics")[1].decode())
    return [v for k, v in metrics.items() if k.startswith("kes_projection_lag{")]


def _applied(web: Host) -> float:
    status, body = web.get("/metrics")
    if status != 200:
        return 0.0
    return sum(
        v
        for k, v in samples(body.decode()).items()
        if k.startswith("kes_projection_events_applied_total")
    )


def _wait(check: Callable[[], bool], failure: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


def _lag(settings: Settings, projection: AnyProjection) -> int:
    """The group's committed offsets against the log's end, summed over partitions."""
    committed, ends = committed_and_ends(settings, projection.group_id(settings.topic_prefix))
    return sum(end - max(0, committed.get(p, 0)) for p, end in ends.items())


def _rows(projection: AnyProjection, settings: Settings) -> dict[str, BalanceRow]:
    store = RocksDBReadModelStore(store_path(projection, settings), read_only=True)
    try:
        return {key: BalanceRow.decode(value) for key, value in store.items()}
    finally:
        store.close()
