"""Projections without a broker: registration, the per-batch step, read-your-writes targets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from kes.examples.bank import PROJECTIONS
from kes.examples.bank.projections import BalanceRow, balance_of, balances, large_transactions
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_event, encode_event, event_key, pack, type_name
from kes.schemas.errors import ConfigurationError, DeadLetterReason
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Reply
from kes.stores.readmodels import MemoryReadModelStore
from kes.streams.cli.projection import parse_timestamp
from kes.streams.core.adapters import EventAdapters
from kes.streams.projections.projection import (
    EventRecord,
    Projection,
    Reactor,
    SqlProjection,
    load_projections,
    pending,
    project,
    projection_named,
    targets,
)
from kes.streams.projections.rows import RowWriter

TOPIC = "account.events"
LEGACY = "kestest.projection.LegacyCredited"


def record(
    offset: int, entity: str, revision: int, payload: Message, partition: int = 0
) -> EventRecord:
    env = EventEnvelope(
        entity_id=entity,
        revision=revision,
        payload=payload if isinstance(payload, any_pb2.Any) else pack(payload),
        event_type=payload.TypeName() if isinstance(payload, any_pb2.Any) else type_name(payload),
    )
    return EventRecord(TOPIC, partition, offset, event_key(entity, revision), encode_event(env))


def history() -> list[EventRecord]:
    return [
        record(0, "a", 1, bank_pb2.AccountOpened(owner="Ann", balance=10)),
        record(1, "a", 2, bank_pb2.AccountCredited(amount=5)),
        record(2, "b", 1, bank_pb2.AccountOpened(owner="Bob", balance=0)),
        record(3, "a", 3, bank_pb2.AccountDebited(amount=7)),
    ]


def no_pause(seconds: float) -> None:
    pass


def test_the_balances_projection_folds_events_into_rows() -> None:
    store = MemoryReadModelStore()
    result = project(balances, history(), store, pause=no_pause)
    assert (result.applied, result.skipped, result.dead_letters) == (4, 0, [])
    assert result.offsets == {(TOPIC, 0): 4}
    store.write(result.rows, result.offsets)
    assert balance_of(store, "a") == BalanceRow(balance=8, revision=3, events=3, owner="Ann")
    assert balance_of(store, "b") == BalanceRow(balance=0, revision=1, events=1, owner="Bob")


def test_records_below_the_stored_offset_are_not_applied_again() -> None:
    store = MemoryReadModelStore()
    first = project(balances, history()[:2], store)
    store.write(first.rows, first.offsets)
    again = project(balances, history(), store, stored=store.offsets())
    assert (again.applied, again.skipped) == (2, 2)
    store.write(again.rows, again.offsets)
    assert balance_of(store, "a") == BalanceRow(balance=8, revision=3, events=3, owner="Ann")


def test_events_without_a_handler_are_skipped_but_consumed() -> None:
    only_opened = Projection("opened", ["account"])

    @only_opened.on(bank_pb2.AccountOpened)
    def opened(event: EventEnvelope, payload: bank_pb2.AccountOpened, rows: RowWriter) -> None:
        rows.put(event.entity_id, payload.owner.encode())

    unknown = any_pb2.Any(type_url="type.googleapis.com/nobody.Knows", value=b"\xff")
    records = [*history(), record(4, "a", 4, unknown)]
    result = project(only_opened, records, MemoryReadModelStore())
    assert (result.applied, result.skipped, result.dead_letters) == (2, 3, [])
    assert dict(result.rows) == {"a": b"Ann", "b": b"Bob"}
    assert result.offsets == {(TOPIC, 0): 5}


def test_a_failing_handler_is_retried_then_dead_lettered_and_its_writes_dropped() -> None:
    flaky = Projection("flaky", ["account"], max_attempts=3, retry_backoff=0.5)
    calls: list[str] = []
    pauses: list[float] = []

    @flaky.on(bank_pb2.AccountOpened)
    def opened(event: EventEnvelope, payload: bank_pb2.AccountOpened, rows: RowWriter) -> None:
        calls.append(event.entity_id)
        rows.put(f"{event.entity_id}/half", b"written before failing")
        if event.entity_id == "a" or calls.count("b") == 1:
            raise RuntimeError(f"cannot handle {event.entity_id}")
        rows.put(event.entity_id, b"ok")

    result = project(flaky, history(), MemoryReadModelStore(), pause=pauses.append)
    assert dict(result.rows) == {"b/half": b"written before failing", "b": b"ok"}
    assert pauses == [0.5, 1.0, 0.5]  # a: two retries, backing off; b: one retry, then fine
    assert result.applied == 1 and calls == ["a", "a", "a", "b", "b"]
    [(key, letter)] = result.dead_letters
    assert key == event_key("a", 1)
    assert letter.reason == DeadLetterReason.HANDLER_ERROR
    assert "cannot handle a" in letter.error and "after 3 attempts" in letter.error
    assert (letter.topic, letter.partition, letter.offset) == (TOPIC, 0, 0)
    assert decode_event(letter.original_value).entity_id == "a"
    assert result.offsets == {(TOPIC, 0): 4}  # the stall is recorded, not repeated forever


def test_undecodable_records_are_dead_lettered() -> None:
    garbage = EventRecord(TOPIC, 1, 9, b"k", b"\x0a\xff\xff not an envelope")
    result = project(balances, [garbage], MemoryReadModelStore())
    [(_, letter)] = result.dead_letters
    assert letter.reason == DeadLetterReason.UNDECODABLE
    assert letter.original_value == garbage.value
    assert result.offsets == {(TOPIC, 1): 10}


def test_adapters_upgrade_old_events_before_the_handler_sees_them() -> None:
    adapters = EventAdapters()

    @adapters.adapter(LEGACY, packed=True)
    def legacy_credited(old: Message) -> Message:
        assert isinstance(old, any_pb2.Any)
        return bank_pb2.AccountCredited(amount=int(old.value.decode()))

    legacy = any_pb2.Any(type_url=f"type.googleapis.com/{LEGACY}", value=b"32")
    records = [*history(), record(4, "a", 4, legacy)]
    without = project(balances, records, MemoryReadModelStore())
    assert without.skipped == 1  # an unknown old type: no handler, no adapter
    store = MemoryReadModelStore()
    result = project(balances, records, store, adapters=adapters)
    store.write(result.rows, result.offsets)
    assert balance_of(store, "a") == BalanceRow(balance=40, revision=4, events=4, owner="Ann")


def test_a_reactor_sees_each_event_with_its_entity_and_revision() -> None:
    seen: list[tuple[str, int, str, int]] = []
    reactor = large_transactions(threshold=5, notify=lambda *alert: seen.append(alert))
    result = project(
        reactor,
        [*history(), record(4, "b", 2, bank_pb2.AccountCredited(amount=4))],
        MemoryReadModelStore(),
    )
    assert seen == [("a", 2, "credit", 5), ("a", 3, "debit", 7)]
    assert dict(result.rows) == {}
    assert result.offsets == {(TOPIC, 0): 5}


def test_names_and_registrations_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="group id"):
        Projection("no spaces", ["account"])
    with pytest.raises(ConfigurationError, match="list of aggregate"):
        Reactor("r", "account")
    with pytest.raises(ConfigurationError, match="already has a handler"):
        balances.on(bank_pb2.AccountOpened)(lambda e, p, r: None)
    assert balances.group_id("dev-") == "dev-account-balances"
    assert balances.dlq_topic("dev-") == "dev-account-balances.dlq"
    assert set(balances.event_types) == {
        "bank.v1.AccountOpened",
        "bank.v1.AccountCredited",
        "bank.v1.AccountDebited",
        "kes.v1.EntityErased",  # an erased account's row goes
    }


def test_app_modules_list_their_projections() -> None:
    assert load_projections("kes.examples.bank") == PROJECTIONS
    assert projection_named("kes.examples.bank", "account-balances") is balances
    assert isinstance(projection_named("kes.examples.bank", "large-transactions"), Reactor)
    sql = projection_named("kes.examples.bank", "account-balances-sql")
    assert isinstance(sql, SqlProjection) and sql.tables == ("balances",)
    with pytest.raises(
        ConfigurationError, match="account-balances, account-balances-sql, large-transactions"
    ):
        projection_named("kes.examples.bank", "nope")
    with pytest.raises(ConfigurationError, match="no PROJECTIONS"):
        load_projections("tests.apps.faulty")


def test_a_sql_projection_names_plain_tables_and_lists_its_statements() -> None:
    with pytest.raises(ConfigurationError, match="not 'x; DROP TABLE y'"):
        SqlProjection("p", ["account"], tables=["x; DROP TABLE y"])
    with pytest.raises(ConfigurationError, match="lists of statements"):
        SqlProjection("p", ["account"], schema="CREATE TABLE x (a int)")
    made = SqlProjection("p", ["account"], schema=["CREATE TABLE x (a int)"], tables=["s.x"])
    assert (made.schema, made.tables, made.group_id("pre-")) == (
        ("CREATE TABLE x (a int)",),
        ("s.x",),
        "pre-p",
    )


def test_targets_of_a_reply_and_of_offsets() -> None:
    reply = Reply(command_id="c", entity_id="a")
    reply.accepted.partition = 2
    reply.accepted.event_offsets.extend([40, 41])
    assert targets(reply, TOPIC) == {(TOPIC, 2): 42}
    assert targets({0: 5, 3: 0}, TOPIC) == {(TOPIC, 0): 6, (TOPIC, 3): 1}
    rejected = Reply(command_id="c")
    rejected.rejected.message = "no"
    assert targets(rejected, TOPIC) == {}
    assert pending({(TOPIC, 2): 42}, targets(reply, TOPIC)) == {}
    assert pending({(TOPIC, 2): 41}, targets(reply, TOPIC)) == {(TOPIC, 2): 42}
    assert pending({}, {(TOPIC, 0): 1}) == {(TOPIC, 0): 1}


def test_timestamps_for_rebuild() -> None:
    assert parse_timestamp("1714521600000") == 1714521600000
    assert parse_timestamp("2024-05-01T00:00:00Z") == 1714521600000
    assert parse_timestamp("2024-05-01T02:00:00+02:00") == 1714521600000
    assert parse_timestamp("2024-05-01") == 1714521600000  # no zone: UTC
    with pytest.raises(ConfigurationError, match="not a time"):
        parse_timestamp("yesterday")


def test_projection_modules_import_no_kafka_or_rocksdb_client() -> None:
    core = [
        "kes.streams.projections.projection",
        "kes.streams.projections.rows",
        "kes.examples.bank",
    ]
    script = (
        "import importlib, json, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'faust', 'aiokafka', 'confluent_kafka', 'rocksdict', 'mode'})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
