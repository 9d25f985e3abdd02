"""Durable state without Kafka: the profile behavior, its topic layout, its snapshot interval,
the per-behavior interval of an event-sourced one, and what refuses to fold durable state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf.message import Message

from kes.examples.bank.domain import account
from kes.examples.bank.profiles import profile
from kes.schemas.bank.v1.bank_pb2 import Account, ChangeEmail, Profile, SetProfile
from kes.schemas.codec import encode_command, new_command, pack
from kes.schemas.errors import ConfigurationError, DurableStateError, MigrationError
from kes.schemas.evolution.v1.evolution_pb2 import Wallet, WalletV1
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Snapshot
from kes.stores.snapshots import Checkpoint, MemorySnapshotStore
from kes.streams.config.durablestate import is_durable_state, layout_of
from kes.streams.config.settings import Guarantee, Settings
from kes.streams.core.adapters import VERSION_KEY
from kes.streams.core.behavior import DurableStateBehavior, EventSourcedBehavior
from kes.streams.core.testkit import given
from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.records import CommandRecord
from kes.streams.cycle.snapshotpolicy import interval_for
from kes.streams.operations.migrator import Migration, migrate
from kes.streams.operations.verify import Verification, _check_durable
from kes.streams.runtime.processor import PartitionProcessor
from kes.streams.runtime.rebuild import rebuild_partition
from kes.streams.runtime.tailfold import fold_tail
from kes.topology.plans import TopicCheck, TopicState

WEEK_MS = 7 * 24 * 3600 * 1000
ANN = Profile(customer_id="c-1", name="Ann", email="ann@example.com", changes=1)


def test_a_profile_is_set_then_its_email_changed() -> None:
    (
        given(profile, "c-1")
        .when(SetProfile(name=" Ann ", email="ann@example.com"))
        .then(ANN)
        .then_revision(1)
        .when(ChangeEmail(email="ann@example.org"))
        .then(Profile(customer_id="c-1", name="Ann", email="ann@example.org", changes=2))
        .then_revision(2)
    )


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (SetProfile(name="", email="a@b.c"), "name"),
        (SetProfile(name="x" * 201, email="a@b.c"), "name"),
        (SetProfile(name="Ann", email="ann"), "not an address"),
        (SetProfile(name="Ann", email="a@b@c.d"), "not an address"),
        (SetProfile(name="Ann", email="ann @b.c"), "spaces"),
        (ChangeEmail(email="ann@example.org"), "no profile"),
    ],
)
def test_bad_input_is_rejected(command: SetProfile | ChangeEmail, message: str) -> None:
    given(profile, "c-1").when(command).then_rejected(message_contains=message)


def test_an_unchanged_email_is_rejected() -> None:
    (
        given(profile, "c-1", [ANN])
        .when(ChangeEmail(email="ann@example.com"))
        .then_rejected(message_contains="unchanged")
    )


def test_a_durable_state_layout_deletes_its_changes_after_the_retention() -> None:
    settings = Settings(state_changes_retention_ms=3_600_000)
    durable = {s.name: dict(s.config) for s in layout_of(settings, profile).specs()}
    assert durable["profile.events"] == {
        "cleanup.policy": "delete",
        "retention.ms": "3600000",
        "min.insync.replicas": "1",
    }
    assert durable["profile.snapshots"]["cleanup.policy"] == "compact"
    sourced = {s.name: dict(s.config) for s in layout_of(settings, account).specs()}
    assert sourced["account.events"]["cleanup.policy"] == "compact"
    assert sourced["account.events"]["retention.ms"] == "-1"


def test_the_retention_comes_from_the_environment_and_defaults_to_a_week() -> None:
    assert Settings().topics("p", durable_state=True).state_changes_retention_ms == WEEK_MS
    env = {"KES_STATE_CHANGES_RETENTION_MS": "-1"}
    assert Settings.from_env(env).state_changes_retention_ms == -1
    with pytest.raises(ConfigurationError, match="state_changes_retention_ms"):
        Settings(state_changes_retention_ms=0).topics("p", durable_state=True)


def test_a_delete_policy_declared_for_durable_state_does_not_block_a_worker() -> None:
    [events] = [s for s in layout_of(Settings(), profile).specs() if s.name == "profile.events"]
    as_declared = TopicCheck(events, TopicState(events.name, 12, 1, dict(events.config)))
    assert as_declared.blocking == []
    compacted = {**events.config, "cleanup.policy": "compact"}
    assert TopicCheck(events, TopicState(events.name, 12, 1, compacted)).blocking


def test_durable_state_snapshots_every_change_whatever_the_setting() -> None:
    assert is_durable_state(profile) and not is_durable_state(account)
    assert interval_for(profile, 10) == 1
    assert interval_for(account, 10) == 10


def test_a_behavior_may_declare_its_own_interval() -> None:
    every_five = EventSourcedBehavior("ledger", Account, snapshot_every=5)
    assert interval_for(every_five, 1) == 5
    assert interval_for(every_five, 20) == 5
    with pytest.raises(ConfigurationError, match="snapshot_every"):
        EventSourcedBehavior("ledger", Account, snapshot_every=0)


def test_the_partition_uses_the_behaviors_interval(tmp_path: Path) -> None:
    settings = Settings(snapshot_every=10, data_dir=tmp_path)
    store = MemorySnapshotStore()
    every_five = EventSourcedBehavior("ledger", Account, snapshot_every=5)
    for behavior, every in ((profile, 1), (account, 10), (every_five, 5)):
        topics = layout_of(settings, behavior)
        part = store.partition(topics.snapshots, 0)
        processor = PartitionProcessor(behavior, topics, 0, settings, part)
        assert processor.policy.every == every, behavior.name


def test_an_interval_with_at_least_once_is_refused(tmp_path: Path) -> None:
    from kes.streams.runtime.engine import Engine

    settings = Settings(guarantee=Guarantee.AT_LEAST_ONCE, data_dir=tmp_path)
    every_five = EventSourcedBehavior("ledger", Account, snapshot_every=5)
    with pytest.raises(ConfigurationError, match="exactly_once"):
        Engine(settings, {"ledger": every_five}, None, None, "c")  # type: ignore[arg-type]


def test_nothing_folds_durable_state_from_its_changes() -> None:
    topics = layout_of(Settings(), profile)
    store = MemorySnapshotStore().partition(topics.snapshots, 0)
    with pytest.raises(DurableStateError, match="state of record"):
        rebuild_partition(profile, topics, 0, store, 5, group="g", client_config={})
    with pytest.raises(DurableStateError, match="state of record"):
        fold_tail(profile, topics, 0, store, Checkpoint(3, 5, "g", 0), {})
    target = replace(topics, prefix="new-", durable_state=False)  # a migration keeps its kind
    with pytest.raises(MigrationError, match="differ in durable_state"):
        migrate(Migration(topics, target), {})


def _change(revision: int, state: Profile, command: str = "") -> EventEnvelope:
    return EventEnvelope(
        entity_id=state.customer_id,
        revision=revision,
        command_id=command or f"cmd-{revision}",
        event_type="bank.v1.Profile",
        payload=pack(state),
    )


def _snapshot(revision: int, state: Profile) -> Snapshot:
    return Snapshot(entity_id=state.customer_id, revision=revision, state=pack(state))


def test_verify_checks_the_snapshot_against_the_latest_retained_change() -> None:
    later = Profile(customer_id="c-1", name="Ann", email="ann@example.org", changes=2)
    gone = Profile(customer_id="c-2", name="Bob", email="bob@example.com", changes=4)
    result = Verification()
    _check_durable(
        profile,
        {"c-1": [_change(2, later), _change(1, ANN)]},  # both retained, out of order
        {"c-1": _snapshot(2, later), "c-2": _snapshot(4, gone)},  # c-2: every change expired
        result,
    )
    assert result.ok, result.violations
    assert (result.entities, result.states, result.revisions) == (
        2,
        {"c-1": later, "c-2": gone},
        {"c-1": 2, "c-2": 4},
    )


def test_verify_names_a_stale_snapshot_a_gap_a_repeat_and_a_missing_snapshot() -> None:
    later = Profile(customer_id="c-1", name="Ann", email="ann@example.org", changes=2)
    result = Verification()
    _check_durable(
        profile,
        {
            "c-1": [_change(1, ANN), _change(2, later)],
            "c-3": [_change(3, ANN), _change(5, ANN)],  # revision 4 missing
            "c-4": [_change(1, ANN, "x"), _change(2, ANN, "x")],
            "c-5": [_change(1, ANN)],
        },
        {
            "c-1": _snapshot(1, ANN),
            "c-3": _snapshot(5, ANN),
            "c-4": _snapshot(2, ANN),
        },
        result,
    )
    assert result.violations == [
        "c-1: snapshot (revision 1) is not its latest change (revision 2)",
        "c-3: retained change revisions are not contiguous: 3,5",
        "c-4: command x applied twice",
        "c-5: no snapshot for 1 changes",
    ]


def _changes(behavior: DurableStateBehavior[Profile], metadata: dict[str, str]) -> EventEnvelope:
    step = BatchStep(behavior, layout_of(Settings(partitions=1), behavior), 0, {}.get)
    env = new_command("c-1", SetProfile(name="Ann", email="ann@example.com"), aggregate="profile",
                      reply_wanted=True, metadata=metadata)  # fmt: skip
    value, headers = encode_command(env)
    [change] = step.run([CommandRecord(0, b"c-1", value, headers)]).events
    return EventEnvelope.FromString(change.value)


def test_a_change_record_carries_a_declared_state_version() -> None:
    """Version 2 of the state is written as such, so a version-keyed adapter can tell the older
    change records (no key: version 1) from the newer; a command cannot claim one."""
    v2 = DurableStateBehavior("profile", Profile, state_version=2)
    v2.command(SetProfile)(lambda state, cmd, ctx: Profile(name=cmd.name, email=cmd.email))
    assert v2.event_version("bank.v1.Profile") == 2 and v2.event_version("bank.v1.Other") is None
    forged = {VERSION_KEY: "7", "tenant": "t"}
    assert dict(_changes(v2, forged).metadata) == {VERSION_KEY: "2", "tenant": "t"}
    assert dict(_changes(profile, forged).metadata) == {"tenant": "t"}  # version 1: no key


def _wallet_card() -> DurableStateBehavior[Wallet]:
    card = DurableStateBehavior("card", Wallet, state_version=2)

    @card.migrate_state(from_version=1)
    def to_cents(old: WalletV1) -> Wallet:
        return Wallet(balance_cents=old.balance * 100, currency="EUR", deposits=old.deposits)

    return card


def _wallet_change(
    entity_id: str, revision: int, state: Message, version: int = 1
) -> EventEnvelope:
    env = EventEnvelope(
        entity_id=entity_id, revision=revision, payload=pack(state), command_id=f"c{revision}"
    )
    if version > 1:
        env.metadata[VERSION_KEY] = str(version)
    return env


def test_verify_compares_a_durable_change_and_its_snapshot_at_the_codes_state_version() -> None:
    card = _wallet_card()
    old = WalletV1(balance=3, deposits=1)  # written before the upgrade, never changed since
    events = {
        "a": [_wallet_change("a", 1, old)],
        "b": [_wallet_change("b", 1, old)],
        "c": [_wallet_change("c", 1, Wallet(balance_cents=5, currency="EUR"), version=2)],
    }
    snapshots = {
        "a": Snapshot(entity_id="a", revision=1, state=pack(old)),  # as written: version 1
        "b": Snapshot(  # migrated and written again since: version 2
            entity_id="b",
            revision=1,
            state_version=2,
            state=pack(Wallet(balance_cents=300, currency="EUR", deposits=1)),
        ),
        "c": Snapshot(  # a change the snapshot does not hold
            entity_id="c",
            revision=1,
            state_version=2,
            state=pack(Wallet(balance_cents=6, currency="EUR")),
        ),
    }
    result = Verification()
    _check_durable(card, events, snapshots, result)
    assert result.violations == ["c: snapshot (revision 1) is not its latest change (revision 1)"]
    assert result.states["a"] == Wallet(balance_cents=300, currency="EUR", deposits=1)


def test_verify_reports_a_durable_snapshot_newer_than_the_code() -> None:
    newer = Snapshot(entity_id="a", revision=1, state_version=3, state=pack(Wallet()))
    result = Verification()
    _check_durable(
        _wallet_card(), {"a": [_wallet_change("a", 1, Wallet(), 3)]}, {"a": newer}, result
    )
    assert len(result.violations) == 1
    assert "newer than this code's 2" in result.violations[0]
