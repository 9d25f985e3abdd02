"""The rules of a migration to another partition count (streams.migration), without a broker."""

from __future__ import annotations

import pytest

from schemas.bank.v1 import bank_pb2
from schemas.codec import decode_snapshot, encode_snapshot, pack
from schemas.errors import MigrationError
from schemas.kes.v1.envelopes_pb2 import Reply, Snapshot
from streams.batch import CHECKPOINT_KEY, encode_checkpoint
from streams.idempotency import decode_outcome, encode_outcome, outcome_key
from streams.migration import (
    SourceState,
    TargetProgress,
    outcome_entity,
    rewrite_outcome,
    rewrite_snapshot,
)


def _snapshot(entity_id: str, revision: int) -> bytes:
    state = bank_pb2.Account(account_id=entity_id, balance=revision * 10, open=True)
    return encode_snapshot(
        Snapshot(
            entity_id=entity_id,
            revision=revision,
            state=pack(state),
            recent_command_ids=["c1", "c2"],
            source_offset=412,
            first_event_offset=37,
        )
    )


def _accepted(entity_id: str, command_id: str, revision: int, offsets: list[int]) -> bytes:
    reply = Reply(command_id=command_id, entity_id=entity_id)
    reply.accepted.revision = revision
    reply.accepted.partition = 5
    reply.accepted.event_offsets.extend(offsets)
    return encode_outcome(1_700_000_000_000, reply)


def test_the_source_keeps_the_latest_record_per_key_and_the_owners() -> None:
    state = SourceState()
    state.changelog(3, b"a", _snapshot("a", 1))
    state.changelog(3, b"a", _snapshot("a", 2))
    key = outcome_key("a", "c9")
    state.changelog(3, key.encode(), _accepted("a", "c9", 2, [40]))
    state.changelog(3, outcome_key("a", "c8").encode(), _accepted("a", "c8", 1, [39]))
    state.changelog(3, outcome_key("a", "c8").encode(), None)  # expired: a tombstone
    state.changelog(3, CHECKPOINT_KEY, encode_checkpoint(17, "bank"))
    assert decode_snapshot(state.snapshots["a"]).revision == 2
    assert list(state.outcomes) == [key]
    assert (state.owners, state.next_commands) == ({3: "bank"}, {3: 17})
    assert outcome_entity(key) == "a"


def test_the_source_refuses_a_log_whose_revisions_are_not_contiguous() -> None:
    state = SourceState()
    state.event("a", 1, "t[0]@0")
    state.event("b", 1, "t[0]@1")
    state.event("a", 2, "t[0]@2")
    with pytest.raises(MigrationError, match="'a' revision 4 follows revision 2"):
        state.event("a", 4, "t[0]@3")


def test_every_entity_needs_a_snapshot_at_its_last_revision() -> None:
    state = SourceState()
    for entity_id, revisions in (("a", 2), ("b", 1), ("c", 3)):
        for revision in range(1, revisions + 1):
            state.event(entity_id, revision, "t")
    state.changelog(0, b"a", _snapshot("a", 2))  # right
    state.changelog(0, b"c", _snapshot("c", 2))  # behind its events
    state.changelog(0, b"d", _snapshot("d", 1))  # no events at all
    assert sorted(state.problems()) == [
        "'b': 1 events, no snapshot",
        "'c': snapshot at revision 2, events up to 3",
        "'d': a snapshot and no events",
    ]


def test_the_events_outcomes_name_are_wanted_by_entity_and_revision() -> None:
    state = SourceState()
    state.changelog(0, outcome_key("a", "c1").encode(), _accepted("a", "c1", 4, [10, 11, 12]))
    rejected = Reply(command_id="c2", entity_id="b")
    rejected.rejected.current_revision = 7
    state.changelog(0, outcome_key("b", "c2").encode(), encode_outcome(1, rejected))
    assert state.wanted() == {("a", 2), ("a", 3), ("a", 4)}


def test_the_target_holds_a_prefix_of_each_entitys_revisions() -> None:
    progress = TargetProgress(wanted={("a", 2)})
    progress.landed("a", 1, 100, "n[1]")
    progress.landed("b", 1, 101, "n[1]")
    progress.landed("a", 2, 102, "n[1]")
    assert progress.present == {"a": 2, "b": 1}
    assert progress.first == {"a": 100, "b": 101}
    assert progress.offsets == {("a", 2): 102}
    with pytest.raises(MigrationError, match="'b' revision 3 follows revision 1"):
        progress.landed("b", 3, 103, "n[1]")


def test_a_snapshot_names_its_first_event_on_the_new_topic_and_no_old_command() -> None:
    old = decode_snapshot(_snapshot("a", 2))
    new = decode_snapshot(rewrite_snapshot(_snapshot("a", 2), 5))
    assert (new.first_event_offset, new.source_offset) == (5, -1)
    for name in ("entity_id", "revision", "state", "recent_command_ids"):
        assert getattr(new, name) == getattr(old, name), name


def test_an_accepted_outcome_names_its_events_new_partition_and_offsets() -> None:
    key = outcome_key("a", "c1")
    new_offsets = {("a", 3): 70, ("a", 4): 71}
    value = rewrite_outcome(
        key, _accepted("a", "c1", 4, [11, 12]), 19, lambda e, r: new_offsets[(e, r)]
    )
    decided, reply = decode_outcome(value)
    assert decided == 1_700_000_000_000  # it expires when it would have
    assert (reply.accepted.partition, list(reply.accepted.event_offsets)) == (19, [70, 71])
    assert (reply.accepted.revision, reply.command_id) == (4, "c1")
    rejected = Reply(command_id="c2", entity_id="a")
    rejected.rejected.message = "insufficient funds"
    kept = encode_outcome(5, rejected)
    assert rewrite_outcome(outcome_key("a", "c2"), kept, 19, lambda e, r: 0) == kept
