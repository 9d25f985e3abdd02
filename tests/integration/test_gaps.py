"""A batch that starts past the expected offset is applied only if the gap holds no commands."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_command, new_command
from kes.schemas.errors import CommandGapError
from kes.stores.snapshots import MemorySnapshotStore
from kes.streams.config.settings import Settings
from kes.streams.cycle.records import CommandRecord
from kes.streams.kafka.readback import read_records
from kes.streams.runtime.gaps import Gap, GapReader, read_gap, records_between
from kes.streams.runtime.processor import PartitionProcessor
from kes.topology.admin import apply
from kes.topology.partitioning import partition_for


@pytest.fixture
def settings(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Settings:
    made = Settings(
        bootstrap_servers=kafka_bootstrap, partitions=1, topic_prefix=unique_name("gap") + "-"
    )
    assert apply(made.topics("account"), {"bootstrap.servers": kafka_bootstrap}).ok
    return made


def _produce(settings: Settings, count: int, transactional: bool, abort: bool = False) -> None:
    config = {"bootstrap.servers": settings.bootstrap_servers}
    if transactional:
        config["transactional.id"] = f"{settings.topic_prefix}tx"
    producer = Producer(config)
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    for _ in range(count):
        env = new_command("acc-1", bank_pb2.CreditAccount(amount=1), aggregate="account")
        value, headers = encode_command(env)
        producer.produce(settings.topics("account").commands, value, b"acc-1", 0, headers=headers)
    if transactional and abort:
        assert producer.flush(30) == 0  # the records are on the log, then the abort marker
        producer.abort_transaction(30)
    elif transactional:
        producer.commit_transaction(30)
    assert producer.flush(30) == 0


def _commands(settings: Settings) -> list[CommandRecord]:
    """The committed commands of the one partition, as the worker reads them."""
    config = {"bootstrap.servers": settings.bootstrap_servers}
    return [
        CommandRecord(r.offset, r.key, r.value, r.headers)
        for r in read_records(settings.topics("account").commands, 1, config)
    ]


async def test_records_between_counts_commands_not_transaction_markers(settings: Settings) -> None:
    _produce(settings, 2, transactional=True)  # two commands and a commit marker
    _produce(settings, 2, transactional=False)
    topic = settings.topics("account").commands
    config = {"bootstrap.servers": settings.bootstrap_servers}
    data = [r.offset for r in read_records(topic, 1, config)]
    assert len(data) == 4
    (marker,) = set(range(5)) - set(data)  # the coordinator writes it asynchronously
    assert await records_between(settings, topic, 0, marker, marker + 1) == 0
    assert await records_between(settings, topic, 0, 0, 5) == 4
    assert await records_between(settings, topic, 0, 1, 4) == len([o for o in data if 1 <= o < 4])
    assert await records_between(settings, topic, 0, 4, 4) == 0


async def test_the_records_of_an_aborted_transaction_are_not_missed_commands(
    settings: Settings,
) -> None:
    """A process runner (or a forwarding worker) killed mid-transaction leaves its commands
    aborted on the log: never commands, so a worker's next batch past them is no gap."""
    _produce(settings, 1, transactional=False)  # offset 0
    _produce(settings, 3, transactional=True, abort=True)  # offsets 1-3 and an abort marker
    _produce(settings, 2, transactional=False)  # offsets 5 and 6
    records = _commands(settings)
    assert [r.offset for r in records] == [0, 5, 6]
    topic = settings.topics("account").commands
    assert await records_between(settings, topic, 0, 1, 5) == 0
    assert await records_between(settings, topic, 0, 0, 7) == 3
    assert await read_gap(settings, topic, 0, 1, 5) == Gap(log_start=0, records=0)
    assert await read_gap(settings, topic, 0, 0, 7) == Gap(log_start=0, records=3)
    kept = GapReader(settings)  # the worker's: one reader for every check
    try:
        assert await kept.read(topic, 0, 1, 5) == Gap(log_start=0, records=0)
        assert await kept.read(topic, 0, 0, 7) == Gap(log_start=0, records=3)
        assert await kept.read(topic, 0, 5, 6) == Gap(log_start=0, records=1)
    finally:
        await kept.close()
    store = MemorySnapshotStore().partition(settings.topics("account").snapshots, 0)
    processor = PartitionProcessor(account, settings.topics("account"), 0, settings, store)
    processor.next_offset = 1  # offset 0 applied; the aborted records and the marker follow
    result = await processor.handle(records[1:])
    assert result is not None and result.commands == 2
    assert result.next_command_offset == 7


async def test_a_batch_past_unseen_commands_is_refused_before_anything_applies(
    settings: Settings,
) -> None:
    _produce(settings, 5, transactional=False)
    topics = settings.topics("account")
    assert partition_for("acc-1", 1) == 0
    records = [
        CommandRecord(r.offset, r.key, r.value, r.headers)
        for r in read_records(topics.commands, 1, {"bootstrap.servers": settings.bootstrap_servers})
    ]
    store = MemorySnapshotStore().partition(topics.snapshots, 0)
    processor = PartitionProcessor(account, topics, 0, settings, store)
    processor.next_offset = 1  # as if offset 0 had been applied
    with pytest.raises(CommandGapError, match="2 command"):
        await processor.handle(records[3:])  # offsets 1 and 2 were never delivered
    assert processor.stats.batches == 0 and processor.next_offset == 1
