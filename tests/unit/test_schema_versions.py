"""Schema versions, pure: the events a behavior writes carry their declared version (a command
cannot forge it), snapshots record their state version, and older states migrate on load."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message

from kes.schemas.codec import encode_command, new_command, pack, unpack
from kes.schemas.errors import ConfigurationError, SchemaVersionError
from kes.schemas.evolution.v1.evolution_pb2 import Deposit, Deposited, DepositedV2, Wallet, WalletV1
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Snapshot
from kes.streams.core.adapters import VERSION_KEY, EventAdapters
from kes.streams.core.behavior import EventSourcedBehavior
from kes.streams.core.statemigration import StateMigrations
from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.entity import Entity
from kes.streams.cycle.records import CommandRecord
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for
from tests.apps import wallet_v1, wallet_v2

TOPICS = AggregateTopics("wallet", partitions=1)


def _record(offset: int, command: Message, metadata: dict[str, str] | None = None) -> CommandRecord:
    env = new_command("w-1", command, aggregate="wallet", reply_wanted=True, metadata=metadata)
    value, headers = encode_command(env)
    return CommandRecord(offset, b"w-1", value, headers)


def _events(step: BatchStep, *records: CommandRecord) -> list[EventEnvelope]:
    assert partition_for("w-1", 1) == 0
    return [EventEnvelope.FromString(r.value) for r in step.run(list(records)).events]


def test_a_declared_event_version_is_written_and_a_commands_claim_is_not() -> None:
    step = BatchStep(wallet_v2.wallet, TOPICS, 0, {}.get)
    forged = {VERSION_KEY: "99", "tenant": "t-1"}
    [event] = _events(step, _record(0, Deposit(amount=5), forged))
    assert dict(event.metadata) == {VERSION_KEY: "2", "tenant": "t-1"}


def test_an_undeclared_event_version_is_absent_even_if_the_command_claims_one() -> None:
    step = BatchStep(wallet_v1.wallet, TOPICS, 0, {}.get)
    [event] = _events(step, _record(0, Deposit(amount=5), {VERSION_KEY: "2", "tenant": "t"}))
    assert dict(event.metadata) == {"tenant": "t"}


def test_event_versions_start_at_one() -> None:
    behavior = EventSourcedBehavior("w", Wallet)
    with pytest.raises(ConfigurationError, match="start at 1"):
        behavior.event(DepositedV2, version=0)


def test_an_unversioned_event_matches_a_version_one_adapter() -> None:
    adapters = EventAdapters()
    adapters.register(
        Deposited,
        lambda old: Deposited(amount=old.amount * 100),
        version="1",
        to_version="2",  # type: ignore[attr-defined]
    )
    adapters.register(Deposited, lambda old: DepositedV2(amount_cents=old.amount), version="2")  # type: ignore[attr-defined]
    stored = EventEnvelope(entity_id="w", payload=pack(Deposited(amount=3)))
    adapted = adapters.adapt(stored)
    assert unpack(adapted.payload) == DepositedV2(amount_cents=300)
    assert VERSION_KEY not in adapted.metadata
    stored.metadata[VERSION_KEY] = "2"
    assert unpack(adapters.adapt(stored).payload) == DepositedV2(amount_cents=3)


def test_a_snapshot_records_the_state_version_and_migrates_on_restore() -> None:
    v1 = BatchStep(wallet_v1.wallet, TOPICS, 0, {}.get)
    result = v1.run([_record(0, Deposit(amount=4)), _record(1, Deposit(amount=1))])
    old = result.changed["w-1"].snapshot()
    assert old.state_version == 0  # version 1 is recorded as unset: the bytes of before
    entity = Entity.restore(old, wallet_v2.wallet, None)
    assert entity.state == Wallet(balance_cents=500, currency="EUR", deposits=2)
    assert entity.snapshot().state_version == 2
    assert unpack(entity.snapshot().state) == entity.state

    v2 = BatchStep(wallet_v2.wallet, TOPICS, 0, {"w-1": old}.get)
    later = v2.run([_record(2, Deposit(amount=25))])
    written = later.changed["w-1"].snapshot()
    assert (written.revision, written.state_version) == (3, 2)
    assert unpack(written.state) == Wallet(balance_cents=525, currency="EUR", deposits=3)


def test_a_fold_from_the_log_snapshots_the_current_version() -> None:
    entity = Entity("w-1", 0, wallet_v2.wallet.initial_state("w-1"), [])
    event = EventEnvelope(entity_id="w-1", revision=1, command_id="c", payload=pack(DepositedV2()))
    entity.apply(wallet_v2.wallet, event, 0, 32)
    assert entity.snapshot().state_version == 2


def test_a_snapshot_newer_than_the_code_is_refused() -> None:
    snap = Snapshot(entity_id="w-1", revision=1, state=pack(Wallet()), state_version=3)
    with pytest.raises(SchemaVersionError, match="version 3, newer than this code's 2"):
        Entity.restore(snap, wallet_v2.wallet, None)
    step = BatchStep(wallet_v2.wallet, TOPICS, 0, {"w-1": snap}.get)
    with pytest.raises(SchemaVersionError, match="'w-1'"):
        step.run([_record(5, Deposit(amount=1))])


def test_migrations_chain_and_a_packed_one_gets_a_gone_type() -> None:
    migrations = StateMigrations("w", 3)
    seen: list[str] = []

    def from_gone(old: Message) -> Message:
        assert isinstance(old, any_pb2.Any)
        seen.append(old.TypeName())
        return WalletV1(balance=int(old.value.decode()))

    migrations.register(1, from_gone, packed=True)
    migrations.register(2, lambda old: Wallet(balance_cents=old.balance * 100))  # type: ignore[attr-defined]
    gone = any_pb2.Any(type_url="type.googleapis.com/legacy.v0.Purse", value=b"7")
    assert migrations.migrate(gone, 1) == Wallet(balance_cents=700)
    assert seen == ["legacy.v0.Purse"]
    assert migrations.migrate(pack(WalletV1(balance=2)), 2) == Wallet(balance_cents=200)
    assert migrations.migrate(pack(Wallet(deposits=1)), 3) == Wallet(deposits=1)


def test_a_missing_or_misregistered_migration_is_a_configuration_error() -> None:
    migrations = StateMigrations("w", 3)
    migrations.register(2, lambda old: old)
    with pytest.raises(ConfigurationError, match="no state migration for 1 -> 2"):
        migrations.migrate(pack(WalletV1()), 1)
    with pytest.raises(ConfigurationError, match="from 1 to 2"):
        migrations.register(3, lambda old: old)
    with pytest.raises(ConfigurationError, match="already migrates"):
        migrations.register(2, lambda old: old)
    with pytest.raises(ConfigurationError, match="state_version must be 1 or more"):
        StateMigrations("w", 0)


def test_a_migration_must_end_at_the_state_type() -> None:
    behavior = EventSourcedBehavior("w", Wallet, state_version=2)
    behavior.migrate_state(from_version=1)(lambda old: old)
    with pytest.raises(
        SchemaVersionError, match="state migration of behavior 'w' returned WalletV1"
    ):
        behavior.load_state(pack(WalletV1()), 1)


def test_a_failing_migration_refuses_the_snapshot_instead_of_crashing() -> None:
    """The same snapshot fails the same way on every restart: SchemaVersionError (the worker's
    exit 78, a refusal), never an exception a supervisor would restart into again."""
    behavior = EventSourcedBehavior("w", Wallet, state_version=2)

    @behavior.migrate_state(from_version=1)
    def broken(old: WalletV1) -> Wallet:
        raise ZeroDivisionError("a bug in the migration")

    with pytest.raises(SchemaVersionError, match="from version 1 failed on the snapshot of 'w-1'"):
        behavior.load_state(pack(WalletV1(balance=1)), 1, "w-1")
    unknown = any_pb2.Any(type_url="type.googleapis.com/gone.v1.Wallet", value=b"")
    with pytest.raises(SchemaVersionError, match="failed on the snapshot"):
        behavior.load_state(unknown, 1, "w-1")
