"""Snapshots rebuilt from the events, when a partition's snapshot changelog is missing or behind.

The events topic is the truth and the changelog a cache of it. If the changelog lost records (the
topic was deleted and recreated, or replaced by another cluster's), the group's committed offset
on the commands partition is past the last checkpoint the changelog holds: the commands up to
there were applied and their events are on the log, but the recovered state does not know them.
Taking commands from there would start entities at revision 0 again and write `<entity>@1` a
second time, and the compacted events topic would then drop the first one: history rewritten.
So such a partition is rebuilt from its events partition before it takes any command.

Why no event key is written twice afterwards: the rebuild reads the events partition to its end
(read_committed: every committed transaction's events, and the group's committed offset is
written in those same transactions), so each entity's recovered revision is its last revision
on the log, and the worker writes revision + 1 next.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from kes.schemas.codec import decode_event
from kes.schemas.errors import KesError, KeyUnavailableError
from kes.schemas.kes.v1.envelopes_pb2 import Reply
from kes.schemas.personal import has_personal
from kes.stores.snapshots import Checkpoint, PartitionSnapshots
from kes.streams.config.durablestate import refuse_fold
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.behavior import Behavior
from kes.streams.core.eventversions import check_event_version
from kes.streams.core.keyring import Keyring
from kes.streams.cycle.entity import Entity
from kes.streams.cycle.idempotency import OutcomePolicy, encode_outcome, outcome_key
from kes.streams.cycle.records import (
    CHECKPOINT_KEY,
    ERASED_EVENT_TYPE,
    OutRecord,
    encode_checkpoint,
)
from kes.streams.kafka.readback import read_records
from kes.streams.runtime.transaction import produce_waiting
from kes.topology.layout import AggregateTopics

__all__ = ["Rebuilt", "fold_partition", "needs_rebuild", "rebuild_partition"]

log = logging.getLogger(__name__)


def needs_rebuild(checkpoint: Checkpoint, committed: int) -> bool:
    """True when the group has committed commands the recovered changelog does not reflect."""
    return committed > 0 and committed > checkpoint.next_command_offset


@dataclass
class Rebuilt:
    """One partition's state folded from its events."""

    entities: dict[str, Entity] = field(default_factory=dict)
    outcomes: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    """Accepted commands' outcomes (key -> value), oldest first, inside the policy's bounds."""
    events: int = 0


def fold_partition(
    behavior: Behavior[Any],
    records: Iterable[tuple[int, bytes | None]],
    partition: int,
    *,
    adapters: EventAdapters | None = None,
    recent_command_ids: int = 32,
    outcomes: OutcomePolicy | None = None,
    now_ms: int | None = None,
    keys: Keyring | None = None,
    source: str = "",
) -> Rebuilt:
    """Fold `(offset, event value)` in offset order into each entity's state (pure).

    With personal fields, `keys` opens the events and gives each entity its data key back, so
    the rebuilt snapshots are sealed as before. An EntityErased event makes its entity the
    erasure marker, whatever came before it (its events may be compacted away already).
    Raises KesError if an entity's revisions on the log are not 1, 2, 3, ... (a log that is
    itself damaged is not something to build on), or if the aggregate has personal fields
    and no keyring with a master key is given; SchemaVersionError for an event newer than the
    behavior declares (kes.streams.core.eventversions), named by `source` (`topic[partition]`)
    and its offset.
    """
    source = source or f"events[{partition}]"
    personal = has_personal([behavior.state_type, *behavior.event_types])
    if personal and (keys is None or keys.master is None):
        raise KeyUnavailableError(
            f"aggregate {behavior.name!r} has personal fields: rebuilding its snapshots needs "
            "the master key (KES_MASTER_KEY or KES_MASTER_KEY_FILE)"
        )
    policy = outcomes or OutcomePolicy()
    horizon = (now_ms if now_ms is not None else int(time.time() * 1000)) - policy.horizon_ms
    out = Rebuilt()
    last_command: dict[str, tuple[str, Reply, int]] = {}
    for offset, value in records:
        if value is None:
            continue
        env = decode_event(value)
        if keys is not None:
            keys.open_event(env)
        if adapters is not None:
            env = adapters.adapt(env)
        if env.event_type == ERASED_EVENT_TYPE:
            state = behavior.initial_state(env.entity_id)
            out.entities[env.entity_id] = Entity(
                env.entity_id, env.revision, state, [], env.source_offset, erased=True
            )
            out.events += 1
            continue
        entity = out.entities.get(env.entity_id)
        if entity is None:
            state = behavior.initial_state(env.entity_id)
            entity = out.entities[env.entity_id] = Entity(env.entity_id, 0, state, [])
            if personal and keys is not None:
                entity.key = keys.key(env.entity_id)
        check_event_version(behavior, env, f"{source}@{offset}")
        entity.apply(behavior, env, offset, recent_command_ids)
        out.events += 1
        decided = env.timestamp.seconds * 1000 + env.timestamp.nanos // 1_000_000
        if not policy.enabled or decided < horizon:
            continue
        key = outcome_key(env.entity_id, env.command_id)
        earlier = last_command.get(env.entity_id)
        if earlier is not None and earlier[0] == env.command_id:  # the same command's next event
            reply = earlier[1]
        else:
            reply = Reply(command_id=env.command_id, entity_id=env.entity_id)
            reply.accepted.partition = partition
            last_command[env.entity_id] = (env.command_id, reply, decided)
        reply.accepted.revision = env.revision
        reply.accepted.event_offsets.append(offset)
        out.outcomes[key] = encode_outcome(decided, reply)
        out.outcomes.move_to_end(key)
        while len(out.outcomes) > policy.max_per_partition:
            out.outcomes.popitem(last=False)
    return out


