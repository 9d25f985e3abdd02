"""The rules of a migration to another partition count (kes.streams.operations.migration), without a
broker."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.codec import decode_snapshot, encode_snapshot, pack
from kes.schemas.errors import MigrationError
from kes.schemas.kes.v1.envelopes_pb2 import RejectionCode, Reply, Snapshot
from kes.schemas.kes.v1.personal_pb2 import DataKey
from kes.streams.cycle.idempotency import decode_outcome, encode_outcome, outcome_key
from kes.streams.cycle.records import CHECKPOINT_KEY, ERASED_EVENT_TYPE, encode_checkpoint
from kes.streams.operations.migration import (
    SourceState,
    TargetProgress,
    outcome_entity,
    rewrite_outcome,
    rewrite_snapshot,
    same_state,
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


def _marker(entity_id: str, revision: int) -> bytes:
    """An erased entity's snapshot, as `kes erase` leaves it."""
    return encode_snapshot(
        Snapshot(entity_id=entity_id, revision=revision, source_offset=88, erased=True)
    )


def _sealed(entity_id: str, revision: int, wrapped: bytes) -> bytes:
    snapshot = decode_snapshot(_snapshot(entity_id, revision))
    snapshot.wrapped_key, snapshot.master_key_id = wrapped, "m1"
    snapshot.sealed.nonce, snapshot.sealed.ciphertext = b"n" * 12, b"secret"
    return encode_snapshot(snapshot)


def _data_key(entity_id: str, wrapped: bytes = b"", erased: bool = False) -> bytes:
    return DataKey(
        entity_id=entity_id, wrapped_key=wrapped, master_key_id="m1", erased=erased
    ).SerializeToString()


_ERASED = ERASED_EVENT_TYPE
_UNCOMPACTED = [  # (entity, revision, event type, tombstone) in log order
    ("e", 1, "customers.v1.CustomerRegistered", False),
    ("k", 1, "customers.v1.CustomerRegistered", False),
    ("e", 2, "customers.v1.EmailChanged", False),
    ("e", 3, _ERASED, False),  # the erasing transaction: EntityErased, then the tombstones
    ("e", 1, "", True),
    ("e", 2, "", True),
    ("k", 2, "customers.v1.EmailChanged", False),
]
_COMPACTED = [  # the cleaner removed e@1, e@2 and the tombstone of e@1; e@2's is still there
    ("e", 3, _ERASED, False),
    ("e", 2, "", True),
    ("k", 1, "customers.v1.CustomerRegistered", False),
    ("k", 2, "customers.v1.EmailChanged", False),
]


@pytest.mark.parametrize("log", [_UNCOMPACTED, _COMPACTED], ids=["uncompacted", "compacted"])
def test_an_erased_entity_moves_as_erasure_and_compaction_leave_it(
    log: list[tuple[str, int, str, bool]],
) -> None:
    state = SourceState()
    state.changelog(0, b"e", _marker("e", 3))
    state.changelog(0, b"k", _sealed("k", 2, b"wrapped-k"))
    erase = Reply(command_id="kes-erase", entity_id="e")
    erase.accepted.revision, erase.accepted.partition = 3, 1
    erase.accepted.event_offsets.append(44)
    state.changelog(0, outcome_key("e", "kes-erase").encode(), encode_outcome(9, erase))
    refused = Reply(command_id="late", entity_id="e")
    refused.rejected.code = RejectionCode.ERASED
    state.changelog(0, outcome_key("e", "late").encode(), encode_outcome(9, refused))
    same_batch = outcome_key("e", "c-before")  # decided in the erasing batch: names e@2
    state.changelog(0, same_batch.encode(), _accepted("e", "c-before", 2, [41]))
    state.key(b"e", _data_key("e", b"wrapped-e"))
    state.key(b"k", _data_key("k", b"wrapped-k"))
    state.key(b"e", _data_key("e", erased=True))
    copied = []
    for entity_id, revision, event_type, tombstone in log:
        state.event(entity_id, revision, "t", event_type, tombstone)
        if state.copies(entity_id, revision, tombstone):
            copied.append((entity_id, revision))
    assert sorted(copied) == [("e", 3), ("k", 1), ("k", 2)]  # nothing of e's erased events
    assert (state.revisions, state.events, state.problems()) == ({"e": 3, "k": 2}, 3, [])
    assert state.left_behind == len(log) - 3
    assert state.starts() == {"e": 3}
    assert set(state.copied_outcomes()) == {outcome_key("e", "kes-erase"), outcome_key("e", "late")}
    assert state.wanted() == {("e", 3)}
    records = state.key_records()
    marker = DataKey.FromString(records["e"])
    assert marker.erased and not marker.wrapped_key
    assert DataKey.FromString(records["k"]).wrapped_key == b"wrapped-k"
    progress = TargetProgress(state.wanted(), start=state.starts())
    progress.landed("e", 3, 7, "n[0]")
    progress.landed("k", 1, 8, "n[0]")
    assert (progress.first, progress.offsets) == ({"e": 7, "k": 8}, {("e", 3): 7})
    with pytest.raises(MigrationError, match="'e' revision 1 follows revision 3"):
        progress.landed("e", 1, 9, "n[0]")  # an erased event on the new set: never written


