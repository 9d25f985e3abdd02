"""Personal data without a broker: marking, sealing, data keys, and erasure in the batch step."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kes.examples.bank import account
from kes.examples.customers import customer
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_event, decode_snapshot, encode_command, new_command, unpack
from kes.schemas.customers.v1 import customers_pb2 as c
from kes.schemas.errors import ConfigurationError, DecodeError, KeyUnavailableError
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode
from kes.schemas.kes.v1.personal_pb2 import DataKey, EraseEntity
from kes.schemas.personal import has_personal, open_sealed, personal_fields, seal
from kes.streams.core.keyring import DataKeys, Keyring, LocalMasterKey, master_key_from_env
from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.records import ERASED_EVENT_TYPE, CommandRecord
from kes.streams.cycle.result import BatchResult
from kes.topology.layout import AggregateTopics

SECRETS = (b"Ann Example", b"ann@example.com", b"ann2@example.com")


def test_marks_come_from_the_proto_option() -> None:
    assert personal_fields(c.Customer) == ["name", "email"]
    assert personal_fields(c.CustomerRegistered) == ["name", "email"]
    assert personal_fields(c.RegisterCustomer) == []  # commands are not sealed
    assert has_personal([customer.state_type, *customer.event_types])
    assert not has_personal([account.state_type, *account.event_types])


def test_seal_clears_the_marked_fields_and_open_puts_them_back() -> None:
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    event = c.CustomerRegistered(name="Ann Example", email="ann@example.com", tier="gold")
    public, sealed = seal(event, aead, "c-1")
    assert sealed is not None
    assert public == c.CustomerRegistered(tier="gold")
    assert all(s not in sealed.SerializeToString() for s in SECRETS)
    whole = open_sealed(
        public.SerializeToString(), sealed, aead, "c-1", "customers.v1.CustomerRegistered"
    )
    assert c.CustomerRegistered.FromString(whole) == event
    with pytest.raises(DecodeError, match="do not decrypt"):  # bound to its entity
        open_sealed(
            public.SerializeToString(), sealed, aead, "c-2", "customers.v1.CustomerRegistered"
        )
    assert seal(c.CustomerRegistered(tier="x"), aead, "c-1") == (
        c.CustomerRegistered(tier="x"),
        None,
    )
    same = bank_pb2.AccountOpened(owner="Ann")
    assert seal(same, aead, "a")[0] is same  # no marked field: nothing copied


def test_master_key_from_the_environment_or_a_file(tmp_path: Path) -> None:
    raw = os.urandom(32)
    assert master_key_from_env({}) is None
    from_env = master_key_from_env({"KES_MASTER_KEY": base64.b64encode(raw).decode()})
    path = tmp_path / "master.key"
    path.write_bytes(raw)
    from_file = master_key_from_env({"KES_MASTER_KEY_FILE": str(path)})
    assert from_env is not None and from_file is not None
    assert from_env.key_id == from_file.key_id
    assert from_file.unwrap(from_env.wrap(b"k" * 32, "e"), "e") == b"k" * 32
    with pytest.raises(KeyUnavailableError):
        from_file.unwrap(from_env.wrap(b"k" * 32, "e"), "other")
    with pytest.raises(ConfigurationError, match="base64"):
        master_key_from_env({"KES_MASTER_KEY": "not base64!"})
    with pytest.raises(ConfigurationError, match="32 bytes"):
        master_key_from_env({"KES_MASTER_KEY": base64.b64encode(b"short").decode()})


def _record(
    offset: int, entity: str, command: object, command_id: str | None = None
) -> CommandRecord:
    env = new_command(
        entity, command, aggregate="customer", reply_wanted=True, command_id=command_id
    )  # type: ignore[arg-type]
    value, headers = encode_command(env)
    return CommandRecord(offset, entity.encode(), value, headers)


class _Partition:
    """A one-partition worker in miniature: the step, its snapshots, commit and abort."""

    def __init__(self) -> None:
        self.keys = DataKeys(LocalMasterKey(os.urandom(32)))
        self.snapshots: dict[str, bytes] = {}
        self.topics = AggregateTopics("customer", partitions=1)
        self.step = BatchStep(customer, self.topics, 0, self._load, keys=self.keys)

    def _load(self, entity_id: str):  # type: ignore[no-untyped-def]
        raw = self.snapshots.get(entity_id)
        return None if raw is None else decode_snapshot(raw)

    def commit(self, result: BatchResult) -> None:
        for entity_id, entity in result.changed.items():
            self.snapshots[entity_id] = entity.snapshot().SerializeToString()
        self.step.commit(result)


def test_a_new_entity_gets_one_key_written_with_its_first_events() -> None:
    part = _Partition()
    register = c.RegisterCustomer(name="Ann Example", email="ann@example.com")
    aborted = part.step.run([_record(0, "c-1", register)])
    part.step.forget()  # the transaction aborted: its key was never written
    result = part.step.run(
        [_record(0, "c-1", register), _record(1, "c-1", c.ChangeEmail(email="ann2@example.com"))]
    )
    assert len(aborted.keys) == len(result.keys) == 1
    assert aborted.keys[0].value != result.keys[0].value
    [key_record] = result.keys
    assert (key_record.topic, key_record.key) == ("customer.keys", b"c-1")
    part.commit(result)
    part.step.forget()  # reloaded from its snapshot: the same key, no new record
    later = part.step.run([_record(2, "c-1", c.ChangeEmail(email="x@example.com"))])
    assert later.keys == [] and later.accepted == 1
    record = DataKey.FromString(key_record.value)
    ring = Keyring(part.keys.master, lambda entity_id: record)
    for out in [*result.events, *later.events]:
        assert all(s not in out.value for s in SECRETS)
        env = ring.open_event(decode_event(out.value))
        assert not env.HasField("sealed")
    assert unpack(ring.open_event(decode_event(result.events[1].value)).payload) == c.EmailChanged(
        email="ann2@example.com"
    )
    snapshot = part.snapshots["c-1"]
    assert all(s not in snapshot for s in SECRETS)
    assert decode_snapshot(snapshot).wrapped_key == record.wrapped_key
    reply = result.replies[0].reply
    assert reply.accepted.HasField("sealed") and b"Ann" not in reply.SerializeToString()


def test_erasure_tombstones_every_event_and_refuses_later_commands() -> None:
    part = _Partition()
    part.commit(part.step.run([
        _record(0, "c-1", c.RegisterCustomer(name="Ann Example", email="ann@example.com")),
        _record(1, "c-1", c.ChangeEmail(email="ann2@example.com")),
    ]))  # fmt: skip
    erased = part.step.run([
        _record(2, "c-1", EraseEntity(), "kes-erase"),
        _record(3, "c-1", c.ChangeEmail(email="b@example.com")),
    ])  # fmt: skip
    assert [t.key for t in erased.tombstones] == [
        b"c-1@00000000000000000001",
        b"c-1@00000000000000000002",
    ]
    [last] = erased.events
    env = decode_event(last.value)
    assert (env.revision, env.event_type) == (3, ERASED_EVENT_TYPE)
    assert DataKey.FromString(erased.keys[0].value) == DataKey(entity_id="c-1", erased=True)
    assert erased.erased == ["c-1"]
    refused = erased.replies[1].reply.rejected
    assert refused.code == RejectionCode.ERASED
    part.commit(erased)
    marker = decode_snapshot(part.snapshots["c-1"])
    assert marker.erased and marker.revision == 3 and not marker.wrapped_key
    assert not marker.HasField("state")
    part.step.forget()
    again = part.step.run([_record(4, "c-1", EraseEntity(), "kes-erase")])  # a re-run
    assert again.accepted == 1 and not again.events and not again.tombstones
    missing = part.step.run([_record(5, "nobody", EraseEntity(), "kes-erase")])
    assert missing.replies[0].reply.rejected.code == RejectionCode.VALIDATION


def test_an_entity_made_and_erased_in_one_batch_gets_its_tombstones_after_its_events() -> None:
    part = _Partition()
    result = part.step.run([
        _record(0, "c-1", c.RegisterCustomer(name="Ann Example", email="ann@example.com")),
        _record(1, "c-1", EraseEntity(), "kes-erase"),
    ])  # fmt: skip
    assert [r.key for r in result.events] == [
        b"c-1@00000000000000000001",
        b"c-1@00000000000000000002",
    ]
    assert [t.key for t in result.tombstones] == [b"c-1@00000000000000000001"]
    assert [DataKey.FromString(k.value).erased for k in result.keys] == [False, True]  # in order


def test_a_worker_without_a_master_key_refuses_personal_aggregates() -> None:
    with pytest.raises(KeyUnavailableError, match="KES_MASTER_KEY"):
        BatchStep(customer, AggregateTopics("customer"), 0, lambda e: None)
    BatchStep(account, AggregateTopics("account"), 0, lambda e: None)  # nothing personal
