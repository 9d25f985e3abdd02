"""The transfer process on a real broker: exactly once through SIGKILLs, and its deadline.

Smoke: a few hundred transfers between 50 accounts (some from or to closed or unknown
accounts), the process runner and a worker each SIGKILLed once under a supervisor; then the sum
of all balances is unchanged, each transfer ended exactly once in the transfer aggregate's log
and in the process's records, `verify` passes on both aggregates, nothing is stuck.
KES_TRANSFERS=2000 KES_TRANSFER_ACCOUNTS=200 runs the bigger version.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from examples.bank.domain import account
from examples.bank.transfers import transfer, transfers
from schemas.bank.v1 import bank_pb2
from schemas.codec import decode_event, unpack
from schemas.kes.v1.processes_pb2 import COMPENSATED, COMPLETED, RUNNING, ProcessRecord
from streams.process import ProcessManager, command_id
from streams.process_status import read_processes, summarize
from streams.process_topics import ProcessTopics
from streams.verify import read_topic, verify
from tests.apps.quick_transfers import PROCESSES as QUICK
from tests.fixtures.commands import collect_replies, produce
from tests.fixtures.workers import AppCluster, Supervisor

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
    cluster: AppCluster, process: ProcessManager[Any], ids: list[str], timeout: float
) -> dict[str, ProcessRecord]:
    deadline = time.monotonic() + timeout
    while True:
        records = _records(cluster, process)
        open_ = [i for i in ids if i not in records or records[i].status == RUNNING]
        if not open_ or time.monotonic() > deadline:
            assert not open_, f"{len(open_)} of {len(ids)} transfers not ended, e.g. {open_[:3]}"
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
    cluster = app_cluster("examples.bank.transfers", ["account", "transfer"], partitions=4)
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
        records = _wait_ended(cluster, transfers, transfer_ids, timeout=240 + n / 10)
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


def _partitions_of(worker: Any) -> set[int]:
    health = worker.health() or {}
    return {int(p.rsplit(":", 1)[1]) for p in health.get("partitions", []) if "account" in p}


def _on(partitions: set[int], prefix: str, count: int = 4) -> str:
    from topology.partitioning import partition_for

    for i in range(1000):
        candidate = f"{prefix}-{i}"
        if partition_for(candidate, count) in partitions:
            return candidate
    raise AssertionError(f"no id on {partitions}")


@pytest.mark.skipif(not QUICK, reason="needs the quick transfers app")
def test_a_credit_past_its_deadline_is_refunded_once_even_across_a_runner_kill(
    app_cluster: Callable[..., AppCluster],
) -> None:
    process = QUICK[0]
    cluster = app_cluster("tests.apps.quick_transfers", ["account", "transfer"], partitions=4)
    w1 = cluster.worker("w1")
    w1.wait_ready(120)
    w2 = cluster.worker("w2", KES_SESSION_TIMEOUT_MS="30000")
    w2.wait_ready(120)
    deadline = time.monotonic() + 60
    while not (_partitions_of(w1) and _partitions_of(w2)) and time.monotonic() < deadline:
        time.sleep(0.5)
    mine, theirs = _partitions_of(w1), _partitions_of(w2)
    assert mine and theirs, (mine, theirs)
    sender, receiver = _on(mine, "a"), _on(theirs, "b")
    transfer_id = _on(mine, "t")
    _open(cluster, [sender, receiver], [])
    runner = cluster.process_runner(process.name)
    w2.kill()  # the receiver's partition is not served for the next 30 s
    money = bank_pb2.TransferMoney(from_account=sender, to_account=receiver, amount=40)
    produce(cluster.settings.bootstrap_servers, cluster.settings.topics("transfer"),
            [(transfer_id, money)])  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the credit is sent: its timer is pending
        record = _records(cluster, process).get(transfer_id)
        if record is not None and record.timers:
            break
        time.sleep(0.2)
    assert record is not None and record.timers, record
    runner.kill()
    time.sleep(5)  # past the timer's due time
    runner.start()
    records = _wait_ended(cluster, process, [transfer_id], timeout=60)
    record = records[transfer_id]
    assert record.status == COMPENSATED, record
    state = unpack(record.state)
    assert "no answer" in state.reason, state  # type: ignore[attr-defined]
    w2.start()  # the expired credit is now decided: refused, never applied
    w2.wait_ready(120)
    refund = command_id(process.name, transfer_id, "refund")
    credit = command_id(process.name, transfer_id, "credit")
    end = time.monotonic() + 60
    while True:
        states = _check_money(cluster, 2)
        late = _records(cluster, process)[transfer_id]
        if late.late_inputs or time.monotonic() > end:
            break
        time.sleep(1)
    assert late.late_inputs == 1, late  # the credit's refusal arrived after the end
    assert states[sender].balance == OPENING and states[receiver].balance == OPENING  # type: ignore[attr-defined]
    topics = cluster.settings.topics("account")
    applied = Counter(
        decode_event(value).command_id
        for _, _, value in read_topic(topics.events, topics.partitions, _config(cluster))
    )
    assert applied[refund] == 1 and applied[credit] == 0, applied
    assert _ends(cluster) == {transfer_id: ["bank.v1.TransferCompensated"]}
