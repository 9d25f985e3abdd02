"""One batch of commands of one partition, turned into the records to write: pure, no I/O.

`BatchStep.run` takes raw command records and answers what the partition's transaction must
write: events, snapshot changelog records, replies, dead letters and forwards of misrouted
commands, plus the entities whose snapshots changed. The Kafka adapter
(kes.streams.runtime.transaction) writes them; this module never talks to Kafka, so every rule here
is unit-tested without a broker.

Per command, in order:
 1. decode the envelope (poison -> dead letter with the reason; no reply: the envelope is unread);
 2. route: murmur2(entity id) must be this partition, else forward it there and apply nothing;
 3. retry: an (entity, command id) with an outcome inside the horizon (earlier in this batch,
    or in the partition's outcome store) is answered that outcome, marked as a replay, and
    decided no second time; past the horizon, an id among the entity's recent ids is answered
    DUPLICATE;
 4. expected revision: a mismatch is answered CONFLICT;
 5. decide with the behavior: accepted (events, new state), rejected, or failed (dead letter).
An erased entity takes no command (ERASED), and `kes.v1.EraseEntity` erases one (see `_erase`).
In an aggregate with personal fields (kes.schemas.personal), events, snapshots and replies leave
sealed with the entity's data key, made with its first accepted command (kes.streams.core.keyring).
An event's envelope carries its command's metadata, except `schema-version`
(kes.streams.core.adapters.VERSION_KEY): that is the version the behavior declares for the event's
type, or absent, so a command cannot forge it.
Every routed command decided in steps 4-5 leaves its outcome (kes.streams.cycle.idempotency),
written in the same transaction as its events, except a dead-lettered one (a handler error, a
payload this deployment cannot read, output too large): nothing was decided, so a retry or a redrive
of the dead letter is decided anew.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from kes.schemas.codec import (
    REPLY_PARTITION_HEADER,
    check_entity_id,
    decode_command,
    event_key,
    new_dead_letter,
    pack,
    type_name,
    unpack,
)
from kes.schemas.errors import DeadLetterReason, DecodeError, KeyUnavailableError
from kes.schemas.kes.v1.envelopes_pb2 import Accepted as AcceptedReply
from kes.schemas.kes.v1.envelopes_pb2 import (
    CommandEnvelope,
    EventEnvelope,
    Rejected,
    RejectionCode,
    Reply,
    Snapshot,
)
from kes.schemas.kes.v1.personal_pb2 import DataKey, EntityErased
from kes.schemas.personal import has_personal, seal
from kes.streams.core.adapters import VERSION_KEY
from kes.streams.core.behavior import Behavior
from kes.streams.core.decision import Accepted, CommandContext, Decision, Failed
from kes.streams.core.keyring import DataKeys, EntityKey
from kes.streams.cycle.entity import Entity
from kes.streams.cycle.idempotency import OutcomePolicy, decode_outcome, outcome_key
from kes.streams.cycle.records import (
    ERASE_TYPE_URL,
    CommandRecord,
    Headers,
    OutRecord,
    bounded,
    record_size,
)
from kes.streams.cycle.result import BatchResult, PendingReply
from kes.streams.telemetry.tracing import TRACEPARENT, command_span
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for

__all__ = ["BatchStep"]

_REPLY_ROOM = 4096
"""Bytes kept free under the record limit for a record's other fields and headers."""


