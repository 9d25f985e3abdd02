"""Personal data under a snapshot interval (pure): an erasure is logged at once, a fold opens
sealed tails with the entity's one key and never brings an erased entity back; a migration
refuses snapshots that lag their events."""

from __future__ import annotations

import os

import pytest

from kes.examples.customers import customer
from kes.schemas.codec import decode_snapshot, encode_command, new_command
from kes.schemas.customers.v1 import customers_pb2 as c
from kes.schemas.errors import KesError
from kes.schemas.kes.v1.personal_pb2 import DataKey, EraseEntity
from kes.streams.core.keyring import DataKeys, LocalMasterKey
from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.entity import Entity
from kes.streams.cycle.records import CommandRecord, encode_checkpoint
from kes.streams.cycle.result import BatchResult
from kes.streams.cycle.snapshotpolicy import EVENTS_FROM_HEADER, SnapshotPolicy, TailIndex
from kes.streams.operations.migration import SourceState
from kes.streams.runtime.tailfold import TailFold
from kes.topology.layout import AggregateTopics

NEVER = 1 << 40


class _Partition:
    """One partition with an interval of 10: the step, the local store, the changelog, the
    events log (offset = index; None: a tombstone) and the keys topic."""

    def __init__(self) -> None:
        self.keys = DataKeys(LocalMasterKey(os.urandom(32)))
        self.local: dict[str, bytes] = {}
        self.changelog: dict[str, bytes] = {}
        self.log: list[bytes | None] = []
        self.keys_topic: dict[str, DataKey] = {}
        self.tails = TailIndex()
        self.policy = SnapshotPolicy(every=10)
        self.offset = 0
        self.step = self._step()

    def _step(self) -> BatchStep:
        load = lambda e: decode_snapshot(self.local[e]) if e in self.local else None  # noqa: E731
        return BatchStep(
            customer, AggregateTopics("customer", partitions=1), 0, load, keys=self.keys
        )

    def run(self, *commands: tuple[str, object]) -> BatchResult:
        records = []
        for entity, command in commands:
            env = new_command(entity, command, aggregate="customer")  # type: ignore[arg-type]
            value, headers = encode_command(env)
            records.append(CommandRecord(self.offset, entity.encode(), value, headers))
            self.offset += 1
        result = self.step.run(records)
        self.policy.plan(result, self.tails, self.step.entity)
        offsets = []
        for event in result.events:
            offsets.append(len(self.log))
            self.log.append(event.value)
        self.log.extend(None for _ in result.tombstones)
        for entity_id, index in result.first_events.items():
            result.changed[entity_id].first_event_offset = offsets[index]
        result.settle(offsets)
        for entity_id, entity in result.changed.items():
            value = self.local[entity_id] = entity.snapshot().SerializeToString()
            if entity_id not in result.unlogged:
                self.changelog[entity_id] = value
        for key in result.keys:
            self.keys_topic[key.key.decode()] = DataKey.FromString(key.value)
        self.step.commit(result)
        self.tails.commit(result)
        return result

    def cold_fold(self, store: dict[str, bytes], with_keys: bool = True) -> TailFold:
        """A cold restore: the changelog's snapshots, then the events from the low-water."""
        keys = DataKeys(self.keys.master)  # a new worker: nothing cached
        fold = TailFold(
            customer,
            lambda e: (
                Entity.restore(decode_snapshot(store[e]), customer, keys) if e in store else None
            ),
            NEVER,
            keys=keys,
            key_record=self.keys_topic.get if with_keys else None,
        )
        for offset in range(max(self.tails.low_water(), 0), len(self.log)):
            fold.add(offset, self.log[offset])
        fold.finish()
        return fold


def _register(i: int) -> c.RegisterCustomer:
    return c.RegisterCustomer(name=f"Name-{i}", email=f"{i}@x.io")


