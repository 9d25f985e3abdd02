"""Operating kes against the real broker: /lag and `kes lag` equal Kafka's consumer-groups tool,
transaction markers in the figures, /entities from a worker that does not own the entity,
/metrics counters that move, and the dashboard in headless Chromium.

One bank cluster (two workers, 4 partitions) serves the module; its known backlog is the
account-balances projection rewound to the beginning by `kes projection rebuild` (not running).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from kes.schemas.codec import unpack
from kes.schemas.kes.v1.envelopes_pb2 import Reply
from kes.streams.config.settings import Settings
from kes.streams.operations.groupoffsets import OffsetsReader
from kes.streams.operations.lag import LagTarget
from kes.topology.admin import apply
from kes.topology.localbroker import kafka_classpath
from kes.topology.partitioning import partition_for
from tests.fixtures.commands import bank_commands, collect_replies, produce
from tests.fixtures.workers import ROOT, AppCluster, WorkerProcess

TOOL = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
ARTIFACTS = ROOT / "test-artifacts"
BALANCES = "account-balances"

Row = tuple[int | None, int, int | None]
"""(committed, log end, lag) of one partition; None where the tool prints `-`."""


def kafka_tool(bootstrap: str, groups: list[str]) -> dict[tuple[str, str, int], Row]:
    """`kafka-consumer-groups --describe` for the groups: Kafka's own figures, parsed."""
    args = [a for g in groups for a in ("--group", g)]
    out = subprocess.run(
        ["java", "-cp", kafka_classpath(), TOOL, "--bootstrap-server", bootstrap,
         "--describe", *args],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    rows: dict[tuple[str, str, int], Row] = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) == 9 and cells[0] in groups and cells[2].isdigit():
            num = [None if c == "-" else int(c) for c in cells[3:6]]
            assert num[1] is not None
            rows[(cells[0], cells[1], int(cells[2]))] = (num[0], num[1], num[2])
    return rows


def get(url: str) -> tuple[int, Any]:
    """GET a JSON view: (status, body)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return str(resp.read().decode())


class Bank:
    """The module's cluster: settings, two workers, the replies so far."""

    def __init__(self, cluster: AppCluster, workers: list[WorkerProcess]) -> None:
        self.cluster = cluster
        self.settings = cluster.settings
        self.topics = cluster.settings.topics("account")
        self.workers = workers
        self.replies: dict[str, list[Reply]] = {}

    def run(self, n: int, seed: int) -> None:
        """Send n commands and wait for every reply (then the command group is at rest)."""
        bootstrap = self.settings.bootstrap_servers
        ids = produce(bootstrap, self.topics, bank_commands(n, accounts=20, seed=seed))
        self.replies.update(collect_replies(bootstrap, self.topics, ids))

    @property
    def balances_group(self) -> str:
        return f"{self.settings.topic_prefix}{BALANCES}"

    def url(self, worker: WorkerProcess, path: str) -> str:
        return f"http://127.0.0.1:{worker.web_port}{path}"


