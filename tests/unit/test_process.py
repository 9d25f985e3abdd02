"""Process managers: the transfer process as specifications, and the rules of `advance`."""

from __future__ import annotations

import pytest

from kes.examples.bank.transfers import transfer, transfer_process
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import encode_event, encode_reply, pack
from kes.schemas.errors import ConfigurationError, SchemaVersionError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Rejected, Reply
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.testkit import given
from kes.streams.processes.advance import route_event, route_reply
from kes.streams.processes.process import (
    PROCESS_ID_KEY,
    PROCESS_KEY,
    STEP_KEY,
    End,
    ProcessManager,
    Send,
    SetTimer,
    Step,
    command_id,
    parse_command_id,
)
from kes.streams.processes.testkit import given_process

T0 = 1_000_000
flow = transfer_process(deadline_ms=10_000, grace_ms=2_000)
REQUESTED = bank_pb2.TransferRequested(
    transfer_id="t-1", from_account="a", to_account="b", amount=30
)


def started() -> object:
    return given_process(flow, "t-1", now_ms=T0).when(REQUESTED)


def test_a_transfer_debits_then_credits_then_completes() -> None:
    (
        given_process(flow, "t-1", now_ms=T0)
        .when(REQUESTED)
        .then_sends(Send("account", "a", bank_pb2.DebitAccount(amount=30), "debit"))
        .then_running()
        .when(bank_pb2.AccountDebited(amount=30, balance=70), now_ms=T0 + 5)
        .then_sends(
            Send(
                "account",
                "b",
                bank_pb2.CreditAccount(amount=30, expires_at_ms=T0 + 10_005),
                "credit",
            )
        )
        .then_timers(SetTimer("credit-deadline", T0 + 12_005))
        .when(bank_pb2.AccountCredited(amount=30, balance=130))
        .then_sends(Send("transfer", "t-1", bank_pb2.CompleteTransfer(transfer_id="t-1"), "end"))
        .then_timers()
        .then_ended(End.COMPLETED)
    )


def test_a_refused_debit_ends_compensated_with_nothing_moved() -> None:
    (
        given_process(flow, "t-1", [REQUESTED])
        .when_rejected(message="insufficient funds")
        .then_sends(
            Send(
                "transfer",
                "t-1",
                bank_pb2.CompensateTransfer(
                    transfer_id="t-1", reason="debit refused: insufficient funds"
                ),
                "end",
            )
        )
        .then_ended(End.COMPENSATED)
    )


def test_a_refused_credit_refunds_the_sender_then_ends_compensated() -> None:
    (
        given_process(flow, "t-1", [REQUESTED, bank_pb2.AccountDebited(amount=30)])
        .when_rejected("credit", "account not open")
        .then_sends(Send("account", "a", bank_pb2.CreditAccount(amount=30), "refund"))
        .then_timers()
        .when(bank_pb2.AccountCredited(amount=30), step="refund")
        .then_sends(
            Send(
                "transfer",
                "t-1",
                bank_pb2.CompensateTransfer(
                    transfer_id="t-1", reason="credit refused: account not open", refunded=True
                ),
                "end",
            )
        )
        .then_ended(End.COMPENSATED)
    )


def test_the_deadline_refunds_once_and_a_later_refusal_changes_nothing() -> None:
    scenario = (
        given_process(flow, "t-1", [REQUESTED], now_ms=T0)
        .when(bank_pb2.AccountDebited(amount=30))
        .when_timer("credit-deadline")
        .then_sends(Send("account", "a", bank_pb2.CreditAccount(amount=30), "refund"))
        .then_timers()
        .when_rejected("credit", "credit expired 3 ms ago")
        .then_sends()
        .then_running()
        .when(bank_pb2.AccountCredited(amount=30), step="refund")
        .then_ended(End.COMPENSATED)
    )
    assert scenario.record is not None
    assert scenario.record.inputs == 5


