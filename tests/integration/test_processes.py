"""The transfer process on a real broker: exactly once through SIGKILLs, and its deadline.

Smoke: a few hundred transfers between 50 accounts (some from or to closed or unknown
accounts), the process runner and a worker each SIGKILLed once under a supervisor; then the sum
of all balances is unchanged, each transfer ended exactly once in the transfer aggregate's log
and in the process's records, `verify` passes on both aggregates, nothing is stuck.
KES_TRANSFERS=2000 KES_TRANSFER_ACCOUNTS=200 runs the bigger version.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from kes.examples.bank.domain import account
from kes.examples.bank.transfers import transfer, transfers
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_event, unpack
from kes.schemas.kes.v1.processes_pb2 import (
    COMPENSATED,
    COMPLETED,
    RUNNING,
    ProcessRecord,
    ProcessStatus,
)
from kes.streams.kafka.readback import read_topic
from kes.streams.operations.verify import verify
from kes.streams.processes.process import ProcessManager, command_id
from kes.streams.processes.status import read_processes, summarize
from kes.streams.processes.topics import ProcessTopics
from tests.apps.quick_transfers import PROCESSES as QUICK
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.metrics import samples
from tests.fixtures.workers import AppCluster, Supervisor, WorkerProcess

OPENING = 1_000


def _config(cluster: AppCluster) -> dict[str, str]:
    return {"bootstrap.servers": cluster.settings.bootstrap_servers}


def _open(cluster: AppCluster, ids: list[str], closed: list[str]) -> None:
    topics = cluster.settings.topics("account")
    opened = [(a, bank_pb2.OpenAccount(owner=a, opening_balance=OPENING)) for a in ids]
    sent = produce(cluster.settings.bootstrap_servers, topics, opened)
    collect_replies(cluster.settings.bootstrap_servers, topics, sent, timeout=120)
    shut = [(a, bank_pb2.CloseAccount()) for a in closed]
    sent = produce(cluster.settings.bootstrap_servers, topics, shut)
    collect_replies(cluster.settings.bootstrap_servers, topics, sent, timeout=120)


def _records(cluster: AppCluster, process: ProcessManager[Any]) -> dict[str, ProcessRecord]:
    return read_processes(ProcessTopics.of(process, cluster.settings), _config(cluster))


def _wait_ended(
    cluster: AppCluster,
    process: ProcessManager[Any],
    ids: list[str],
    timeout: float,
    supervisor: Supervisor | None = None,
) -> dict[str, ProcessRecord]:
    deadline = time.monotonic() + timeout
    while True:
        records = _records(cluster, process)
        open_ = [i for i in ids if i not in records or records[i].status == RUNNING]
        if not open_ or time.monotonic() > deadline:
            exits = Counter((e.name, e.code) for e in supervisor.exits) if supervisor else {}
            assert not open_, (
                f"{len(open_)} of {len(ids)} transfers not ended, e.g. {open_[:3]}; "
                f"exits (name, code): {dict(exits)}\n{cluster.complaints()}"
            )
            return records
        time.sleep(1)


def _ends(cluster: AppCluster) -> dict[str, list[str]]:
    """Per transfer id, the end events in the transfer aggregate's log."""
    topics = cluster.settings.topics("transfer")
    ends: dict[str, list[str]] = {}
    for _, _, value in read_topic(topics.events, topics.partitions, _config(cluster)):
        event = decode_event(value)
        if event.event_type != "bank.v1.TransferRequested":
            ends.setdefault(event.entity_id, []).append(event.event_type)
    return ends


def _check_money(cluster: AppCluster, accounts: int) -> dict[str, Any]:
    checked = verify(account, cluster.settings.topics("account"), _config(cluster))
    assert checked.ok, checked.summary()
    total = sum(state.balance for state in checked.states.values())  # type: ignore[attr-defined]
    opened = [s for s in checked.states.values() if s.owner]  # type: ignore[attr-defined]
    assert len(opened) == accounts
    assert total == accounts * OPENING, f"money created or lost: {total - accounts * OPENING}"
    transfers_checked = verify(transfer, cluster.settings.topics("transfer"), _config(cluster))
    assert transfers_checked.ok, transfers_checked.summary()
    return checked.states