@pytest.fixture(scope="module")
def bank(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    token = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        partitions=4,
        topic_prefix=f"ops-{token}-",
        app_id=f"ops-app-{token}",
    )
    assert apply(settings.topics("account"), {"bootstrap.servers": kafka_bootstrap}).ok
    cluster = AppCluster("kes.examples.bank", settings, tmp_path_factory.mktemp("ops"))
    try:
        first, second = cluster.worker("w1"), cluster.worker("w2")
        deadline = time.monotonic() + 120
        while True:  # both ready, and the partitions split between them
            owned = [set(w.wait_ready(120)["partitions"]) for w in (first, second)]
            if all(owned) and len(owned[0] | owned[1]) == 4 and not owned[0] & owned[1]:
                break
            assert time.monotonic() < deadline, f"partitions never split: {owned}"
            time.sleep(0.5)
        bank = Bank(cluster, [first, second])
        bank.run(300, seed=3)
        rebuilt = subprocess.run(
            [sys.executable, "-m", "kes.streams.cli", "projection", "rebuild", "kes.examples.bank",
             BALANCES, "-b", kafka_bootstrap, "--topic-prefix", settings.topic_prefix,
             "--data-dir", str(cluster.workdir / "projection")],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert rebuilt.returncode == 0, rebuilt.stderr
        yield bank
    finally:
        cluster.close()


def test_lag_view_and_kes_lag_equal_the_kafka_tool_at_rest(bank: Bank) -> None:
    groups = [bank.settings.app_id, bank.balances_group]
    tool = kafka_tool(bank.settings.bootstrap_servers, groups)
    ours = {
        (bank.settings.app_id, bank.topics.commands),
        (bank.balances_group, bank.topics.events),
    }
    assert {(g, t) for g, t, _ in tool} == ours
    assert all(lag and lag > 0 for (g, _, _), (_, _, lag) in tool.items() if g in groups[1:])

    # /lag is the worker's latest sample (taken every few seconds): wait for one taken after
    # the fixture's rebuild reset the projection's group, then the figures must be equal.
    deadline = time.monotonic() + 30
    while True:
        status, body = get(bank.url(bank.workers[0], "/lag"))
        assert status == 200 and body["error"] is None
        view = {
            (g["group"], g["topic"], p["partition"]): (p["committed"], p["log_end"], p["lag"])
            for g in body["groups"]
            for p in g["partitions"]
            if g["group"] in groups
        }
        if all(view.get(key) == row for key, row in tool.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for key, row in tool.items():
        assert view[key] == row, key

    cli = subprocess.run(
        [sys.executable, "-m", "kes.streams.cli", "lag", "kes.examples.bank",
         "-b", bank.settings.bootstrap_servers, "--topic-prefix", bank.settings.topic_prefix,
         "--app-id", bank.settings.app_id],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    table: dict[tuple[str, str, int], Row] = {}
    for line in cli.stdout.splitlines()[1:]:
        cells = line.split()
        if cells[2].isdigit():
            n = [None if c == "-" else int(c) for c in cells[3:6]]
            assert n[1] is not None
            table[(cells[0], cells[1], int(cells[2]))] = (n[0], n[1], n[2])
    for key, row in tool.items():
        assert table[key] == row, key


def test_transaction_markers_count_in_lag_as_kafka_counts_them(kafka_bootstrap: str) -> None:
    """An idle read_committed group that commits its position shows lag 0 (past the commit
    marker); one that commits `last record + 1` shows lag 1 (the marker). Same as the tool."""
    topic = f"markers-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": topic})
    producer.init_transactions(30)
    for _ in range(3):
        producer.begin_transaction()
        for i in range(5):
            producer.produce(topic, b"v", b"k%d" % i, partition=0)
        producer.commit_transaction(30)
    groups = {"position": f"{topic}-position", "last": f"{topic}-last"}
    for how, group in groups.items():
        consumer = Consumer(
            {"bootstrap.servers": kafka_bootstrap, "group.id": group,
             "isolation.level": "read_committed", "enable.auto.commit": False,
             "auto.offset.reset": "earliest"}
        )  # fmt: skip
        consumer.assign([TopicPartition(topic, 0)])
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while len(records) < 15 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                records.append(msg)
        assert len(records) == 15
        assert records[-1].offset() == 16  # 15 records and 2 commit markers before it
        if how == "position":
            consumer.poll(1.0)  # the position moves past the trailing marker
            consumer.commit(asynchronous=False)
        else:
            consumer.commit(
                offsets=[TopicPartition(topic, 0, records[-1].offset() + 1)], asynchronous=False
            )
        consumer.close()
    readings = OffsetsReader({"bootstrap.servers": kafka_bootstrap}).read(
        [LagTarget(groups["position"], topic), LagTarget(groups["last"], topic)]
    )
    rows = [(r.partitions[0].committed, r.partitions[0].log_end) for r in readings]
    assert rows == [(18, 18), (17, 18)]  # the log end counts the three commit markers
    tool = kafka_tool(kafka_bootstrap, list(groups.values()))
    assert tool[(groups["position"], topic, 0)] == (18, 18, 0)
    assert tool[(groups["last"], topic, 0)] == (17, 18, 1)


def test_entities_answer_from_either_worker_with_the_owners_state(bank: Bank) -> None:
    last: dict[str, Reply] = {}
    for replies in bank.replies.values():
        reply = replies[0]
        if reply.WhichOneof("outcome") == "accepted" and (
            reply.entity_id not in last
            or reply.accepted.revision > last[reply.entity_id].accepted.revision
        ):
            last[reply.entity_id] = reply
    forwarded = 0
    for entity_id, reply in sorted(last.items()):
        expected = json_format.MessageToDict(
            unpack(reply.accepted.state), preserving_proto_field_name=True
        )
        for worker in bank.workers:
            status, body = get(bank.url(worker, f"/entities/account/{entity_id}"))
            assert status == 200, body
            assert body["revision"] == reply.accepted.revision
            assert body["state"] == expected
            assert body["partition"] == partition_for(entity_id, 4)
            if body["served_by"] != f"http://127.0.0.1:{worker.web_port}":
                forwarded += 1
    assert forwarded == len(last)  # each entity: one of the two workers forwarded
    status, body = get(bank.url(bank.workers[0], "/entities/account/no-such-account"))
    assert status == 404 and body["revision"] == 0
    status, body = get(bank.url(bank.workers[1], "/entities/nope/x"))
    assert status == 404


def _sums(worker_text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(worker_text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def test_metrics_parse_and_counters_move_as_commands_flow(bank: Bank) -> None:
    before = [_sums(text(bank.url(w, "/metrics"))) for w in bank.workers]
    bank.run(100, seed=9)
    after = [_sums(text(bank.url(w, "/metrics"))) for w in bank.workers]

    def moved(name: str) -> float:
        return sum(a.get(name, 0.0) - b.get(name, 0.0) for a, b in zip(after, before, strict=True))

    assert moved("kes_commands_total") == 100
    assert moved("kes_commands_accepted_total") + moved("kes_commands_rejected_total") == 100
    assert moved("kes_events_written_total") == moved("kes_commands_accepted_total")
    assert moved("kes_command_seconds_count") == 100
    assert moved("kes_command_age_seconds_count") == 100
    assert moved("kes_commands_per_cycle_sum") == 100
    assert moved("kes_commands_per_cycle_count") >= 1
    assert sum(a["kes_entities_cached"] for a in after) > 0
    assert sum(a["kes_outcomes_stored"] for a in after) >= 100  # every command decided is kept
    assert all(a["kes_ready"] == 1 for a in after)
    assert sum(a["kes_partitions_recovered"] for a in after) == 4
    families = {
        f.name for f in text_string_to_metric_families(text(bank.url(bank.workers[0], "/metrics")))
    }
    assert {"kes_consumer_lag", "kes_log_end_offset", "kes_dead_letter_records"} <= families


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browse(browser: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,1500",
         "--virtual-time-budget=8000", *extra, url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_dashboard_shows_the_partitions_and_lag_of_a_known_backlog(
    bank: Bank, tmp_path: Path
) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium package)")
    reader = OffsetsReader({"bootstrap.servers": bank.settings.bootstrap_servers})
    backlog = reader.read([LagTarget(bank.balances_group, bank.topics.events)])[0]
    expected = {p.partition: p.log_end - (p.committed or 0) for p in backlog.partitions}
    assert sum(expected.values()) > 0
    url = bank.url(bank.workers[1], "/")
    dom = ""
    for attempt in range(5):  # the first polls may find no history yet: retry patiently
        dom = _browse(browser, url, tmp_path / f"profile-{attempt}", "--dump-dom").stdout
        if 'data-loaded="true"' in dom and f'data-group="{bank.balances_group}"' in dom:
            break
        time.sleep(2)
    assert 'data-loaded="true"' in dom, dom[:2000]
    section = dom.split(f'data-group="{bank.balances_group}"', 1)[1].split("</section>", 1)[0]
    for partition, lag in expected.items():
        assert f'data-partition="{partition}" data-lag="{lag}"' in section, section[:3000]
    commands = dom.split(f'data-group="{bank.settings.app_id}"', 1)[1].split("</section>", 1)[0]
    for partition in range(4):
        assert f'data-partition="{partition}" data-lag="0"' in commands
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    _browse(browser, url, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000
