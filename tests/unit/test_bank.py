"""The bank account, specified with the test kit: given history, when a command, then events."""

from __future__ import annotations

import kes.examples.bank
from kes.examples.bank import BEHAVIORS, account
from kes.examples.bank.domain import MAX_BALANCE
from kes.schemas.bank.v1.bank_pb2 import (
    Account,
    AccountClosed,
    AccountCredited,
    AccountDebited,
    AccountOpened,
    CloseAccount,
    CreditAccount,
    DebitAccount,
    OpenAccount,
)
from kes.streams.core.decision import RejectionCode
from kes.streams.core.testkit import given

VALIDATION = RejectionCode.VALIDATION
OPENED = AccountOpened(account_id="acc-1", owner="ann", balance=100)


def test_the_package_exports_its_behaviors() -> None:
    assert list(BEHAVIORS) == [account]
    assert kes.examples.bank.__all__ == ["BEHAVIORS", "PROJECTIONS", "account"]
    assert account.name == "account"
    assert set(account.command_types) == {OpenAccount, CreditAccount, DebitAccount, CloseAccount}
    assert set(account.event_types) == {
        AccountOpened,
        AccountCredited,
        AccountDebited,
        AccountClosed,
    }


def test_a_new_account_is_closed_and_knows_its_id() -> None:
    assert account.initial_state("acc-1") == Account(account_id="acc-1")


def test_open_a_new_account() -> None:
    (
        given(account, "acc-1", [])
        .when(OpenAccount(account_id="acc-1", owner="ann", opening_balance=100))
        .then(OPENED)
        .then_state(Account(account_id="acc-1", owner="ann", balance=100, open=True))
        .then_revision(1)
    )


def test_open_with_no_account_id_uses_the_entity_id() -> None:
    given(account, "acc-1").when(OpenAccount(owner="ann", opening_balance=100)).then(OPENED)


def test_open_with_a_zero_balance() -> None:
    given(account, "acc-1").when(OpenAccount(owner="ann")).then(
        AccountOpened(account_id="acc-1", owner="ann", balance=0)
    )


def test_open_with_a_negative_balance_is_refused() -> None:
    (
        given(account, "acc-1")
        .when(OpenAccount(owner="ann", opening_balance=-1))
        .then_rejected(VALIDATION, "must not be negative")
        .then_state(Account(account_id="acc-1"))
        .then_revision(0)
    )


def test_open_twice_is_refused() -> None:
    (
        given(account, "acc-1", [OPENED])
        .when(OpenAccount(owner="bob", opening_balance=5))
        .then_rejected(VALIDATION, "already open")
        .then_state(Account(account_id="acc-1", owner="ann", balance=100, open=True))
    )


def test_a_mismatched_account_id_is_refused() -> None:
    given(account, "acc-1").when(OpenAccount(account_id="acc-2")).then_rejected(
        VALIDATION, "does not match entity"
    )
    given(account, "acc-1", [OPENED]).when(CreditAccount(account_id="x", amount=1)).then_rejected(
        VALIDATION, "does not match entity"
    )
    given(account, "acc-1", [OPENED]).when(DebitAccount(account_id="x", amount=1)).then_rejected(
        VALIDATION, "does not match entity"
    )


def test_credit_an_open_account() -> None:
    (
        given(account, "acc-1", [OPENED])
        .when(CreditAccount(account_id="acc-1", amount=50))
        .then(AccountCredited(account_id="acc-1", amount=50, balance=150))
        .then_state(Account(account_id="acc-1", owner="ann", balance=150, open=True))
        .then_revision(2)
    )


def test_debit_an_open_account() -> None:
    (
        given(account, "acc-1", [OPENED])
        .when(DebitAccount(account_id="acc-1", amount=30))
        .then(AccountDebited(account_id="acc-1", amount=30, balance=70))
        .then_state(Account(account_id="acc-1", owner="ann", balance=70, open=True))
    )


def test_debit_the_whole_balance() -> None:
    given(account, "acc-1", [OPENED]).when(DebitAccount(amount=100)).then(
        AccountDebited(account_id="acc-1", amount=100, balance=0)
    )


def test_debit_beyond_the_balance_is_refused() -> None:
    (
        given(account, "acc-1", [OPENED])
        .when(DebitAccount(amount=101))
        .then_rejected(VALIDATION, "insufficient funds")
        .then_state(Account(account_id="acc-1", owner="ann", balance=100, open=True))
        .then_revision(1)
    )


def test_credit_or_debit_a_closed_account_is_refused() -> None:
    given(account, "acc-1").when(CreditAccount(amount=5)).then_rejected(
        VALIDATION, "account not open"
    )
    given(account, "acc-1").when(DebitAccount(amount=5)).then_rejected(
        VALIDATION, "account not open"
    )


def test_non_positive_amounts_are_refused() -> None:
    for amount in (0, -5):
        given(account, "acc-1", [OPENED]).when(CreditAccount(amount=amount)).then_rejected(
            VALIDATION, "amount must be positive"
        )
        given(account, "acc-1", [OPENED]).when(DebitAccount(amount=amount)).then_rejected(
            VALIDATION, "amount must be positive"
        )


def test_a_credit_that_would_overflow_is_refused() -> None:
    rich = AccountOpened(account_id="acc-1", owner="ann", balance=MAX_BALANCE - 1)
    given(account, "acc-1", [rich]).when(CreditAccount(amount=1)).then(
        AccountCredited(account_id="acc-1", amount=1, balance=MAX_BALANCE)
    )
    given(account, "acc-1", [rich]).when(CreditAccount(amount=2)).then_rejected(
        VALIDATION, "overflow"
    )


def test_a_day_at_the_bank() -> None:
    (
        given(account, "acc-1")
        .when(OpenAccount(owner="ann", opening_balance=10))
        .then(AccountOpened(account_id="acc-1", owner="ann", balance=10))
        .when(CreditAccount(amount=15))
        .then(AccountCredited(account_id="acc-1", amount=15, balance=25))
        .when(DebitAccount(amount=30))
        .then_rejected(VALIDATION, "insufficient funds")
        .when(DebitAccount(amount=25))
        .then(AccountDebited(account_id="acc-1", amount=25, balance=0))
        .then_state(Account(account_id="acc-1", owner="ann", balance=0, open=True))
        .then_revision(3)
    )