def test_an_erasure_is_logged_at_once_whatever_the_interval() -> None:
    part = _Partition()
    part.run(("c-1", _register(1)), ("c-2", _register(2)))
    part.run(("c-1", c.ChangeEmail(email="a@x.io")))
    assert "c-1" in part.tails and "c-1" not in part.changelog  # a tail of 2 revisions
    erased = part.run(("c-1", EraseEntity()))
    assert "c-1" not in erased.unlogged and "c-1" in erased.must_log
    marker = decode_snapshot(part.changelog["c-1"])
    assert marker.erased and marker.revision == 3 and marker.pending_revisions == 0
    assert "c-1" not in part.tails
    assert erased.events_from == part.tails.low_water() == 1  # c-2's tail only


def test_a_cold_fold_opens_sealed_tails_with_the_one_key_of_the_keys_topic() -> None:
    part = _Partition()
    part.run(("c-1", _register(1)))
    part.run(("c-1", c.ChangeEmail(email="late@x.io")))
    assert part.changelog == {}  # its key is on the keys topic and in the local store only
    fold = part.cold_fold(part.changelog)
    [(entity_id, entity)] = fold.take().items()
    assert (entity.revision, entity.pending) == (2, 2)
    assert (entity.state.name, entity.state.email) == ("Name-1", "late@x.io")
    assert entity.key is not None
    assert entity.key.wrapped == part.keys_topic["c-1"].wrapped_key
    assert fold.index().low_water() == 0
    # the new owner goes on from the folded store: the same key, no second key record
    part.local = {entity_id: entity.snapshot().SerializeToString()}
    part.step = part._step()
    later = part.run(("c-1", c.ChangeEmail(email="again@x.io")))
    assert later.keys == [] and later.changed["c-1"].revision == 3
    assert decode_snapshot(part.local["c-1"]).wrapped_key == part.keys_topic["c-1"].wrapped_key
    with pytest.raises(KesError, match="sealed and the entity has no data key"):
        part.cold_fold({}, with_keys=False)


def test_a_fold_never_brings_an_erased_entity_back() -> None:
    part = _Partition()
    part.run(("c-9", _register(9)))  # a tail older than every event of c-1: the low-water
    part.run(("c-1", _register(1)), ("c-1", c.ChangeEmail(email="a@x.io")))
    before = dict(part.changelog)  # c-1 not logged yet
    part.run(("c-1", EraseEntity()))
    assert part.tails.low_water() == 0
    fold = part.cold_fold(part.changelog)  # sealed events, tombstones, EntityErased: all skipped
    assert set(fold.take()) == {"c-9"} and "c-1" not in fold.tails
    # a changelog without the marker: the sealed events fold without their personal fields
    # (the key is erased), and the EntityErased after them makes the marker
    stale = part.cold_fold(before)
    entity = stale.take()["c-1"]
    assert entity.erased and entity.revision == 3 and entity.key is None
    assert decode_snapshot(entity.snapshot().SerializeToString()).erased
    part.log = part.log[:3]  # the erasure's transaction cut off: never folded half
    with pytest.raises(KesError, match="no EntityErased"):
        part.cold_fold(before)


def test_a_migration_refuses_snapshots_that_lag_their_events() -> None:
    state = SourceState()
    snapshot = Entity("a", 1, customer.initial_state("a"), []).snapshot().SerializeToString()
    state.changelog(0, b"a", snapshot)
    state.changelog(0, b"", encode_checkpoint(9, "kes"), [(EVENTS_FROM_HEADER, b"4")])
    for revision in (1, 2):
        state.event("a", revision, "events[0]")
    problems = state.problems()
    assert "KES_SNAPSHOT_EVERY" in problems[0] and "kes snapshots rebuild" in problems[0]
    assert problems[1:] == ["'a': snapshot at revision 1, events up to 2"]
    state.changelog(0, b"", encode_checkpoint(9, "kes"))  # rebuilt: no low-water any more
    assert state.unsnapshotted() == []
