"""The process runner in this process, with an injected clock and stand-in events: no worker.

Events written as a worker would (one transaction each) drive the transfer process; the test
moves the runner's clock past the credit's deadline and checks the timer fires exactly once,
and that the commands the runner wrote carry the deterministic step ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from kes.examples.bank.transfers import transfer_process
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_command, type_name
from kes.streams.config.settings import Settings
from kes.streams.kafka.readback import read_topic
from kes.streams.processes.process import PROCESS_ID_KEY, PROCESS_KEY, STEP_KEY, command_id
from kes.streams.processes.runner import ProcessRunner
from kes.topology.admin import apply
from tests.fixtures.standins import EventWriter, event


def _commands(settings: Settings) -> list[tuple[str, str]]:
    topics = settings.topics("account")
    config = {"bootstrap.servers": settings.bootstrap_servers}
    found = []
    for _, _, value in read_topic(topics.commands, topics.partitions, config):
        env = decode_command(value, [])
        found.append((env.command_id, type_name(env.payload)))
    return found


def _settings(kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path) -> Settings:
    """Two partitions of the account and transfer topics, under a fresh prefix."""
    settings = Settings(
        bootstrap_servers=kafka_bootstrap, partitions=2, topic_prefix=unique_name("t") + "-",
        data_dir=tmp_path,
    )  # fmt: skip
    for aggregate in ("account", "transfer"):
        assert apply(settings.topics(aggregate), {"bootstrap.servers": kafka_bootstrap}).ok
    return settings


def test_a_due_timer_fires_once_by_the_injected_clock(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, unique_name, tmp_path)
    process = transfer_process(deadline_ms=10_000, grace_ms=1_000)
    now = [1_000_000]
    runner = ProcessRunner(process, settings, clock=lambda: now[0])
    runner.start()

    def cycles(n: int = 30) -> None:
        for _ in range(n):
            runner.poll(0.1)

    try:
        requested = event("t-1", 1, bank_pb2.TransferRequested(
            transfer_id="t-1", from_account="a", to_account="b", amount=7))  # fmt: skip
        requested.aggregate = "transfer"
        EventWriter(kafka_bootstrap, settings.topics("transfer")).write(requested)
        cycles()
        debit = command_id(process.name, "t-1", "debit")
        assert _commands(settings) == [(debit, "bank.v1.DebitAccount")]
        debited = event("a", 2, bank_pb2.AccountDebited(amount=7, balance=93))
        debited.aggregate = "account"
        debited.metadata.update(
            {PROCESS_KEY: process.name, PROCESS_ID_KEY: "t-1", STEP_KEY: "debit"}
        )
        EventWriter(kafka_bootstrap, settings.topics("account")).write(debited)
        cycles()
        credit = command_id(process.name, "t-1", "credit")
        assert [c for c, _ in _commands(settings)] == [debit, credit]
        now[0] += 10_999  # one ms before the timer is due: nothing
        cycles(5)
        assert len(_commands(settings)) == 2
        now[0] += 1
        cycles()
        now[0] += 60_000
        cycles()
        refund = command_id(process.name, "t-1", "refund")
        assert sorted(c for c, _ in _commands(settings)) == sorted([debit, credit, refund])
        assert runner.stats.timers == 1 and runner.stats.aborted == 0
    finally:
        runner.close()


def test_a_restarted_runner_fires_a_due_timer_over_sources_without_markers(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Events written without transactions (an at-least-once worker's) leave no commit marker:
    a restarted runner's committed offsets are then the partitions' ends, its positions stay
    unknown until a record comes, and it must still see that it has read everything."""
    settings = _settings(kafka_bootstrap, unique_name, tmp_path)
    process = transfer_process(deadline_ms=10_000, grace_ms=1_000)
    now = [1_000_000]
    runner = ProcessRunner(process, settings, clock=lambda: now[0])
    runner.start()
    try:
        requested = event("t-1", 1, bank_pb2.TransferRequested(
            transfer_id="t-1", from_account="a", to_account="b", amount=7))  # fmt: skip
        requested.aggregate = "transfer"
        EventWriter(kafka_bootstrap, settings.topics("transfer"), transactional=False).write(
            requested
        )
        debit = command_id(process.name, "t-1", "debit")
        _cycles_until(runner, lambda: len(_commands(settings)) == 1)
        debited = event("a", 2, bank_pb2.AccountDebited(amount=7, balance=93))
        debited.aggregate = "account"
        debited.metadata.update(
            {PROCESS_KEY: process.name, PROCESS_ID_KEY: "t-1", STEP_KEY: "debit"}
        )
        EventWriter(kafka_bootstrap, settings.topics("account"), transactional=False).write(debited)
        credit = command_id(process.name, "t-1", "credit")
        _cycles_until(runner, lambda: [c for c, _ in _commands(settings)] == [debit, credit])
    finally:
        runner.close()
    now[0] += 60_000  # the credit's deadline passed while no runner ran
    restarted = ProcessRunner(process, settings, clock=lambda: now[0])
    restarted.start()
    try:
        refund = command_id(process.name, "t-1", "refund")
        _cycles_until(restarted, lambda: refund in [c for c, _ in _commands(settings)])
        assert restarted.stats.timers == 1
    finally:
        restarted.close()


def _cycles_until(runner: ProcessRunner, done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not done after {timeout:.0f} s: {runner.stats}"
        for _ in range(10):
            runner.poll(0.1)
