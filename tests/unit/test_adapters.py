"""Event adapters: old events read as current ones, chained, by type and schema version."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import pack, type_name, unpack, unpack_as
from kes.schemas.errors import ConfigurationError, DecodeError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.core.adapters import VERSION_KEY, EventAdapters


def _legacy_class(name: str) -> type[Message]:
    """A message `kestest.legacy.<name>` with `int64 cents = 1`, added to the default pool once."""
    pool = descriptor_pool.Default()
    full = f"kestest.legacy.{name}"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"kestest/legacy/{name}.proto", package="kestest.legacy", syntax="proto3"
    )
    msg = fdp.message_type.add(name=name)
    msg.field.add(
        name="cents",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full))


DepositV1 = _legacy_class("DepositV1")
DepositV2 = _legacy_class("DepositV2")


def _env(payload: Message, **metadata: str) -> EventEnvelope:
    return EventEnvelope(
        entity_id="acc-1",
        revision=3,
        payload=pack(payload),
        event_type=type_name(payload),
        command_id="c-1",
        metadata=metadata,
    )


def _cents(msg: Message) -> int:
    value: int = getattr(msg, "cents")  # noqa: B009 (dynamic legacy type)
    return value


def test_no_adapter_returns_the_same_envelope() -> None:
    env = _env(bank_pb2.AccountCredited(account_id="acc-1", amount=5, balance=5))
    assert EventAdapters().adapt(env) is env


def test_adapter_replaces_payload_and_event_type_and_keeps_the_rest() -> None:
    adapters = EventAdapters()

    @adapters.adapter(DepositV2)
    def v2_to_credited(old: Message) -> Message:
        return bank_pb2.AccountCredited(amount=_cents(old))

    env = _env(DepositV2(cents=250))
    adapted = adapters.adapt(env)
    assert adapted.event_type == "bank.v1.AccountCredited"
    assert unpack_as(adapted.payload, bank_pb2.AccountCredited).amount == 250
    assert (adapted.entity_id, adapted.revision, adapted.command_id) == ("acc-1", 3, "c-1")
    assert env.event_type == "kestest.legacy.DepositV2"  # the input is not modified


def test_adapters_chain_old_to_newer_to_newest() -> None:
    adapters = EventAdapters()
    adapters.register(DepositV1, lambda old: DepositV2(cents=_cents(old) * 100))
    adapters.register(DepositV2, lambda old: bank_pb2.AccountCredited(amount=_cents(old)))
    adapted = adapters.adapt(_env(DepositV1(cents=3)))
    assert unpack(adapted.payload) == bank_pb2.AccountCredited(amount=300)


def test_version_specific_adapter_wins_and_the_version_moves_on() -> None:
    adapters = EventAdapters()
    adapters.register(
        DepositV1, lambda old: DepositV1(cents=_cents(old) * 100), version="1", to_version="2"
    )
    adapters.register(DepositV1, lambda old: DepositV2(cents=_cents(old)), version="2")
    adapted = adapters.adapt(_env(DepositV1(cents=7), **{VERSION_KEY: "1"}))
    assert unpack(adapted.payload) == DepositV2(cents=700)
    assert VERSION_KEY not in adapted.metadata
    untouched = _env(DepositV1(cents=7), **{VERSION_KEY: "3"})
    assert adapters.adapt(untouched) is untouched


def test_packed_adapter_gets_the_any_of_a_type_that_no_longer_exists() -> None:
    adapters = EventAdapters()
    seen: list[str] = []

    def from_gone(old: Message) -> Message:
        assert isinstance(old, any_pb2.Any)
        seen.append(old.TypeName())
        return bank_pb2.AccountCredited(amount=int(old.value.decode()))

    adapters.register("legacy.v0.Gone", from_gone, packed=True)
    env = EventEnvelope(
        entity_id="acc-1",
        event_type="legacy.v0.Gone",
        payload=any_pb2.Any(type_url="type.googleapis.com/legacy.v0.Gone", value=b"42"),
    )
    assert unpack(adapters.adapt(env).payload) == bank_pb2.AccountCredited(amount=42)
    assert seen == ["legacy.v0.Gone"]


def test_unregistered_old_type_without_packed_is_a_decode_error() -> None:
    adapters = EventAdapters()
    adapters.register("legacy.v0.Gone", lambda old: old)
    env = EventEnvelope(
        event_type="legacy.v0.Gone",
        payload=any_pb2.Any(type_url="type.googleapis.com/legacy.v0.Gone", value=b""),
    )
    with pytest.raises(DecodeError):
        adapters.adapt(env)


def test_a_cycle_is_a_configuration_error() -> None:
    adapters = EventAdapters()
    adapters.register(DepositV1, lambda old: DepositV2(cents=_cents(old)))
    adapters.register(DepositV2, lambda old: DepositV1(cents=_cents(old)))
    with pytest.raises(ConfigurationError, match="loop"):
        adapters.adapt(_env(DepositV1(cents=1)))


def test_duplicate_registration_and_non_message_results_are_refused() -> None:
    adapters = EventAdapters()
    adapters.register(DepositV1, lambda old: old)
    with pytest.raises(ConfigurationError, match="already"):
        adapters.register("kestest.legacy.DepositV1", lambda old: old)
    bad = EventAdapters()
    bad.register(DepositV1, lambda old: "nope")  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match="not a protobuf message"):
        bad.adapt(_env(DepositV1(cents=1)))
