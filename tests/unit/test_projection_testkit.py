"""The projection test kit: given events, then rows, through the projector's own step."""

from __future__ import annotations

import pytest

from kes.examples.bank.projections import BalanceRow, balances
from kes.schemas.bank.v1 import bank_pb2
from kes.streams.projections.projection import Projection
from kes.streams.projections.testkit import given_events


def test_balances_after_an_opening_and_two_movements() -> None:
    given_events(
        balances,
        ("acc-1", bank_pb2.AccountOpened(account_id="acc-1", owner="ann", balance=5)),
        ("acc-1", bank_pb2.AccountCredited(account_id="acc-1", amount=3, balance=8)),
        ("acc-2", bank_pb2.AccountOpened(account_id="acc-2", owner="bo", balance=0)),
    ).and_events(
        ("acc-1", bank_pb2.AccountDebited(account_id="acc-1", amount=2, balance=6)),
    ).then_row("acc-1", BalanceRow(6, 3, 3, "ann"), BalanceRow.decode).then_rows(
        {"acc-1": BalanceRow(6, 3, 3, "ann"), "acc-2": BalanceRow(0, 1, 1, "bo")},
        BalanceRow.decode,
    ).then_no_row("acc-3").then_dead_letters()


def test_a_movement_on_an_unknown_account_is_a_dead_letter_and_writes_nothing() -> None:
    scenario = given_events(balances, ("ghost", bank_pb2.AccountCredited(amount=1, balance=1)))
    scenario.then_rows({}).then_dead_letters("movement on an unknown account")


def test_a_wrong_expectation_fails_with_both_values() -> None:
    scenario = given_events(
        balances, ("acc-1", bank_pb2.AccountOpened(account_id="acc-1", owner="ann", balance=5))
    )
    with pytest.raises(AssertionError, match=r"expected BalanceRow\(balance=6"):
        scenario.then_row("acc-1", BalanceRow(6, 1, 1, "ann"), BalanceRow.decode)
    with pytest.raises(AssertionError, match="no row 'acc-9'"):
        scenario.then_row("acc-9", b"")
    with pytest.raises(AssertionError, match="dead letters"):
        scenario.then_dead_letters("anything")


def test_a_deleted_row_is_gone() -> None:
    owners = Projection("owners", ["account"])

    @owners.on(bank_pb2.AccountOpened)
    def opened(event, payload, rows):  # type: ignore[no-untyped-def]
        rows.put(payload.owner, event.entity_id.encode())

    @owners.on(bank_pb2.AccountDebited)
    def closed(event, payload, rows):  # type: ignore[no-untyped-def]
        rows.delete("ann")

    given_events(
        owners,
        ("acc-1", bank_pb2.AccountOpened(owner="ann")),
        ("acc-2", bank_pb2.AccountOpened(owner="bo")),
    ).then_rows({"ann": b"acc-1", "bo": b"acc-2"}).and_events(
        ("acc-1", bank_pb2.AccountDebited(amount=1))
    ).then_rows({"bo": b"acc-2"})