def test_an_erased_entitys_key_is_never_copied_and_its_marker_stays_a_marker() -> None:
    state = SourceState()
    state.changelog(0, b"e", _marker("e", 2))
    state.key(b"e", _data_key("e", b"wrapped-e"))  # not replaced: copied as a marker anyway
    marker = DataKey.FromString(state.key_records()["e"])
    assert (marker.entity_id, marker.erased, marker.wrapped_key) == ("e", True, b"")
    new = decode_snapshot(rewrite_snapshot(_marker("e", 2), 500))
    assert (new.erased, new.revision, new.source_offset) == (True, 2, -1)
    assert not new.HasField("state") and new.first_event_offset == 0 and not new.wrapped_key


def test_what_an_erased_or_live_entitys_log_may_not_hold() -> None:
    state = SourceState()
    state.changelog(0, b"e", _marker("e", 2))
    state.event("e", 1, "t")
    with pytest.raises(
        MigrationError, match=r"erased at revision 2 .* a EmailChanged at revision 2"
    ):
        state.event("e", 2, "t", "EmailChanged")
    with pytest.raises(MigrationError, match="a tombstone at revision 2"):
        state.event("e", 2, "t", tombstone=True)
    with pytest.raises(MigrationError, match="revision 3"):
        state.event("e", 3, "t", "EmailChanged")
    state.event("a", 1, "t")
    with pytest.raises(
        MigrationError, match="a tombstone for 'a' revision 1, an entity that is not"
    ):
        state.event("a", 1, "t", tombstone=True)


def test_a_sealed_snapshot_needs_its_data_key_on_the_keys_topic() -> None:
    state = SourceState()
    for entity_id in ("ok", "none", "other", "erased-key"):
        state.changelog(0, entity_id.encode(), _sealed(entity_id, 1, b"w-" + entity_id.encode()))
        state.event(entity_id, 1, "t")
    state.key(b"ok", _data_key("ok", b"w-ok"))
    state.key(b"other", _data_key("other", b"w-else"))
    state.key(b"erased-key", _data_key("erased-key", erased=True))
    state.key(b"none", _data_key("none", b"w-none"))
    state.key(b"none", None)  # a tombstone removes it
    assert sorted(state.problems()) == [
        "'erased-key': its snapshot's data key is not its keys-topic record's",
        "'none': a sealed snapshot and no record on the keys topic",
        "'other': its snapshot's data key is not its keys-topic record's",
    ]


def _profile_state(entity_id: str, revision: int) -> bank_pb2.Profile:
    return bank_pb2.Profile(customer_id=entity_id, email=f"{entity_id}@x.org", changes=revision)


def _profile(entity_id: str, revision: int) -> bytes:
    """A change record's payload: the packed new state."""
    return pack(_profile_state(entity_id, revision)).SerializeToString()


def _profile_snapshot(entity_id: str, revision: int) -> bytes:
    state = pack(_profile_state(entity_id, revision))
    return encode_snapshot(Snapshot(entity_id=entity_id, revision=revision, state=state))


def _durable(log: list[tuple[str, int]], snapshots: dict[str, int]) -> SourceState:
    """A durable-state set: its changelog's snapshots, then its retained changes in log order."""
    state = SourceState(durable=True)
    for entity_id, revision in snapshots.items():
        state.changelog(0, entity_id.encode(), _profile_snapshot(entity_id, revision))
    for entity_id, revision in log:
        state.event(entity_id, revision, "t[0]")
        state.change(entity_id, _profile(entity_id, revision))
    return state


