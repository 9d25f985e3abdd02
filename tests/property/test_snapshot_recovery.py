"""Snapshot policy: whatever the interval and wherever a worker stops, recovery (changelog, then
the tail folded from the low-water) ends at every entity's latest revision, and no event key is
written twice. A broker-free model of one partition: its events log, its changelog, and the
local stores of two workers it moves between (warm and cold restores, lost local writes)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kes.stores.snapshots import MemorySnapshotStore
from kes.streams.cycle.snapshotpolicy import SnapshotPolicy
from tests.fixtures.snapshotmodel import Partition

ENTITIES = ["a", "b", "c", "d"]


actions = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from(ENTITIES), st.integers(0, 1), st.integers(1, 9)),
        st.tuples(st.just("retry"), st.integers(0, 1000)),
        st.tuples(st.just("batch"), st.integers(1, 6)),
        st.tuples(st.just("abort"), st.integers(1, 6)),
        st.tuples(st.just("lose_local"), st.integers(1, 6)),
        st.tuples(st.just("restart")),
        st.tuples(st.just("cold")),
        st.tuples(st.just("move")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5), st.integers(1, 12), actions)
def test_recovery_ends_at_the_latest_revision_of_every_entity(
    every: int, max_tail: int, plan: list[tuple[object, ...]]
) -> None:
    part = Partition(SnapshotPolicy(every=every, max_tail=max_tail))
    for action in plan:
        kind = action[0]
        if kind == "send":
            part.send(str(action[1]), int(action[2]), int(action[3]))  # type: ignore[call-overload]
        elif kind == "retry":
            part.retry(int(action[1]))  # type: ignore[call-overload]
        elif kind in ("batch", "abort", "lose_local"):
            size = int(action[1])  # type: ignore[call-overload]
            part.batch(size, abort=kind == "abort", lose_local=kind == "lose_local")
        elif kind == "restart":
            part.recover()
        elif kind == "cold":
            part.stores[part.owner] = MemorySnapshotStore().partition("s", 0)
            part.recover()
        else:
            part.owner = 1 - part.owner  # the other worker's store: cold, or an old warm one
            part.recover()
        part.check()
    while part.next < len(part.commands):
        part.batch(6)
    part.recover()
    part.check()