def rebuild_partition(
    behavior: Behavior[Any],
    topics: AggregateTopics,
    partition: int,
    store: PartitionSnapshots,
    committed: int,
    *,
    group: str,
    client_config: Mapping[str, Any],
    adapters: EventAdapters | None = None,
    recent_command_ids: int = 32,
    outcomes: OutcomePolicy | None = None,
    timeout: float = 60.0,
    keys: Keyring | None = None,
) -> Checkpoint:
    """Rebuild one partition's snapshots from its events, on the changelog and in `store`.

    1. read the events partition to its end (committed records) and fold every entity;
    2. write each entity's snapshot, the accepted outcomes inside the horizon and, last, a
       checkpoint record (next command offset = the group's `committed` offset) to the
       changelog, and wait until all are written (a crash before the checkpoint record leaves
       the changelog behind again: the next recovery rebuilds again, idempotently);
    3. write the same to the local store, with that checkpoint, in one write.
    A durable-state aggregate is refused (DurableStateError): its change records expire. An
    event newer than the code raises SchemaVersionError in step 1, before anything is written.
    """
    refuse_fold(behavior, "rebuilding its snapshots from the events topic")
    began = time.monotonic()
    records = read_records(topics.events, topics.partitions, client_config, only=[partition])
    rebuilt = fold_partition(
        behavior,
        ((r.offset, r.value) for r in records),
        partition,
        adapters=adapters,
        recent_command_ids=recent_command_ids,
        outcomes=outcomes,
        keys=keys,
        source=f"{topics.events}[{partition}]",
    )
    producer = Producer({**client_config, "enable.idempotence": True, "acks": "all"})
    failed: list[KafkaError] = []
    landed: list[int] = []

    def done(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failed.append(error)
        else:
            landed.append(int(message.offset() or 0))

    written: dict[str, bytes | None] = {}
    for entity_id, entity in rebuilt.entities.items():
        written[entity_id] = entity.snapshot().SerializeToString()
    written.update(rebuilt.outcomes)
    for key, value in written.items():
        record = OutRecord(topics.snapshots, partition, key.encode(), value or b"", [])
        produce_waiting(producer, record, on_delivery=done)
    checkpoint_value = encode_checkpoint(committed, group)
    record = OutRecord(topics.snapshots, partition, CHECKPOINT_KEY, checkpoint_value, [])
    produce_waiting(producer, record, on_delivery=done)
    left = producer.flush(timeout)
    if left or failed:
        raise KesError(
            f"{topics.snapshots}[{partition}]: rebuilt snapshots not written: "
            f"{failed[0] if failed else f'{left} records still queued'}"
        )
    checkpoint = Checkpoint(max(landed), committed, group)
    store.write(written, checkpoint)
    log.warning(
        "%s[%d]: changelog was behind the group's offset %d: rebuilt %d entities from %d events "
        "in %.1fs",
        topics.snapshots, partition, committed, len(rebuilt.entities), rebuilt.events,
        time.monotonic() - began,
    )  # fmt: skip
    return checkpoint