def test_a_credit_applied_after_the_refund_fails_the_process_loudly() -> None:
    (
        given_process(flow, "t-1", [REQUESTED, bank_pb2.AccountDebited(amount=30)])
        .when_timer("credit-deadline")
        .when(bank_pb2.AccountCredited(amount=30), step="credit")
        .then_sends()
        .then_failed("applied after the deadline")
    )


def test_every_step_is_answered_once() -> None:
    scenario = given_process(flow, "t-1", [REQUESTED]).when_rejected("debit", "no funds")
    # the same rejection again (a replayed reply): the process has ended, it only counts it
    again = scenario.when_rejected("debit", "no funds").then_sends()
    assert again.record is not None and again.record.late_inputs == 1
    # a second start of a running process is ignored
    given_process(flow, "t-1", [REQUESTED]).when(REQUESTED).then_ignored()
    # an answer to a step already answered is ignored
    debited = given_process(flow, "t-1", [REQUESTED, bank_pb2.AccountDebited(amount=30)])
    debited.when(bank_pb2.AccountDebited(amount=30), step="debit").then_ignored()


def test_a_handler_that_raises_fails_the_process_and_sends_nothing() -> None:
    broken = ProcessManager("broken", bank_pb2.TransferProcess, aggregates=["transfer"])

    @broken.starts(bank_pb2.TransferRequested)
    def start(state: bank_pb2.TransferProcess, event: object, ctx: object) -> Step[object]:
        raise ValueError("boom")

    given_process(broken, "t-1").when(REQUESTED).then_sends().then_failed("ValueError: boom")


def test_sending_to_an_aggregate_not_declared_fails() -> None:
    wrong = ProcessManager("wrong", bank_pb2.TransferProcess, aggregates=["transfer"])

    @wrong.starts(bank_pb2.TransferRequested)
    def start(
        state: bank_pb2.TransferProcess, event: object, ctx: object
    ) -> Step[bank_pb2.TransferProcess]:
        return Step(state, send=[Send("account", "a", bank_pb2.DebitAccount(amount=1), "x")])

    given_process(wrong, "t-1").when(REQUESTED).then_failed("sends_to")


def test_names_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        ProcessManager("bad name", bank_pb2.TransferProcess, aggregates=["transfer"])
    with pytest.raises(ConfigurationError):
        ProcessManager("ok", bank_pb2.TransferProcess, aggregates=[])


def test_command_ids_are_deterministic_and_parse_back() -> None:
    cid = command_id("transfer-money", "t/1", "credit")
    assert cid == "transfer-money/t/1/credit"
    assert parse_command_id("transfer-money", cid) == ("t/1", "credit")
    assert parse_command_id("other", cid) is None
    assert parse_command_id("transfer-money", "transfer-money/no-step") is None


def test_routing_keeps_starts_own_events_and_own_rejections_only() -> None:
    start = EventEnvelope(
        entity_id="t-9", revision=1, payload=pack(REQUESTED), aggregate="transfer",
        event_type="bank.v1.TransferRequested",
    )  # fmt: skip
    routed = route_event(flow, encode_event(start))
    assert routed is not None and routed.process_id == "t-9"
    stranger = EventEnvelope(
        entity_id="a", revision=2, payload=pack(bank_pb2.AccountDebited(amount=1)),
        aggregate="account", event_type="bank.v1.AccountDebited",
    )  # fmt: skip
    assert route_event(flow, encode_event(stranger)) is None
    stranger.metadata.update({PROCESS_KEY: flow.name, PROCESS_ID_KEY: "t-9", STEP_KEY: "debit"})
    mine = route_event(flow, encode_event(stranger))
    assert mine is not None and mine.process_id == "t-9"
    assert route_event(flow, b"\xff garbage") is None
    refused = Reply(command_id=command_id(flow.name, "t-9", "credit"), rejected=Rejected())
    routed_reply = route_reply(flow, "account", encode_reply(refused))
    assert routed_reply is not None and routed_reply.process_id == "t-9"
    others = Reply(command_id="a-client-id", rejected=Rejected())
    assert route_reply(flow, "account", encode_reply(others)) is None
    accepted = Reply(command_id=command_id(flow.name, "t-9", "credit"))
    accepted.accepted.revision = 3
    assert route_reply(flow, "account", encode_reply(accepted)) is None


