"""What the code cannot read is refused up front, never folded wrongly: an event newer than the
behavior declares, a state migration chain with a step missing; and the test kits read old
events through the adapters as the worker does."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from kes.schemas.codec import encode_event, event_key, pack
from kes.schemas.errors import ConfigurationError, DeadLetterReason, SchemaVersionError
from kes.schemas.evolution.v1.evolution_pb2 import Deposit, Deposited, DepositedV2, Wallet, WalletV1
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.stores.readmodels import MemoryReadModelStore
from kes.streams.config.apps import event_versions
from kes.streams.core.adapters import VERSION_KEY, EventAdapters
from kes.streams.core.behavior import DurableStateBehavior, EventSourcedBehavior
from kes.streams.core.eventversions import (
    check_event_version,
    declared_version,
    declared_versions,
    newer_event,
)
from kes.streams.core.testkit import given
from kes.streams.projections.projection import EventRecord, Projection, project
from kes.streams.projections.rows import RowWriter
from kes.streams.projections.testkit import given_events
from kes.streams.runtime.rebuild import fold_partition
from kes.streams.runtime.tailfold import TailFold
from tests.apps import wallet_v1, wallet_v2


def _env(event: Message, version: str | None = None, revision: int = 1) -> EventEnvelope:
    env = EventEnvelope(
        entity_id="w-1",
        revision=revision,
        command_id=f"c-{revision}",
        payload=pack(event),
        event_type=event.DESCRIPTOR.full_name,
    )
    if version is not None:
        env.metadata[VERSION_KEY] = version
    return env


# -- an event newer than the code ----------------------------------------------------------------


def test_an_event_at_or_below_the_declared_version_is_known() -> None:
    assert newer_event(_env(DepositedV2()), 2) is None  # no key: version 1
    assert newer_event(_env(DepositedV2(), "2"), 2) is None
    assert newer_event(_env(Deposited(), "1"), None) is None  # undeclared: version 1


def test_an_event_above_the_declared_version_is_named_with_both_versions() -> None:
    why = newer_event(_env(DepositedV2(), "3"), 2)
    assert why == "evolution.v1.DepositedV2 is at schema version 3, newer than this code's 2"
    assert newer_event(_env(Deposited(), "2"), None) is not None  # undeclared is 1
    assert "'v2'" in (newer_event(_env(Deposited(), "v2"), 5) or "")  # not a number: refused


def test_the_behavior_check_names_where_the_event_is() -> None:
    check_event_version(wallet_v2.wallet, _env(DepositedV2(), "2"), "wallet.events[0]@7")
    with pytest.raises(SchemaVersionError) as raised:
        check_event_version(wallet_v2.wallet, _env(DepositedV2(), "3"), "wallet.events[0]@7")
    text = str(raised.value)
    assert "wallet.events[0]@7" in text and "'w-1'" in text
    assert "schema version 3, newer than this code's 2" in text


def test_an_adapter_that_changes_the_type_drops_the_old_types_version() -> None:
    adapters = EventAdapters()
    adapters.register(Deposited, lambda old: DepositedV2(amount_cents=old.amount * 100))  # type: ignore[attr-defined]
    adapted = adapters.adapt(_env(Deposited(amount=1), "5"))
    assert adapted.event_type == "evolution.v1.DepositedV2"
    assert VERSION_KEY not in adapted.metadata  # "5" was Deposited's, not DepositedV2's
    check_event_version(wallet_v2.wallet, adapted, "here")


def test_declared_versions_of_an_app_and_of_a_durable_state() -> None:
    assert declared_versions(wallet_v2.BEHAVIORS) == {"evolution.v1.DepositedV2": 2}
    assert event_versions("tests.apps.wallet_v1") == {"evolution.v1.Deposited": 1}
    durable = DurableStateBehavior("purse", Wallet, state_version=2)
    durable.migrate_state(from_version=1)(lambda old: Wallet())
    assert declared_versions([durable]) == {"evolution.v1.Wallet": 2}  # its changes: its state


def test_the_tail_fold_refuses_an_event_newer_than_the_code() -> None:
    fold = TailFold(wallet_v1.wallet, lambda _: None, 100, source="wallet.events[1]")
    fold.add(0, encode_event(_env(Deposited(amount=1))))
    with pytest.raises(SchemaVersionError, match=r"wallet\.events\[1\]@1 .*version 2, newer"):
        fold.add(1, encode_event(_env(Deposited(amount=1), "2", revision=2)))


def test_a_rebuild_refuses_an_event_newer_than_the_code() -> None:
    records = [
        (0, encode_event(_env(Deposited(amount=1)))),
        (4, encode_event(_env(Deposited(), "2", 2))),
    ]
    with pytest.raises(SchemaVersionError, match=r"events\[0\]@4 .*version 2, newer than"):
        fold_partition(wallet_v1.wallet, records, 0)
    done = fold_partition(wallet_v1.wallet, records[:1], 0)
    assert done.entities["w-1"].state == WalletV1(balance=1, deposits=1)


balances = Projection("balances", ["wallet"])


@balances.on(DepositedV2)
def _deposited(event: EventEnvelope, payload: DepositedV2, rows: RowWriter) -> None:
    rows.put(event.entity_id, str(payload.amount_cents).encode())


def test_a_projection_dead_letters_an_event_newer_than_its_apps_behaviors() -> None:
    def record(offset: int, version: str) -> EventRecord:
        env = _env(DepositedV2(amount_cents=offset + 1), version, offset + 1)
        return EventRecord(
            "wallet.events", 0, offset, event_key("w-1", offset + 1), encode_event(env)
        )

    versions = event_versions("tests.apps.wallet_v2")
    result = project(balances, [record(0, "2"), record(1, "3")], MemoryReadModelStore())
    assert not result.dead_letters  # without versions: not checked (as before)
    result = project(balances, [record(0, "2"), record(1, "3")], MemoryReadModelStore(),
                     versions=versions)  # fmt: skip
    [(_, letter)] = result.dead_letters
    assert letter.reason == DeadLetterReason.NEWER_VERSION
    assert (letter.topic, letter.partition, letter.offset) == ("wallet.events", 0, 1)
    assert "version 3, newer than this code's 2" in letter.error
    assert result.rows == {"w-1": b"1"} and result.offsets == {("wallet.events", 0): 2}


# -- an incomplete migration chain ---------------------------------------------------------------


def _wallet(state_version: int, oldest: int = 1) -> EventSourcedBehavior[Wallet]:
    return EventSourcedBehavior(
        "wallet", Wallet, state_version=state_version, oldest_state_version=oldest
    )


def test_a_missing_step_is_named_before_any_snapshot_is_loaded() -> None:
    wallet = _wallet(4)
    wallet.migrate_state(from_version=2)(lambda old: old)
    with pytest.raises(ConfigurationError) as raised:
        wallet.check_state_migrations()
    text = str(raised.value)
    assert "state version 4" in text and "1 -> 2, 3 -> 4" in text and "2 -> 3" not in text
    wallet.migrate_state(from_version=1)(lambda old: old)
    wallet.migrate_state(from_version=3)(lambda old: old)
    wallet.check_state_migrations()
    _wallet(1).check_state_migrations()  # nothing to migrate


def test_oldest_state_version_ends_the_chain_and_refuses_older_snapshots() -> None:
    wallet = _wallet(3, oldest=2)
    with pytest.raises(ConfigurationError, match="no state migration for 2 -> 3"):
        wallet.check_state_migrations()
    with pytest.raises(ConfigurationError, match="must be from 2 to 2"):
        wallet.migrate_state(from_version=1)(lambda old: old)
    wallet.migrate_state(from_version=2)(lambda old: Wallet(deposits=9))
    wallet.check_state_migrations()
    assert wallet.load_state(pack(WalletV1()), 2) == Wallet(deposits=9)
    with pytest.raises(SchemaVersionError, match=r"version 1, older than the oldest .* \(2\)"):
        wallet.load_state(pack(WalletV1()), 0, "w-1")
    for bad in (0, 4):
        with pytest.raises(ConfigurationError, match="oldest_state_version must be from 1 to"):
            _wallet(3, oldest=bad)


def test_the_worker_refuses_an_incomplete_chain_with_exit_78(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kes.streams.cli import main

    app = tmp_path / "gappy_wallet.py"  # type: ignore[operator]
    app.write_text(
        "from kes.schemas.evolution.v1.evolution_pb2 import Wallet\n"
        "from kes.streams.core.behavior import EventSourcedBehavior\n"
        "wallet = EventSourcedBehavior('wallet', Wallet, state_version=3)\n"
        "wallet.migrate_state(from_version=2)(lambda old: old)\n"
        "BEHAVIORS = [wallet]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("kes.streams.cli.commands.check_reachable", lambda settings: None)
    assert main(["worker", "gappy_wallet", "-b", "127.0.0.1:1"]) == 78


def test_the_engine_refuses_an_incomplete_chain() -> None:
    from kes.streams.config.settings import Settings
    from kes.streams.runtime.engine import Engine

    wallet = _wallet(2)
    with pytest.raises(ConfigurationError, match="1 -> 2"):
        Engine(Settings(), {"wallet": wallet}, None, None, client_id="x")  # type: ignore[arg-type]


# -- the test kits read old events through the adapters -------------------------------------------


def test_given_folds_old_events_through_the_adapters() -> None:
    adapters = wallet_v2.EVENT_ADAPTERS
    history = [Deposited(amount=2), DepositedV2(amount_cents=5, currency="EUR")]
    given(wallet_v2.wallet, "w-1", history, adapters=adapters).when(Deposit(amount=1)).then_state(
        Wallet(balance_cents=206, currency="EUR", deposits=3)
    )
    with pytest.raises(ConfigurationError, match=r"no event handler for evolution\.v1\.Deposited"):
        given(wallet_v2.wallet, "w-1", [Deposited(amount=2)])  # without them it does not fold


def test_given_with_versions_matches_version_keyed_adapters_and_refuses_newer() -> None:
    wallet = EventSourcedBehavior("wallet", Wallet)

    @wallet.event(DepositedV2, version=3)
    def deposited(state: Wallet, evt: DepositedV2) -> Wallet:
        state.balance_cents += evt.amount_cents
        return state

    adapters = EventAdapters()
    adapters.register(DepositedV2, lambda old: DepositedV2(amount_cents=old.amount_cents * 10),  # type: ignore[attr-defined]
                      version="2", to_version="3")  # fmt: skip
    old_and_new = [(DepositedV2(amount_cents=1), 2), DepositedV2(amount_cents=1)]
    assert given(wallet, "w-1", old_and_new, adapters=adapters).state.balance_cents == 11
    with pytest.raises(
        SchemaVersionError, match=r"given event 1 .*version 4, newer than this code's 3"
    ):
        given(wallet, "w-1", [(DepositedV2(amount_cents=1), 4)], adapters=adapters)


def test_given_events_projects_old_events_through_the_adapters() -> None:
    adapters = wallet_v2.EVENT_ADAPTERS
    given_events(balances, ("w-1", Deposited(amount=3)), adapters=adapters).then_row("w-1", b"300")
    versions = event_versions("tests.apps.wallet_v2")
    scenario = given_events(
        balances,
        ("w-1", DepositedV2(amount_cents=4)),
        ("w-2", DepositedV2(amount_cents=5), 3),
        adapters=adapters,
        versions=versions,
    )
    scenario.then_rows({"w-1": b"4"}).then_dead_letters("version 3, newer than this code's 2")


def test_a_version_that_is_not_an_ascii_number_is_refused_not_crashed_on() -> None:
    env = EventEnvelope(payload=pack(DepositedV2()), event_type="evolution.v1.DepositedV2")
    env.metadata[VERSION_KEY] = "²"  # str.isdigit() says yes, int() says no
    why = newer_event(env, 2)
    assert why is not None and "not a version number" in why


def test_an_event_sourced_behaviors_state_version_is_not_an_event_version() -> None:
    odd = EventSourcedBehavior("odd", Wallet, state_version=3)  # folds events of its state type

    @odd.event(Wallet)
    def replace(state: Wallet, event: Wallet) -> Wallet:
        state.CopyFrom(event)
        return state

    assert declared_version(odd, "evolution.v1.Wallet") == 1
    durable = DurableStateBehavior("card", Wallet, state_version=3)
    assert declared_version(durable, "evolution.v1.Wallet") == 3