def test_durable_state_retains_changes_from_any_revision_and_snapshots_alone() -> None:
    """Retention deleted a's changes 1-2 and all of b's: a starts at 3, b is its snapshot."""
    state = _durable([("a", 3), ("c", 1), ("a", 4), ("c", 2)], {"a": 4, "b": 7, "c": 2})
    assert state.problems() == []
    assert state.starts() == {"a": 3, "c": 1}
    assert (state.revisions, state.events) == ({"a": 4, "c": 2}, 4)
    with pytest.raises(MigrationError, match="'a' revision 6 follows revision 4"):
        state.event("a", 6, "t[0]@9")


def test_durable_states_latest_change_must_be_its_snapshot() -> None:
    state = _durable([("a", 1), ("a", 2), ("b", 5), ("d", 1)], {"a": 3, "b": 5, "d": 1})
    state.change("b", _profile("b", 4))  # revision 5's record holds another state
    assert sorted(state.problems()) == [
        "'a': snapshot at revision 3, changes up to 2",
        "'b': snapshot (revision 5) is not its latest change",
    ]
    state.snapshots.pop("d")
    assert "'d': 1 changes, no snapshot" in state.problems()


def test_a_durable_resume_needs_the_changes_after_what_the_new_set_holds() -> None:
    """An earlier run copied a@3..4, b@1 and c@1..2; since then retention deleted a@3..5 and all
    of b's and c's: a and b cannot be completed, c already is."""
    state = _durable([("a", 6)], {"a": 6, "b": 2, "c": 2})
    assert state.resume_problems({"a": 4, "b": 1, "c": 2}) == [
        "'a': the new set holds its changes to revision 4, the old set's now start at 6 "
        "(retention deleted changes since the earlier run)",
        "'b': the new set holds its changes to revision 1, the old set's now start at 3 "
        "(retention deleted changes since the earlier run)",
    ]
    assert state.resume_problems({"a": 5}) == []
    assert SourceState().resume_problems({"a": 1}) == []  # event-sourced: landed() checks


def test_a_durable_target_may_begin_before_the_retained_changes() -> None:
    progress = TargetProgress(wanted={("a", 4)}, start={"a": 4}, durable=True)
    progress.landed("a", 3, 10, "n[0]")  # copied by an earlier run, deleted on the old set since
    progress.landed("a", 4, 11, "n[0]")
    assert (progress.first, progress.first_revision, progress.offsets) == (
        {"a": 10}, {"a": 3}, {("a", 4): 11},
    )  # fmt: skip
    strict = TargetProgress(wanted=set(), start={"a": 4})
    with pytest.raises(MigrationError, match="'a' revision 3 follows revision 3"):
        strict.landed("a", 3, 10, "n[0]")


def test_an_outcome_whose_change_expired_names_no_offsets_and_still_answers() -> None:
    value = rewrite_outcome(
        outcome_key("a", "c1"), _accepted("a", "c1", 2, [8]), 3, lambda e, r: None
    )
    decided, reply = decode_outcome(value)
    assert (reply.accepted.revision, reply.accepted.partition) == (2, 3)
    assert list(reply.accepted.event_offsets) == [] and decided == 1_700_000_000_000


def test_a_change_holds_its_snapshots_state_by_bytes_or_by_value() -> None:
    snapshot = decode_snapshot(_profile_snapshot("a", 2))
    assert same_state(_profile("a", 2), snapshot.state)
    assert not same_state(_profile("a", 1), snapshot.state)
    unknown = any_pb2.Any(type_url="type.googleapis.com/no.such.Type", value=b"\x08\x01")
    assert not same_state(unknown.SerializeToString(), snapshot.state)


def test_a_durable_resume_takes_an_entity_whose_old_changes_all_expired_since() -> None:
    """c@5..6 were copied by an earlier run; retention has deleted every change of c on the old
    set since, so c has no start there: what the new set holds begins at 5, not at 1."""
    progress = TargetProgress(wanted=set(), start={}, durable=True)
    progress.landed("c", 5, 20, "n[0]")
    progress.landed("c", 6, 21, "n[0]")
    assert (progress.first_revision, progress.present) == ({"c": 5}, {"c": 6})