class BatchStep:
    """The per-partition command step: holds the behavior, the layout and a bounded entity cache.

    `load(entity_id)` returns the stored Snapshot (or None) when an entity is not in the cache.
    Entities changed by a batch are cached only by `commit`, after their transaction committed.
    """

    def __init__(
        self,
        behavior: Behavior[Any],
        topics: AggregateTopics,
        partition: int,
        load: Callable[[str], Snapshot | None],
        *,
        load_outcome: Callable[[str], bytes | None] = lambda key: None,
        outcomes: OutcomePolicy | None = None,
        max_command_bytes: int = 900_000,
        max_record_bytes: int = 1_000_000,
        recent_command_ids: int = 32,
        cache_size: int = 10_000,
        keys: DataKeys | None = None,
    ) -> None:
        self.behavior = behavior
        self._keys: DataKeys | None = None
        """Set only for an aggregate with personal fields: everything else pays nothing."""
        if has_personal([behavior.state_type, *behavior.event_types]):
            if keys is None:
                raise KeyUnavailableError(
                    f"aggregate {behavior.name!r} has personal fields and no master key is "
                    "configured: set KES_MASTER_KEY or KES_MASTER_KEY_FILE"
                )
            self._keys = keys
        self.topics = topics
        self.partition = partition
        self._load = load
        self._load_outcome = load_outcome
        self.outcomes = outcomes or OutcomePolicy()
        self._max_bytes = max_command_bytes
        self._max_record = max_record_bytes
        self._recent = recent_command_ids
        self._cache: OrderedDict[str, Entity] = OrderedDict()
        self._cache_size = cache_size
        self._owners: dict[str, int] = {}
        self._reply_to = -1
        self._out_headers: Headers = [("aggregate", behavior.name.encode())]
        self._span_name = f"decide {behavior.name}"

    def _owner(self, entity_id: str) -> int:
        """murmur2(entity id) % partitions, remembered for the entities seen recently."""
        owner = self._owners.get(entity_id)
        if owner is None:
            if len(self._owners) >= self._cache_size:
                self._owners.clear()
            owner = self._owners[entity_id] = partition_for(entity_id, self.topics.partitions)
        return owner

    def entity(self, entity_id: str) -> Entity:
        """The committed entity (cache, then store, then the behavior's initial state)."""
        cached = self._cache.get(entity_id)
        if cached is not None:
            self._cache.move_to_end(entity_id)
            return cached
        snap = self._load(entity_id)
        if snap is None:
            state = self.behavior.initial_state(entity_id)
            return Entity(entity_id, 0, state, [], state_version=self.behavior.state_version)
        return Entity.restore(snap, self.behavior, self._keys)

    @property
    def cached(self) -> int:
        """Entities held decoded in the cache."""
        return len(self._cache)

    def commit(self, result: BatchResult) -> None:
        """Cache the batch's entities: call only after its transaction committed."""
        for entity_id, entity in result.changed.items():
            self._cache[entity_id] = entity
            self._cache.move_to_end(entity_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def forget(self) -> None:
        """Drop the cache (after an aborted transaction or a revocation)."""
        self._cache.clear()

    def run(self, records: Sequence[CommandRecord]) -> BatchResult:
        """Decide a batch: see the module docstring for the order of checks."""
        result = BatchResult()
        stamp = time.time_ns()
        result.now = Timestamp(seconds=stamp // 1_000_000_000, nanos=stamp % 1_000_000_000)
        for record in records:
            self._one(record, result)
            result.next_command_offset = record.offset + 1
        result.timestamps = [r.timestamp for r in records]
        return result

    def _read_headers(self, headers: Sequence[tuple[str, bytes]]) -> tuple[int, bool]:
        """In one scan: the replies partition the client named (-1: none, or no partition of
        the replies topic) and whether the command carries a trace."""
        reply_to, traced = -1, False
        for key, value in headers:
            if key == REPLY_PARTITION_HEADER:
                text = value.decode("ascii", "replace") if value else ""
                if text.isdigit() and int(text) < self.topics.partitions:
                    reply_to = int(text)
            elif key == TRACEPARENT:
                traced = True
        return reply_to, traced

    def _one(self, record: CommandRecord, result: BatchResult) -> None:
        self._reply_to, traced = self._read_headers(record.headers)
        try:
            env = decode_command(record.value, record.headers, max_bytes=self._max_bytes)
            entity_id = env.entity_id or (record.key or b"").decode("utf-8")
            check_entity_id(entity_id)
        except DecodeError as exc:
            self._dead(record, result, exc.reason, exc.detail)
            return
        except UnicodeDecodeError as exc:
            self._dead(record, result, DeadLetterReason.UNDECODABLE, f"key is not UTF-8: {exc}")
            return
        if not entity_id:
            self._dead(record, result, DeadLetterReason.MISSING_KEY, "no entity id, no key")
            return
        if env.aggregate and env.aggregate != self.behavior.name:
            detail = f"command for aggregate {env.aggregate!r} on {self.topics.commands}"
            self._dead(record, result, DeadLetterReason.UNKNOWN_COMMAND, detail)
            self._reject(env, entity_id, result, RejectionCode.UNKNOWN_COMMAND, detail, 0)
            return
        owner = self._owner(entity_id)
        if owner != self.partition:
            headers = [*record.headers, ("kes-forwarded-from", str(self.partition).encode())]
            value = record.value or b""
            out = OutRecord(self.topics.commands, owner, entity_id.encode(), value, headers)
            result.forwards.append(out)
            return
        current = result.changed.get(entity_id) or self.entity(entity_id)
        key = outcome_key(entity_id, env.command_id) if self.outcomes.enabled else ""
        if key and self._replay(env, key, result):
            return
        if current.erased or env.payload.type_url == ERASE_TYPE_URL:
            self._erase(record, env, current, result, key)
            return
        if env.command_id in current.recent_command_ids:
            detail = f"command {env.command_id} was already applied"
            self._reject(env, entity_id, result, RejectionCode.DUPLICATE, detail, current.revision)
            return
        if env.HasField("expected_revision") and env.expected_revision != current.revision:
            detail = f"expected revision {env.expected_revision}, entity is at {current.revision}"
            code = RejectionCode.CONFLICT
            self._reject(env, entity_id, result, code, detail, current.revision, key)
            return
        try:
            command = unpack(env.payload)
        except DecodeError as exc:
            self._dead(record, result, exc.reason, exc.detail)
            self._reject(env, entity_id, result, RejectionCode.POISON, exc.detail, current.revision)
            return
        ctx = CommandContext(
            entity_id=entity_id,
            command_id=env.command_id,
            correlation_id=env.correlation_id,
            revision=current.revision,
            metadata=env.metadata,
            decided_ms=result.decided_ms,
        )
        if not traced:
            decision = self.behavior.decide(current.state, command, ctx)
            self._decided(record, env, current, decision, result, key, [])
            return
        with command_span(self._span_name, record.headers) as trace_headers:
            decision = self.behavior.decide(current.state, command, ctx)
            self._decided(record, env, current, decision, result, key, trace_headers)
        if trace_headers:
            result.traces.append(trace_headers)

    def _decided(
        self,
        record: CommandRecord,
        env: CommandEnvelope,
        current: Entity,
        decision: Decision[Any],
        result: BatchResult,
        key: str,
        trace_headers: Headers,
    ) -> None:
        """What a decision writes: events (carrying the command's trace), or a rejection."""
        entity_id = current.entity_id
        if isinstance(decision, Accepted):
            self._accept(record, env, current, decision, result, key, trace_headers)
        elif isinstance(decision, Failed):
            self._dead(record, result, decision.reason, decision.error)
            code = RejectionCode.POISON
            self._reject(env, entity_id, result, code, decision.error, current.revision)
        else:
            code = RejectionCode.Value(decision.rejection.code.value)
            message = decision.rejection.message
            if code == RejectionCode.UNKNOWN_COMMAND:
                self._dead(record, result, DeadLetterReason.UNKNOWN_COMMAND, message)
                key = ""  # dead-lettered: a later deployment may know it
            self._reject(env, entity_id, result, code, message, current.revision, key)

    def _replay(self, env: CommandEnvelope, key: str, result: BatchResult) -> bool:
        """Answer a retry from its outcome (this batch's, else the store's, inside the horizon);
        False when the command has no such outcome and must be decided."""
        earlier = result.outcomes.get(key)
        if earlier is None:
            stored = self._load_outcome(key)
            if stored is None:
                return False
            decided, reply = decode_outcome(stored)
            if decided < result.decided_ms - self.outcomes.horizon_ms:
                result.stale.add(key)  # expired, not yet removed: the new outcome replaces it
                return False
            earlier = PendingReply(reply, [])
        result.replayed += 1
        if env.reply_wanted:
            reply = Reply()
            reply.CopyFrom(earlier.reply)
            if reply.HasField("accepted"):
                reply.accepted.ClearField("state")
                reply.accepted.ClearField("sealed")
            reply.correlation_id = env.correlation_id
            reply.replay = True
            result.replies.append(
                PendingReply(reply, earlier.event_indexes, partition=self._reply_to)
            )
        return True

    def _accept(
        self,
        record: CommandRecord,
        env: CommandEnvelope,
        current: Entity,
        decision: Accepted[Any],
        result: BatchResult,
        key: str,
        trace_headers: Headers,
    ) -> None:
        keys = self._keys
        entity_key = new_key = None
        if keys is not None:
            entity_key = current.key
            if entity_key is None:  # first use: written with the events it seals, or not at all
                entity_key = new_key = keys.new(current.entity_id)
        events = [
            self._event(record, env, result, current.entity_id, current.revision + i, event,
                        entity_key, trace_headers)
            for i, event in enumerate(decision.events, start=1)
        ]  # fmt: skip
        recent = [*current.recent_command_ids, env.command_id][-self._recent :]
        state_size = decision.new_state.ByteSize()
        too_large = self._too_large(events, current.entity_id, state_size, recent)
        if too_large:
            self._dead(record, result, DeadLetterReason.TOO_LARGE, too_large)
            code = RejectionCode.POISON
            self._reject(env, current.entity_id, result, code, too_large, current.revision)
            return
        result.accepted += 1
        indexes = list(range(len(result.events), len(result.events) + len(events)))
        result.events.extend(events)
        if new_key is not None and keys is not None:
            value = keys.record(current.entity_id, new_key).SerializeToString()
            key_record = OutRecord(
                self.topics.keys, self.partition, current.entity_id.encode(), value, []
            )
            result.keys.append(key_record)
        updated = Entity(
            current.entity_id,
            decision.revision,
            decision.new_state,
            recent,
            record.offset,
            current.first_event_offset,
            entity_key,
            pending=current.pending + len(events),
            state_version=self.behavior.state_version,
        )
        if entity_key is not None:  # sealed once, for the reply and the snapshot
            updated.sealed_state = seal(decision.new_state, entity_key.aead, current.entity_id)
        if current.revision == 0 and indexes:
            result.first_events[current.entity_id] = indexes[0]
        if not indexes:
            result.must_log.add(current.entity_id)
        elif current.pending == 0 and current.entity_id not in result.starts:
            result.starts[current.entity_id] = indexes[0]
        result.changed[current.entity_id] = updated
        if env.reply_wanted or key:
            reply = Reply(
                command_id=env.command_id,
                entity_id=current.entity_id,
                correlation_id=env.correlation_id,
                accepted=AcceptedReply(revision=decision.revision, partition=self.partition),
            )
            fits = state_size + _REPLY_ROOM <= self._max_record  # else the reply leaves it out
            if env.reply_wanted and fits:
                state = decision.new_state
                if updated.sealed_state is not None:
                    state, sealed = updated.sealed_state
                    if sealed is not None:
                        reply.accepted.sealed.CopyFrom(sealed)
                reply.accepted.state.CopyFrom(pack(state))
            pending = PendingReply(reply, indexes, env.reply_wanted, key, self._reply_to)
            self._outcome(result, pending)

    def _event(
        self,
        record: CommandRecord,
        env: CommandEnvelope,
        result: BatchResult,
        entity_id: str,
        revision: int,
        event: Message,
        entity_key: EntityKey | None,
        trace_headers: Headers,
    ) -> OutRecord:
        """One event's record: its envelope (personal fields sealed) and headers."""
        event_type = type_name(event)
        sealed = None
        if entity_key is not None:
            event, sealed = seal(event, entity_key.aead, entity_id)
        envelope = EventEnvelope(
            entity_id=entity_id,
            revision=revision,
            payload=pack(event),
            command_id=env.command_id,
            correlation_id=env.correlation_id,
            timestamp=result.now,
            source_partition=self.partition,
            source_offset=record.offset,
            aggregate=self.behavior.name,
            event_type=event_type,
        )
        if sealed is not None:
            envelope.sealed.CopyFrom(sealed)
        if env.metadata:
            envelope.metadata.update(env.metadata)
            envelope.metadata.pop(VERSION_KEY, None)  # a command cannot forge an event's version
        version = self.behavior.event_version(event_type)
        if version is not None:
            envelope.metadata[VERSION_KEY] = str(version)
        headers = [
            ("entity-id", entity_id.encode()),
            ("revision", str(revision).encode()),
            ("event-type", event_type.encode()),
            ("command-id", env.command_id.encode()),
            ("correlation-id", env.correlation_id.encode()),
            *trace_headers,
        ]
        return OutRecord(
            self.topics.events,
            self.partition,
            event_key(entity_id, revision),
            envelope.SerializeToString(),
            headers,
        )

    def _erase(
        self,
        record: CommandRecord,
        env: CommandEnvelope,
        current: Entity,
        result: BatchResult,
        key: str,
    ) -> None:
        """Erase an entity (`kes.v1.EraseEntity`), or answer a command to an erased one.

        An erased entity answers ERASED to every command but EraseEntity, which it accepts
        again without writing anything (an erasure re-run completes at once). Erasing writes:
         1. a tombstone for each of the entity's event keys (revisions 1..n), after every
            event of the batch;
         2. its last event, EntityErased at revision n + 1 (no personal data), for projections;
         3. on the keys topic, a marker that replaces its data key (when it has one);
         4. its snapshot replaced by an erasure marker (no state, no key, no history), so its
            later commands are refused and no revision is used twice; sent to the changelog
            whatever the snapshot interval (its tombstoned events cannot be folded on recovery);
         5. its outcomes removed (tombstones the processor adds, reading the store).
        All in the batch's transaction: read_committed readers see all of it or nothing.
        """
        entity_id = current.entity_id
        if current.erased:
            if env.payload.type_url != ERASE_TYPE_URL:
                detail = f"entity {entity_id!r} was erased"
                code = RejectionCode.ERASED
                self._reject(env, entity_id, result, code, detail, current.revision, key)
                return
            result.accepted += 1
            self._accepted_reply(env, entity_id, result, current.revision, [], key)
            return
        if current.revision == 0:
            detail = f"no entity {entity_id!r} to erase"
            self._reject(env, entity_id, result, RejectionCode.VALIDATION, detail, 0, key)
            return
        erased = current.revision
        events, partition = self.topics.events, self.partition
        result.tombstones.extend(
            OutRecord(events, partition, event_key(entity_id, r), b"", [])
            for r in range(1, erased + 1)
        )
        last = EntityErased(entity_id=entity_id, erased_revisions=erased)
        index = len(result.events)
        result.events.append(
            self._event(record, env, result, entity_id, erased + 1, last, None, [])
        )
        if current.key is not None:
            marker = DataKey(entity_id=entity_id, erased=True).SerializeToString()
            result.keys.append(
                OutRecord(self.topics.keys, partition, entity_id.encode(), marker, [])
            )
        result.changed[entity_id] = Entity(
            entity_id, erased + 1, current.state, [], record.offset, erased=True
        )
        result.must_log.add(entity_id)  # its tombstoned events can never be folded again
        result.erased.append(entity_id)
        result.accepted += 1
        self._accepted_reply(env, entity_id, result, erased + 1, [index], key)

    def _accepted_reply(
        self,
        env: CommandEnvelope,
        entity_id: str,
        result: BatchResult,
        revision: int,
        indexes: list[int],
        key: str,
    ) -> None:
        """An accepted outcome without state: replied when wanted, kept under `key` if set."""
        accepted = AcceptedReply(revision=revision, partition=self.partition)
        self._answer(env, entity_id, result, key, indexes, accepted=accepted)

    def _answer(
        self,
        env: CommandEnvelope,
        entity_id: str,
        result: BatchResult,
        key: str,
        indexes: list[int],
        **outcome: Any,
    ) -> None:
        """A reply with `outcome` (accepted= or rejected=), when wanted or kept under `key`."""
        if not env.reply_wanted and not key:
            return
        reply = Reply(
            command_id=env.command_id,
            entity_id=entity_id,
            correlation_id=env.correlation_id,
            **outcome,
        )
        self._outcome(result, PendingReply(reply, indexes, env.reply_wanted, key, self._reply_to))

    def _too_large(
        self, events: Sequence[OutRecord], entity_id: str, state_size: int, recent: list[str]
    ) -> str:
        """Why the command's records would not fit under the record limit ("" when they do)."""
        for event in events:
            size = record_size(event)
            if size > self._max_record:
                return f"an event of {size} bytes would exceed the record limit {self._max_record}"
        snapshot = state_size + len(entity_id.encode()) + sum(len(c) + 2 for c in recent) + 64
        if snapshot > self._max_record:
            return (
                f"the entity's snapshot ({snapshot} bytes) would exceed the record limit "
                f"{self._max_record}"
            )
        return ""

    def _reject(
        self,
        env: CommandEnvelope,
        entity_id: str,
        result: BatchResult,
        code: int,
        message: str,
        revision: int,
        key: str = "",
    ) -> None:
        """A rejection: replied when wanted, kept as the command's outcome under `key` if set."""
        result.rejected += 1
        rejected = Rejected(code=code, message=bounded(message), current_revision=revision)  # type: ignore[arg-type]
        self._answer(env, entity_id, result, key, [], rejected=rejected)

    @staticmethod
    def _outcome(result: BatchResult, pending: PendingReply) -> None:
        result.replies.append(pending)
        if pending.outcome:
            result.outcomes[pending.outcome] = pending

    def _dead(
        self, record: CommandRecord, result: BatchResult, reason: DeadLetterReason, error: str
    ) -> None:
        letter = new_dead_letter(
            key=record.key or b"",
            value=record.value or b"",
            headers=list(record.headers),
            topic=self.topics.commands,
            partition=self.partition,
            offset=record.offset,
            reason=reason,
            error=bounded(error),
        )
        excess = letter.ByteSize() + len(record.key or b"") + _REPLY_ROOM - self._max_record
        if excess > 0:  # keep the head of the value: the dead letter itself must be writable
            kept = max(0, len(letter.original_value) - excess)
            letter.error += f" (original value truncated from {len(letter.original_value)} bytes)"
            letter.original_value = letter.original_value[:kept]
        headers = [("reason", reason.value.encode()), *self._out_headers]
        key = record.key or b""
        result.dead_letters.append(
            OutRecord(self.topics.dlq, self.partition, key, letter.SerializeToString(), headers)
        )
