"""The command clients against a real broker.

No worker exists in these tests: a small responder thread stands in for it, reading the commands
topic and writing one `Reply` per command that wants one, transactionally, to the replies topic in
the command's partition, as the worker does. It only lets the tests check how clients send
commands and match replies to them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import (
    JSON,
    PROTOBUF,
    content_type_of,
    decode_command,
    unpack_as,
)
from kes.schemas.errors import CommandTimeoutError, ConfigurationError, KesError, TopologyError
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode, Reply
from kes.streams.client.client import AsyncCommandClient, CommandClient, outcome, state_of
from kes.topology.admin import apply
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.fixtures.standins import Responder, headers_of

PARTITIONS = 6


@pytest.fixture
def topics(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> AggregateTopics:
    declared = AggregateTopics(unique_name("acct"), partitions=PARTITIONS)
    apply(declared, {"bootstrap.servers": kafka_bootstrap})
    return declared


@pytest.fixture
def responder(kafka_bootstrap: str, topics: AggregateTopics) -> Iterator[Responder]:
    running = Responder(kafka_bootstrap, topics)
    yield running
    running.stop()


def read_all(bootstrap: str, topic: str, partitions: int, count: int) -> list[Message]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    records: list[Message] = []
    deadline = time.monotonic() + 30
    while len(records) < count and time.monotonic() < deadline:
        records += [r for r in consumer.consume(100, 0.5) if not r.error()]
    consumer.close()
    return records


def test_send_puts_the_command_on_its_entity_partition(
    kafka_bootstrap: str, topics: AggregateTopics
) -> None:
    entities = [f"acc-{i}" for i in range(20)]
    sent: dict[str, tuple[str, str]] = {}
    with CommandClient(topics, kafka_bootstrap) as client:
        for i, entity in enumerate(entities):
            content_type = JSON if i % 2 else PROTOBUF
            command_id = client.send(
                entity,
                bank_pb2.CreditAccount(account_id=entity, amount=i + 1),
                expected_revision=i,
                correlation_id=f"corr-{i}",
                metadata={"user": "alice"},
                content_type=content_type,
            )
            sent[command_id] = (entity, content_type)
        given_id = client.send("acc-0", bank_pb2.DebitAccount(amount=1), command_id="mine")
        assert given_id == "mine"

    records = read_all(kafka_bootstrap, topics.commands, PARTITIONS, len(entities) + 1)
    assert len(records) == len(entities) + 1
    for record in records:
        env = decode_command(record.value(), headers_of(record))
        if env.command_id == "mine":
            assert not env.HasField("expected_revision")
            assert env.correlation_id == "mine"
            continue
        entity, content_type = sent[env.command_id]
        i = entities.index(entity)
        assert record.key() == entity.encode()
        assert record.partition() == partition_for(entity, PARTITIONS)
        assert content_type_of(headers_of(record)) == content_type
        assert env.entity_id == entity
        assert env.aggregate == topics.name
        assert not env.reply_wanted
        assert env.expected_revision == i
        assert env.correlation_id == f"corr-{i}"
        assert dict(env.metadata) == {"user": "alice"}
        assert env.timestamp.seconds > 0
        assert unpack_as(env.payload, bank_pb2.CreditAccount).amount == i + 1


def test_ask_returns_the_reply_to_its_command(
    kafka_bootstrap: str, topics: AggregateTopics, responder: Responder
) -> None:
    with CommandClient(topics, kafka_bootstrap) as client:
        reply = client.ask("acc-1", bank_pb2.OpenAccount(owner="Ann", opening_balance=50))
        assert outcome(reply) == "accepted"
        assert reply.entity_id == "acc-1"
        assert reply.accepted.partition == partition_for("acc-1", PARTITIONS)
        state = state_of(reply, bank_pb2.Account)
        assert state is not None
        assert state.balance == 50

        rejected = client.ask("acc-1", bank_pb2.DebitAccount(amount=5), command_id="debit-1")
        assert rejected.command_id == "debit-1"
        assert outcome(rejected) == "rejected"
        assert rejected.rejected.code == RejectionCode.VALIDATION
        assert state_of(rejected, bank_pb2.Account) is None

        as_json = client.ask("acc-2", bank_pb2.CreditAccount(amount=7), content_type=JSON)
        assert state_of(as_json, bank_pb2.Account) == bank_pb2.Account(
            account_id="acc-2", balance=7, open=True
        )


def test_a_thousand_concurrent_asks_from_one_async_client(
    kafka_bootstrap: str, topics: AggregateTopics, responder: Responder
) -> None:
    async def main() -> list[tuple[int, Reply]]:
        async with AsyncCommandClient(topics, kafka_bootstrap) as client:

            async def one(i: int) -> tuple[int, Reply]:
                command = bank_pb2.CreditAccount(amount=i + 1)
                return i, await client.ask(f"acc-{i % 97}", command, timeout=60)

            return await asyncio.gather(*(one(i) for i in range(1000)))

    results = asyncio.run(main())
    assert len(results) == 1000
    for i, reply in results:
        assert reply.entity_id == f"acc-{i % 97}"
        assert state_of(reply, bank_pb2.Account) == bank_pb2.Account(
            account_id=f"acc-{i % 97}", balance=i + 1, open=True
        )


def test_a_thousand_concurrent_asks_from_threads_share_one_sync_client(
    kafka_bootstrap: str, topics: AggregateTopics, responder: Responder
) -> None:
    with CommandClient(topics, kafka_bootstrap) as client:

        def one(i: int) -> tuple[int, Reply]:
            return i, client.ask(f"acc-{i % 31}", bank_pb2.CreditAccount(amount=i + 1), 60)

        with ThreadPoolExecutor(max_workers=100) as pool:
            results = list(pool.map(one, range(1000)))
    for i, reply in results:
        state = state_of(reply, bank_pb2.Account)
        assert state is not None
        assert (reply.entity_id, state.balance) == (f"acc-{i % 31}", i + 1)


def test_two_concurrent_asks_with_one_command_id_are_both_answered(
    kafka_bootstrap: str, topics: AggregateTopics, responder: Responder
) -> None:
    with CommandClient(topics, kafka_bootstrap) as client:

        def one(_: int) -> Reply:
            return client.ask("acc-1", bank_pb2.CreditAccount(amount=1), 30, command_id="same")

        with ThreadPoolExecutor(max_workers=2) as pool:
            replies = list(pool.map(one, range(2)))
    assert [r.command_id for r in replies] == ["same", "same"]


def test_each_client_reads_only_the_replies_partition_its_commands_name(
    kafka_bootstrap: str, topics: AggregateTopics, responder: Responder
) -> None:
    with (
        CommandClient(topics, kafka_bootstrap, reply_partition=2) as first,
        CommandClient(topics, kafka_bootstrap, reply_partition=5) as second,
    ):
        for i in range(20):  # entities on every commands partition
            assert outcome(first.ask(f"acc-{i}", bank_pb2.CreditAccount(amount=1))) == "accepted"
            assert outcome(second.ask(f"acc-{i}", bank_pb2.CreditAccount(amount=1))) == "accepted"
        assert [c._core.router().partitions for c in (first, second)] == [[2], [5]]
    replies = read_all(kafka_bootstrap, topics.replies, PARTITIONS, 40)
    by_partition = {r.partition() for r in replies}
    assert by_partition == {2, 5}


def test_a_reply_partition_outside_the_topic_is_a_configuration_error(
    kafka_bootstrap: str, topics: AggregateTopics
) -> None:
    with pytest.raises(ConfigurationError, match="reply_partition 6"):
        CommandClient(topics, kafka_bootstrap, reply_partition=PARTITIONS)


def test_ask_without_a_worker_times_out(kafka_bootstrap: str, topics: AggregateTopics) -> None:
    with CommandClient(topics, kafka_bootstrap) as client:
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError) as caught:
            client.ask("acc-1", bank_pb2.CreditAccount(amount=1), timeout=2, command_id="lost")
        assert 2 <= time.monotonic() - started < 5
        assert (caught.value.command_id, caught.value.entity_id) == ("lost", "acc-1")


def test_async_ask_without_a_worker_times_out(
    kafka_bootstrap: str, topics: AggregateTopics
) -> None:
    async def main() -> None:
        async with AsyncCommandClient(topics, kafka_bootstrap) as client:
            with pytest.raises(CommandTimeoutError):
                await client.ask("acc-1", bank_pb2.CreditAccount(amount=1), timeout=2)

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 10


def test_close_fails_a_waiting_ask(kafka_bootstrap: str, topics: AggregateTopics) -> None:
    client = CommandClient(topics, kafka_bootstrap)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            client.ask("acc-1", bank_pb2.CreditAccount(amount=1), timeout=30)
        except KesError as exc:
            errors.append(exc)

    waiting = threading.Thread(target=ask)
    waiting.start()
    time.sleep(2)
    client.close()
    waiting.join(10)
    assert len(errors) == 1
    assert not isinstance(errors[0], CommandTimeoutError)
    with pytest.raises(KesError, match="closed"):
        client.send("acc-1", bank_pb2.CreditAccount(amount=1))


def test_ask_on_missing_topics_is_a_topology_error(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    missing = AggregateTopics(unique_name("nothing"), partitions=2)
    client = CommandClient(missing, kafka_bootstrap)
    started = time.monotonic()
    with client, pytest.raises(TopologyError, match="kes topics"):
        client.ask("acc-1", bank_pb2.CreditAccount(amount=1), timeout=5)
    assert time.monotonic() - started < 15