def test_the_transfer_aggregate_ends_once() -> None:
    money = bank_pb2.TransferMoney(from_account="a", to_account="b", amount=5)
    (
        given(transfer, "t-1")
        .when(money)
        .then(bank_pb2.TransferRequested(transfer_id="t-1", from_account="a", to_account="b",
                                         amount=5))
        .when(bank_pb2.CompleteTransfer())
        .then(bank_pb2.TransferCompleted(transfer_id="t-1"))
        .when(bank_pb2.CompensateTransfer(reason="x"))
        .then_rejected(message_contains="completed")
    )  # fmt: skip
    given(transfer, "t-2").when(money).when(money).then_rejected(message_contains="already")


def test_a_credit_past_its_expiry_is_refused() -> None:
    from kes.examples.bank.domain import account

    opened = [bank_pb2.AccountOpened(account_id="b", balance=0)]
    credit = bank_pb2.CreditAccount(amount=5, expires_at_ms=T0)
    given(account, "b", opened).when(credit, decided_ms=T0).then(
        bank_pb2.AccountCredited(account_id="b", amount=5, balance=5)
    )
    given(account, "b", opened).when(credit, decided_ms=T0 + 1).then_rejected(
        message_contains="expired"
    )
    closed = [*opened, bank_pb2.AccountClosed(account_id="b")]
    given(account, "b", closed).when(credit).then_rejected(message_contains="not open")


def test_routing_adapts_old_event_types_first() -> None:
    old = EventEnvelope(
        entity_id="t-8", revision=1, payload=pack(bank_pb2.AccountOpened(owner="x")),
        aggregate="transfer", event_type="bank.v1.AccountOpened",
    )  # fmt: skip
    assert route_event(flow, encode_event(old)) is None  # an old shape that starts nothing
    adapters = EventAdapters()
    adapters.register(bank_pb2.AccountOpened, lambda _: REQUESTED)
    routed = route_event(flow, encode_event(old), adapters)
    assert routed is not None and routed.process_id == "t-8"
    assert routed.event.event_type == "bank.v1.TransferRequested"


def test_routing_refuses_an_event_newer_than_the_app_declares() -> None:
    start = EventEnvelope(
        entity_id="t-9", revision=1, payload=pack(REQUESTED), aggregate="transfer",
        event_type="bank.v1.TransferRequested", metadata={"schema-version": "2"},
    )  # fmt: skip
    versions = {"bank.v1.TransferRequested": 1}
    with pytest.raises(SchemaVersionError, match="schema version 2, newer than this code's 1"):
        route_event(flow, encode_event(start), versions=versions)
    start.metadata["schema-version"] = "1"
    routed = route_event(flow, encode_event(start), versions=versions)
    assert routed is not None and routed.process_id == "t-9"
    unknown = {"bank.v1.SomethingElse": 1}  # a type the app does not declare: not checked
    start.metadata["schema-version"] = "7"
    assert route_event(flow, encode_event(start), versions=unknown) is not None


def test_routing_ignores_the_version_of_an_event_the_process_does_not_handle() -> None:
    other = EventEnvelope(
        entity_id="acc-1", revision=3, payload=pack(bank_pb2.AccountOpened(owner="x")),
        aggregate="account", event_type="bank.v1.AccountOpened", metadata={"schema-version": "9"},
    )  # fmt: skip
    assert route_event(flow, encode_event(other), versions={"bank.v1.AccountOpened": 1}) is None
