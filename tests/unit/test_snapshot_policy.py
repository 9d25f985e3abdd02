"""The snapshot policy (which changed entities go to the changelog) and the tail fold (pure)."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from kes.examples.bank import account
from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_snapshot
from kes.schemas.errors import ConfigurationError, KesError
from kes.schemas.kes.v1.envelopes_pb2 import Snapshot
from kes.streams.config.settings import Guarantee, Settings
from kes.streams.core.behavior import CommandContext, EventSourcedBehavior
from kes.streams.cycle.entity import Entity
from kes.streams.cycle.snapshotpolicy import (
    EVENTS_FROM_HEADER,
    SnapshotPolicy,
    TailIndex,
    events_from_header,
)
from kes.streams.runtime.tailfold import TailFold
from tests.fixtures.snapshotmodel import Partition


def _open(entity: str) -> tuple[str, Message]:
    return entity, bank_pb2.OpenAccount(owner=entity, opening_balance=1)


def _credit(entity: str, amount: int = 1) -> tuple[str, Message]:
    return entity, bank_pb2.CreditAccount(amount=amount)


def test_every_change_is_snapshotted_with_every_1_and_no_low_water() -> None:
    part = Partition(SnapshotPolicy(every=1))
    first = part.run(_open("a"), _open("b"), _credit("a"))
    assert first.unlogged == set() and first.events_from == -1
    later = part.run(_credit("a"), _credit("b"))
    assert later.unlogged == set() and later.events_from == -1
    # the events' offsets are waited for only when they were before the policy
    assert later.needs_offsets == bool(later.first_events or later.replies)
    assert not later.track_offsets
    assert len(part.tails) == 0
    entity = later.changed["a"]  # the changelog record's bytes: those of a Snapshot without it
    assert (
        entity.snapshot().SerializeToString()
        == Snapshot(
            entity_id="a",
            revision=3,
            state=entity.snapshot().state,
            recent_command_ids=entity.recent_command_ids,
            source_offset=entity.source_offset,
            first_event_offset=entity.first_event_offset,
        ).SerializeToString()
    )


def test_an_entity_is_snapshotted_once_every_n_revisions() -> None:
    part = Partition(SnapshotPolicy(every=3))
    first = part.run(_open("a"), _open("b"))
    assert first.unlogged == {"a", "b"}
    assert first.tail_offsets == {"a": 0, "b": 1}
    assert first.events_from == 0
    assert part.snapshot("a").pending_revisions == 1
    second = part.run(_credit("a"), _credit("a"))  # a reaches 3 revisions
    assert second.unlogged == set()
    assert part.snapshot("a").pending_revisions == 0
    assert second.events_from == 1  # b's tail is left
    assert list(part.tails.items()) == [("b", 1)]
    third = part.run(_credit("b"), _credit("a"))
    assert third.unlogged == {"a", "b"}
    assert third.tail_offsets == {"a": 5}  # b's tail started earlier
    assert third.events_from == 1
    assert list(part.tails.items()) == [("b", 1), ("a", 5)]


def test_a_tail_past_the_bound_is_snapshotted_from_the_stored_state() -> None:
    part = Partition(SnapshotPolicy(every=100, max_tail=3))
    part.run(_open("a"), _open("b"))
    part.run(*[_credit("b")] * 4)  # newest event at offset 5: a's tail (0) is past the bound
    forced = part.run(_credit("b"))
    assert "a" in forced.changed and "a" not in forced.unlogged
    assert forced.changed["a"].snapshot().pending_revisions == 0
    assert forced.changed["a"].revision == 1
    assert "b" not in forced.unlogged  # b's tail (1) is past the bound too
    assert forced.events_from == -1
    assert len(part.tails) == 0


def test_every_1_snapshots_tails_left_by_a_larger_interval() -> None:
    part = Partition(SnapshotPolicy(every=5))
    part.run(_open("a"), _open("b"))
    part.policy = SnapshotPolicy(every=1)
    result = part.run(_open("c"))
    assert set(result.changed) == {"a", "b", "c"} and result.unlogged == set()
    assert result.events_from == -1 and len(part.tails) == 0


def test_a_pending_count_the_tail_index_does_not_know_is_snapshotted() -> None:
    part = Partition(SnapshotPolicy(every=5))
    part.run(_open("a"))
    part.tails = TailIndex()  # as if the local store's count were stale
    part.step.forget()
    result = part.run(_credit("a"))
    assert result.unlogged == set() and result.events_from == -1


def test_an_accepted_command_without_events_is_snapshotted() -> None:
    quiet = EventSourcedBehavior("account", bank_pb2.Account)

    @quiet.command(bank_pb2.OpenAccount)
    def open_account(
        state: bank_pb2.Account, cmd: bank_pb2.OpenAccount, ctx: CommandContext
    ) -> list[Message]:
        return [bank_pb2.AccountOpened(account_id=ctx.entity_id)] if not state.owner else []

    @quiet.event(bank_pb2.AccountOpened)
    def opened(state: bank_pb2.Account, evt: bank_pb2.AccountOpened) -> bank_pb2.Account:
        state.owner = evt.account_id
        return state

    part = Partition(SnapshotPolicy(every=5), quiet)
    assert part.run(_open("a")).unlogged == {"a"}
    again = part.run(_open("a"))  # accepted, no event: its command id is in no event
    assert again.must_log == {"a"} and again.unlogged == set()
    assert again.events_from == -1


def test_the_low_water_header_round_trips() -> None:
    assert events_from_header([(EVENTS_FROM_HEADER, b"42")]) == 42
    assert events_from_header([]) == -1
    assert events_from_header(None) == -1


def test_an_interval_needs_exactly_once() -> None:
    with pytest.raises(ConfigurationError, match="exactly_once"):
        Settings(snapshot_every=10, guarantee=Guarantee.AT_LEAST_ONCE)
    with pytest.raises(ConfigurationError):
        Settings(snapshot_every=0)
    assert Settings.from_env({"KES_SNAPSHOT_EVERY": "10"}).snapshot_every == 10


# -- the tail fold ------------------------------------------------------------------------


def _fold(
    part: Partition, stored: dict[str, Snapshot], events_from: int, next_command: int = 1 << 40
) -> TailFold:
    fold = TailFold(
        account,
        lambda e: Entity.restore(stored[e], account, None) if e in stored else None,
        next_command,
    )
    for offset in range(events_from, len(part.events)):
        fold.add(offset, part.events[offset])
    return fold


def _changelog(part: Partition) -> dict[str, Snapshot]:
    """The snapshots as a cold restore finds them: the last of each entity in the changelog."""
    return {
        c.key: decode_snapshot(c.value)
        for c in part.changelog
        if c.key and not c.key.startswith("\x00") and c.value
    }


def _local(part: Partition, *entities: str) -> dict[str, Snapshot]:
    return {e: part.snapshot(e) for e in entities}


def test_a_cold_fold_of_the_tail_ends_at_the_latest_revision() -> None:
    part = Partition(SnapshotPolicy(every=3))
    part.run(_open("a"), _open("b"))
    logged = part.run(_credit("a"), _credit("a"))  # a to the changelog at revision 3
    assert logged.unlogged == set()
    changelog = _changelog(part)
    assert set(changelog) == {"a"}
    last = part.run(_credit("a", 7), _credit("b", 2))
    fold = _fold(part, changelog, last.events_from)
    folded = fold.take()
    for entity_id in ("a", "b"):
        held = part.step.entity(entity_id)
        got = folded[entity_id]
        assert (got.revision, got.state, got.recent_command_ids, got.pending) == (
            held.revision,
            held.state,
            held.recent_command_ids,
            held.pending,
        )
    assert got.first_event_offset == 1
    assert list(fold.index().items()) == list(part.tails.items())


def test_a_warm_fold_skips_what_the_local_store_holds() -> None:
    part = Partition(SnapshotPolicy(every=10))
    part.run(_open("a"))
    part.run(_credit("a"), _credit("a"))
    fold = _fold(part, _local(part, "a"), 0)  # the local store is ahead of the changelog
    assert fold.folded == 0 and fold.take() == {}
    assert list(fold.index().items()) == [("a", 0)]


def test_a_tail_starting_before_the_low_water_is_refused() -> None:
    part = Partition(SnapshotPolicy(every=10))
    part.run(_open("a"), _credit("a"))
    with pytest.raises(KesError, match="before the recorded low-water"):
        _fold(part, {}, 1)


def test_events_past_the_checkpoint_are_refused() -> None:
    part = Partition(SnapshotPolicy(every=10))
    part.run(_open("a"), _credit("a"))
    with pytest.raises(KesError, match="ahead of the snapshot changelog"):
        _fold(part, {}, 0, next_command=1)
    loose = TailFold(account, lambda _: None, 1, strict=False)  # at-least-once: decided again
    for offset, value in enumerate(part.events):
        loose.add(offset, value)
    assert loose.take()["a"].revision == 1
