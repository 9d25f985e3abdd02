"""`kes send` and `kes events` against a real broker, through their argparse handlers.

Topic names carry a unique prefix (`--topic-prefix`), which also checks that commands name the
behavior (`account`), not the prefixed topic stem, as the worker expects.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_command, unpack
from kes.schemas.errors import CommandTimeoutError
from kes.streams.cli.console import EXIT_REJECTED, register
from kes.topology.admin import apply
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.standins import EventWriter, Responder, event, headers_of

PARTITIONS = 3


@pytest.fixture
def prefix(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> str:
    return unique_name("cli") + "."


@pytest.fixture
def topics(kafka_bootstrap: str, prefix: str) -> AggregateTopics:
    declared = AggregateTopics(prefix + "account", partitions=PARTITIONS)
    apply(declared, {"bootstrap.servers": kafka_bootstrap})
    return declared


@pytest.fixture
def kes(kafka_bootstrap: str, prefix: str, topics: AggregateTopics) -> Callable[..., int]:
    root = argparse.ArgumentParser(prog="kes")
    register(root.add_subparsers(dest="command", required=True))
    connection = ["-b", kafka_bootstrap, "--partitions", str(PARTITIONS), "--topic-prefix", prefix]

    def run(*argv: str) -> int:
        args = root.parse_args([*argv, *connection])
        code: int = args.handler(args)
        return code

    return run


@pytest.fixture
def responder(kafka_bootstrap: str, topics: AggregateTopics) -> Iterator[Responder]:
    running = Responder(kafka_bootstrap, topics)
    yield running
    running.stop()


def commands_on(bootstrap: str, topics: AggregateTopics, count: int) -> list[Message]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": 0})
    consumer.assign([TopicPartition(topics.commands, p, 0) for p in range(PARTITIONS)])
    records: list[Message] = []
    for _ in range(60):
        records += [r for r in consumer.consume(100, 0.5) if not r.error()]
        if len(records) >= count:
            break
    consumer.close()
    return records


def test_send_no_wait_prints_the_command_id(
    kes: Callable[..., int],
    kafka_bootstrap: str,
    topics: AggregateTopics,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = kes(
        "send", "kes.examples.bank", "account", "acc-1", "bank.v1.OpenAccount",
        '{"owner": "Ann", "openingBalance": "100"}', "--no-wait", "--expected-revision", "0",
        "--command-id", "open-acc-1",
    )  # fmt: skip
    assert code == 0
    command_id = capsys.readouterr().out.strip()
    assert command_id == "open-acc-1"
    [record] = commands_on(kafka_bootstrap, topics, 1)
    env = decode_command(record.value(), headers_of(record))
    assert env.command_id == command_id
    assert env.aggregate == "account"
    assert env.expected_revision == 0
    assert record.partition() == partition_for("acc-1", PARTITIONS)
    assert unpack(env.payload) == bank_pb2.OpenAccount(owner="Ann", opening_balance=100)


def test_send_waits_and_prints_the_reply(
    kes: Callable[..., int], responder: Responder, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        kes("send", "kes.examples.bank", "account", "acc-1", "CreditAccount", '{"amount": 7}') == 0
    )
    reply = json.loads(capsys.readouterr().out)
    assert reply["entityId"] == "acc-1"
    assert reply["accepted"]["state"] == {
        "@type": "type.googleapis.com/bank.v1.Account",
        "accountId": "acc-1",
        "balance": "7",
        "open": True,
    }
    code = kes("send", "kes.examples.bank", "account", "acc-1", "DebitAccount", '{"amount": 1}')
    assert code == EXIT_REJECTED
    assert json.loads(capsys.readouterr().out)["rejected"]["code"] == "VALIDATION"


def test_send_times_out_without_a_worker(kes: Callable[..., int]) -> None:
    with pytest.raises(CommandTimeoutError):
        kes(
            "send", "kes.examples.bank", "account", "acc-1", "CreditAccount", "{}", "--timeout", "1"
        )


def test_send_file_sends_every_line_in_order(
    kes: Callable[..., int],
    kafka_bootstrap: str,
    topics: AggregateTopics,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = ["# a comment", ""]
    for i in range(300):
        if i % 2:
            lines.append(f'acc-{i % 7} CreditAccount {{"amount": {i}}}')
        else:
            obj = {"entity": f"acc-{i % 7}", "type": "CreditAccount", "command": {"amount": i}}
            lines.append(json.dumps(obj))
    path = tmp_path / "commands.txt"
    path.write_text("\n".join(lines) + "\n")
    assert kes("send", "kes.examples.bank", "account", "--file", str(path)) == 0
    captured = capsys.readouterr()
    assert f"sent 300 command(s) to {topics.commands}" in captured.out
    assert "sent 300" in captured.err
    records = commands_on(kafka_bootstrap, topics, 300)
    amounts: dict[str, list[int]] = {}
    for record in records:
        env = decode_command(record.value(), headers_of(record))
        amounts.setdefault(env.entity_id, []).append(unpack(env.payload).amount)  # type: ignore[attr-defined]
    assert sum(len(a) for a in amounts.values()) == 300
    for entity, seen in amounts.items():
        assert seen == [i for i in range(300) if f"acc-{i % 7}" == entity]


def test_events_prints_text_and_json_lines(
    kes: Callable[..., int],
    kafka_bootstrap: str,
    topics: AggregateTopics,
    capsys: pytest.CaptureFixture[str],
) -> None:
    writer = EventWriter(kafka_bootstrap, topics)
    writer.write(
        event("acc-1", 1, bank_pb2.AccountOpened(account_id="acc-1", owner="Ann", balance=5)),
        event("acc-2", 1, bank_pb2.AccountOpened(account_id="acc-2", owner="Bob")),
        event("acc-1", 2, bank_pb2.AccountCredited(account_id="acc-1", amount=3, balance=8)),
    )
    assert kes("events", "kes.examples.bank", "account", "--entity", "acc-1") == 0
    assert capsys.readouterr().out.splitlines() == [
        'acc-1@1 AccountOpened account_id: "acc-1" owner: "Ann" balance: 5',
        'acc-1@2 AccountCredited account_id: "acc-1" amount: 3 balance: 8',
    ]
    assert kes("events", "kes.examples.bank", "account", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((r["entityId"], r["revision"]) for r in rows) == [
        ("acc-1", "1"),
        ("acc-1", "2"),
        ("acc-2", "1"),
    ]
    assert {r["payload"]["@type"] for r in rows} >= {"type.googleapis.com/bank.v1.AccountOpened"}