def test_transfers_end_exactly_once_through_sigkills(
    app_cluster: Callable[..., AppCluster],
) -> None:
    n = int(os.environ.get("KES_TRANSFERS", "300"))
    accounts = int(os.environ.get("KES_TRANSFER_ACCOUNTS", "50"))
    cluster = app_cluster("kes.examples.bank.transfers", ["account", "transfer"], partitions=4)
    ids = [f"acc-{i:03d}" for i in range(accounts)]
    closed = ids[-3:]
    rng = random.Random(11)
    with Supervisor() as supervisor:
        worker = cluster.worker("w1")
        supervisor.worker(worker)
        worker.wait_ready(120)
        _open(cluster, ids, closed)
        runner = cluster.process_runner(transfers.name)
        supervisor.worker(runner)
        targets = [*ids, "acc-unknown-1", "acc-unknown-2"]
        wanted: list[tuple[str, Any]] = []
        for i in range(n):
            source, target = rng.sample(targets if rng.random() < 0.1 else ids, 2)
            money = bank_pb2.TransferMoney(
                from_account=source, to_account=target, amount=rng.randint(1, 300)
            )
            wanted.append((f"tr-{i:05d}", money))
        topics = cluster.settings.topics("transfer")
        third = len(wanted) // 3
        produce(cluster.settings.bootstrap_servers, topics, wanted[:third])
        time.sleep(2)
        runner.kill()  # the supervisor restarts it
        produce(cluster.settings.bootstrap_servers, topics, wanted[third : 2 * third])
        time.sleep(2)
        worker.kill()
        produce(cluster.settings.bootstrap_servers, topics, wanted[2 * third :])
        transfer_ids = [t for t, _ in wanted]
        records = _wait_ended(cluster, transfers, transfer_ids, 240 + n / 10, supervisor)
    assert {e.name for e in supervisor.exits} >= {"w1", "r1"}
    ends = _ends(cluster)
    twice = {t: e for t, e in ends.items() if len(e) != 1}
    assert not twice, f"transfers not ended exactly once: {list(twice.items())[:3]}"
    assert set(ends) == set(transfer_ids)
    statuses = Counter(records[t].status for t in transfer_ids)
    assert statuses[COMPLETED] + statuses[COMPENSATED] == n, statuses
    assert statuses[COMPLETED] and statuses[COMPENSATED], statuses
    for t in transfer_ids:  # the process's end and the aggregate's agree
        expected = "bank.v1.TransferCompleted" if records[t].status == COMPLETED else (
            "bank.v1.TransferCompensated")  # fmt: skip
        assert ends[t] == [expected], (t, ends[t])
    _check_money(cluster, accounts)
    summary = summarize(records, time.time_ns() // 1_000_000, 60_000)
    assert summary.stuck == [] and summary.by_status["RUNNING"] == 0
    # the runner's own views say the same (its counts are refreshed every 10 s)
    ended = f'kes_process_processes{{process="{transfers.name}",status="RUNNING"}}'
    _until("no process running in the metrics", lambda: _metrics(runner).get(ended, 1) == 0, 30)
    metrics = _metrics(runner)
    assert metrics[f'kes_process_stuck{{process="{transfers.name}"}}'] == 0
    assert metrics[f'kes_process_partitions{{process="{transfers.name}"}}'] == 4
    shown = _get(runner, f"/processes/{transfer_ids[0]}")
    assert shown["record"]["processId"] == transfer_ids[0]
    assert shown["record"]["status"] == ProcessStatus.Name(records[transfer_ids[0]].status)
    began = min(records[t].started_ms for t in transfer_ids)
    seconds = (max(records[t].ended_ms for t in transfer_ids) - began) / 1000
    print(f"{n} transfers ended in {seconds:.1f} s ({n / seconds:.0f}/s, with two SIGKILLs): "
          f"{statuses[COMPLETED]} completed, {statuses[COMPENSATED]} compensated")  # fmt: skip


def _get(process: WorkerProcess, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{process.web_port}{path}", timeout=30) as r:
        return json.loads(r.read())


def _metrics(process: WorkerProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{process.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as answer:
        return samples(answer.read().decode())


def _applied(cluster: AppCluster) -> Counter[str]:
    """How many events each command id wrote to the account aggregate's log."""
    topics = cluster.settings.topics("account")
    return Counter(
        decode_event(value).command_id
        for _, _, value in read_topic(topics.events, topics.partitions, _config(cluster))
    )


def _until(what: str, check: Callable[[], object], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            assert found, f"timed out waiting until {what}"
            return found
        time.sleep(0.2)


@pytest.mark.long  # make chaos runs it (CI time)
def test_a_credit_past_its_deadline_is_refunded_once_even_across_a_runner_kill(
    app_cluster: Callable[..., AppCluster],
) -> None:
    """Each step waits for the one before, with the worker and the runner taking turns being
    down: the debit applies, then the credit is sent to a stopped worker; the runner is killed
    with the credit's timer pending and comes back after its due time; the timer fires once and
    refunds the sender; the restarted worker refuses the expired credit."""
    process = QUICK[0]
    cluster = app_cluster("tests.apps.quick_transfers", ["account", "transfer"], partitions=4)
    worker = cluster.worker("w1")
    worker.wait_ready(120)
    _open(cluster, ["a", "b"], [])
    money = bank_pb2.TransferMoney(from_account="a", to_account="b", amount=40)
    topics = cluster.settings.topics("transfer")
    collect_replies(
        cluster.settings.bootstrap_servers,
        topics,
        produce(cluster.settings.bootstrap_servers, topics, [("t-1", money)]),
    )
    worker.kill()
    debit, credit, refund = (
        command_id(process.name, "t-1", s) for s in ("debit", "credit", "refund")
    )

    def record() -> ProcessRecord | None:
        return _records(cluster, process).get("t-1")

    runner = cluster.process_runner(process.name)
    _until("the debit is sent", lambda: (r := record()) and r.steps)
    runner.kill()
    worker.start().wait_ready(120)
    _until("the debit applies", lambda: _applied(cluster)[debit])
    worker.kill()
    runner.start()
    pending = _until("the credit's timer is set", lambda: (r := record()) and r.timers and r)
    runner.kill()
    time.sleep(max(0.0, pending.timers[0].due_ms / 1000 - time.time()) + 1)  # past due
    runner.start()
    _until("the timer fired", lambda: (r := record()) and not r.timers and len(r.steps) == 3)
    worker.start().wait_ready(120)
    ended = _until("the transfer ends", lambda: (r := record()) and r.status != RUNNING and r)
    assert ended.status == COMPENSATED, ended
    state = unpack(ended.state)
    assert "no answer" in state.reason, state  # type: ignore[attr-defined]
    applied = _until("the refund applies", lambda: (a := _applied(cluster))[refund] and a)
    assert applied[debit] == 1 and applied[refund] == 1 and applied[credit] == 0, applied
    states = _check_money(cluster, 2)
    assert states["a"].balance == OPENING and states["b"].balance == OPENING  # type: ignore[attr-defined]
    assert _ends(cluster) == {"t-1": ["bank.v1.TransferCompensated"]}
    assert runner.proc is not None and runner.proc.poll() is None
