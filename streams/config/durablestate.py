"""Durable-state aggregates: the snapshot changelog is the state of record, the changes expire.

A `DurableStateBehavior` answers a command with the entity's new state. The worker writes, in
the command's one transaction, the entity's snapshot to the compacted snapshot changelog (with
every change, whatever `KES_SNAPSHOT_EVERY` says) and one state-changed record to the events
topic (the usual envelope: payload = the new state, the revision, key `<entity>@<revision>`),
so replies, `ask`, projections and process managers read it as any event. That events topic is
declared `cleanup.policy=delete` with `KES_STATE_CHANGES_RETENTION_MS` (7 days): a change is
published for readers, not kept forever.

So nothing may fold such an entity from its change records (the oldest may be gone): recovery
loads the changelog as for any aggregate (its checkpoints never name an events low-water), and
what would refold the events refuses instead, raising DurableStateError: a worker whose
changelog is behind its group's offset, `kes snapshots rebuild`, a tail fold. `kes topics
migrate` moves the snapshots as they are and copies the retained changes
(kes.streams.operations.migration). `kes verify` checks each entity's snapshot against its
latest retained change and the retained revisions for gaps (kes.streams.operations.verify).
"""

from __future__ import annotations

from typing import Any

from kes.schemas.errors import DurableStateError
from kes.streams.config.settings import Settings
from kes.streams.core.behavior import Behavior, DurableStateBehavior
from kes.topology.layout import AggregateTopics

__all__ = ["is_durable_state", "layout_of", "refuse_fold"]


def is_durable_state(behavior: Behavior[Any]) -> bool:
    """True for a durable-state behavior (its changelog is its state of record)."""
    return isinstance(behavior, DurableStateBehavior)


def layout_of(settings: Settings, behavior: Behavior[Any]) -> AggregateTopics:
    """The aggregate's topic layout, its events topic configured for the behavior's kind."""
    return settings.topics(behavior.name, durable_state=is_durable_state(behavior))


def refuse_fold(behavior: Behavior[Any], what: str) -> None:
    """Raise DurableStateError when `what` (e.g. "rebuilding snapshots") would fold a durable-state
    aggregate from its change records; do nothing for an event-sourced one."""
    if is_durable_state(behavior):
        raise DurableStateError(
            f"aggregate {behavior.name!r} keeps durable state: {what} would fold it from its "
            "change records, which expire; its snapshot changelog is the state of record. "
            "Restore that topic (a backup, another cluster's copy) instead"
        )
