"""Every command has exactly one outcome: checked from the topics themselves, for `kes verify`.

What a command record's outcome is, and so what can be checked, depends on what kes can read back:

- A record that does not decode (garbage, truncated, too large, unknown payload type, no entity
  id), or names another aggregate, has one outcome: exactly one dead letter that points at its
  partition and offset (plus, for another aggregate, a rejection reply if one was wanted).
- A record on the wrong partition is forwarded: exactly one copy, with a `kes-forwarded-from`
  header, on its entity's partition. The copy is a command record like any other.
- A routed record with `reply_wanted` has exactly one reply; a command id sent N times (a
  client's retry) has N replies, at most one of them accepted and not a replay; a replayed
  acceptance names the original's revision (the outcome store answered it). A dead letter
  for a routed record (a handler error, an unknown command) comes with a rejection, never with
  events.
- A command's events name its id: events must not exist for an id no command carries, and an
  accepted reply's revision is the revision of the command's last event.
- Without `reply_wanted`, a rejection leaves no trace (nothing is written), so such commands
  can only be checked for "applied at most once", which `kes.streams.operations.verify` does.

Events copied by `kes topics migrate` (a `kes-migrated-from` header) were applied from the old
topic set's commands: their commands are not looked for here, but a retry of one on this set
must be answered with their revision; one whose change record retention deleted before the
migration (durable state) is replayed naming no events, and has nothing to be checked against.

Only records the partition's owner has processed are due: those below the next-command offset
of the partition's last committed checkpoint (read first). Later records are pending: their
outcomes may exist (a live system moved on meanwhile) but need not. The check assumes the
commands topic still holds every command (its retention has deleted nothing).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kes.schemas.codec import (
    check_entity_id,
    decode_command,
    decode_dead_letter,
    decode_event,
    decode_reply,
)
from kes.schemas.errors import DecodeError
from kes.streams.cycle.records import CHECKPOINT_KEY, decode_checkpoint
from kes.streams.kafka.readback import TopicRecord, read_records
from kes.streams.operations.migration import MIGRATED_FROM_HEADER
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for

__all__ = ["FORWARDED_HEADER", "Outcomes", "check_outcomes", "read_outcomes"]

FORWARDED_HEADER = "kes-forwarded-from"
"""Header of a forwarded copy of a misrouted command: the partition it was first written to."""


@dataclass
class Outcomes:
    """What `check_outcomes` found: counts per kind of outcome, and every violation."""

    commands: int = 0
    pending: int = 0
    replied: int = 0
    dead_lettered: int = 0
    forwarded: int = 0
    violations: list[str] = field(default_factory=list)
    entities: set[str] = field(default_factory=set)
    """Entities named by a violation (records with no readable entity id are named by offset)."""

    @property
    def ok(self) -> bool:
        """True when every due command has exactly one outcome."""
        return not self.violations

    def summary(self) -> str:
        """A few lines for a person."""
        head = (
            f"{self.commands} command records ({self.pending} pending): {self.replied} replied, "
            f"{self.dead_lettered} dead-lettered, {self.forwarded} forwarded: "
            + ("OK" if self.ok else f"{len(self.violations)} VIOLATIONS")
        )
        return "\n".join([head, *(f"  - {v}" for v in self.violations[:50])])

    def _violation(self, entity: str, text: str) -> None:
        self.entities.add(entity)
        self.violations.append(f"{entity}: {text}")


@dataclass
class _Command:
    """A command record classified the way the worker's batch step classifies it."""

    record: TopicRecord
    entity_id: str
    command_id: str
    reply_wanted: bool
    due: bool
    kind: str  # "dead" (must be dead-lettered), "forward", or "routed"


def check_outcomes(
    topics: AggregateTopics,
    aggregate: str,
    next_offsets: Mapping[int, int],
    commands: Iterable[TopicRecord],
    events: Iterable[TopicRecord],
    replies: Iterable[TopicRecord],
    dead_letters: Iterable[TopicRecord],
    *,
    max_command_bytes: int = 900_000,
) -> Outcomes:
    """Check that every due command record has exactly one outcome; see the module docstring.

    `next_offsets` maps each commands partition to the next-command offset of its last committed
    checkpoint; `max_command_bytes` must be the workers' setting (larger commands are dead letters).
    """
    result = Outcomes()
    parsed = [
        _classify(r, topics, aggregate, next_offsets, max_command_bytes, result) for r in commands
    ]
    letters: Counter[tuple[int, int]] = Counter()
    for record in dead_letters:
        letter = decode_dead_letter(record.value)
        letters[(letter.partition, letter.offset)] += 1
    reply_count: Counter[str] = Counter()
    accepted: dict[str, list[int]] = defaultdict(list)
    replayed: dict[str, list[int]] = defaultdict(list)
    unanchored: set[str] = set()  # replays naming no events (kes.streams.operations.migration)
    for record in replies:
        reply = decode_reply(record.value)
        reply_count[reply.command_id] += 1
        if reply.WhichOneof("outcome") == "accepted":
            into = replayed if reply.replay else accepted
            into[reply.command_id].append(reply.accepted.revision)
            if reply.replay and not reply.accepted.event_offsets:
                unanchored.add(reply.command_id)
    event_revisions: dict[str, list[tuple[str, int]]] = defaultdict(list)
    applied_from: set[tuple[int, int]] = set()  # (partition, offset) of applied command records
    migrated: set[str] = set()  # commands applied on the topic set these events came from
    for record in events:
        env = decode_event(record.value)
        event_revisions[env.command_id].append((env.entity_id, env.revision))
        if any(key == MIGRATED_FROM_HEADER for key, _ in record.headers):
            migrated.add(env.command_id)
        else:
            applied_from.add((env.source_partition, env.source_offset))

    coordinates = {(c.record.partition, c.record.offset) for c in parsed}
    for (partition, offset), count in letters.items():
        where = f"{topics.commands}[{partition}]@{offset}"
        if (partition, offset) not in coordinates:
            result._violation(where, "dead letter for a record not on the commands topic")
        elif count > 1:
            result._violation(where, f"dead-lettered {count} times")
    copies: Counter[tuple[str, int]] = Counter()
    for c in parsed:
        source = _forwarded_from(c.record)
        if source is not None and c.kind != "dead":
            copies[(c.command_id, source)] += 1
    wanted_due: Counter[str] = Counter()
    wanted_all: Counter[str] = Counter()
    routed_due: Counter[str] = Counter()
    routed_wanted_due: Counter[str] = Counter()
    forwards_due: Counter[tuple[str, int]] = Counter()
    forwards_all: Counter[tuple[str, int]] = Counter()
    known_ids: set[str] = set()
    for c in parsed:
        where = f"{topics.commands}[{c.record.partition}]@{c.record.offset}"
        if c.kind == "dead":
            if c.due:
                result.dead_lettered += letters[(c.record.partition, c.record.offset)] > 0
                if not letters[(c.record.partition, c.record.offset)]:
                    result._violation(c.entity_id or where, f"{where}: no dead letter")
            if c.reply_wanted:  # another aggregate's command: also rejected, if asked
                wanted_all[c.command_id] += 1
                wanted_due[c.command_id] += c.due
            continue
        known_ids.add(c.command_id)
        if c.kind == "forward":
            key = (c.command_id, c.record.partition)
            forwards_all[key] += 1
            forwards_due[key] += c.due
            continue
        if c.due and letters[(c.record.partition, c.record.offset)]:
            result.dead_lettered += 1
        routed_due[c.command_id] += c.due
        if c.reply_wanted:
            wanted_all[c.command_id] += 1
            wanted_due[c.command_id] += c.due
            routed_wanted_due[c.command_id] += c.due
    entity_of = {c.command_id: c.entity_id or "?" for c in parsed if c.command_id}
    for key, due in forwards_due.items():
        found = copies[key]
        result.forwarded += min(found, due)
        if not due <= found <= forwards_all[key]:
            result._violation(
                entity_of[key[0]],
                f"command {key[0]} misrouted to partition {key[1]} {forwards_all[key]} time(s) "
                f"({due} due), forwarded {found} time(s)",
            )
    for command_id, due in wanted_due.items():
        found = reply_count[command_id]
        result.replied += min(found, due)
        if not due <= found <= wanted_all[command_id]:
            result._violation(
                entity_of[command_id],
                f"command {command_id} sent {wanted_all[command_id]} time(s) with a reply wanted "
                f"({due} due), {found} replies",
            )
    for command_id, revisions in accepted.items():
        owner = entity_of.get(command_id, "?")
        if len(revisions) > 1:
            result._violation(owner, f"command {command_id} accepted {len(revisions)} times")
        applied = event_revisions.get(command_id)
        if applied and revisions and max(r for _, r in applied) != revisions[0]:
            result._violation(
                owner,
                f"command {command_id}: accepted at revision {revisions[0]}, its last event "
                f"has revision {max(r for _, r in applied)}",
            )
    for command_id, revisions in replayed.items():
        applied = event_revisions.get(command_id)
        last = max((r for _, r in applied), default=None) if applied else None
        if last is None and topics.durable_state and command_id in unanchored:
            continue  # a durable-state change that expired before a migration: none to compare
        if last is None or any(r != last for r in revisions):
            result._violation(
                entity_of.get(command_id, "?"),
                f"command {command_id}: replayed as accepted at {sorted(set(revisions))}, its "
                f"last event has revision {last}",
            )
    for command_id, applied in event_revisions.items():
        if command_id in migrated:
            continue  # its record and first reply are on the old set
        if command_id not in known_ids:
            result._violation(applied[0][0], f"events of command {command_id}, not on the topic")
        every_one_wanted_a_reply = routed_wanted_due[command_id] == routed_due[command_id] > 0
        if every_one_wanted_a_reply and not accepted.get(command_id):
            result._violation(applied[0][0], f"command {command_id} applied, no accepted reply")
    by_coordinates = {(c.record.partition, c.record.offset): c for c in parsed}
    for coordinates_of_letter in letters:
        hit = by_coordinates.get(coordinates_of_letter)
        # The record itself, not its command id: an id may be re-sent after a poison outcome.
        if hit is not None and hit.kind == "routed" and coordinates_of_letter in applied_from:
            result._violation(hit.entity_id, f"command {hit.command_id} dead-lettered and applied")
    all_ids = {c.command_id for c in parsed if c.command_id}
    for command_id in reply_count.keys() - all_ids:
        result._violation("?", f"reply to command {command_id}, which is not on the topic")
    return result


def _forwarded_from(record: TopicRecord) -> int | None:
    """The partition a forwarded copy came from; None for an original (or a garbled header)."""
    raw = dict(record.headers).get(FORWARDED_HEADER)
    try:
        return None if raw is None else int(raw.decode("ascii"))
    except ValueError:
        return None


def _classify(
    record: TopicRecord,
    topics: AggregateTopics,
    aggregate: str,
    next_offsets: Mapping[int, int],
    max_command_bytes: int,
    result: Outcomes,
) -> _Command:
    """Classify one record as kes.streams.cycle.batch does (decode, aggregate, route)."""
    result.commands += 1
    due = record.offset < next_offsets.get(record.partition, 0)
    result.pending += not due
    try:
        env = decode_command(record.value, record.headers, max_bytes=max_command_bytes)
        entity_id = env.entity_id or (record.key or b"").decode("utf-8")
        check_entity_id(entity_id)
    except (DecodeError, UnicodeDecodeError):
        return _Command(record, "", "", False, due, "dead")
    if not entity_id or (env.aggregate and env.aggregate != aggregate):
        return _Command(record, entity_id, env.command_id, env.reply_wanted, due, "dead")
    if partition_for(entity_id, topics.partitions) != record.partition:
        return _Command(record, entity_id, env.command_id, env.reply_wanted, due, "forward")
    return _Command(record, entity_id, env.command_id, env.reply_wanted, due, "routed")


def read_outcomes(
    topics: AggregateTopics,
    aggregate: str,
    client_config: Mapping[str, Any],
    *,
    max_command_bytes: int = 900_000,
) -> Outcomes:
    """Read the checkpoints first (what is due), then the topics, and `check_outcomes`.

    The app's protobuf modules must be imported (loading its behaviors does): a command whose
    payload type is not registered counts as one that must be dead-lettered.
    """
    next_offsets: dict[int, int] = {}
    for record in read_records(topics.snapshots, topics.partitions, client_config):
        if record.key == CHECKPOINT_KEY and record.value:
            next_offsets[record.partition] = decode_checkpoint(record.value)[0]
    return check_outcomes(
        topics,
        aggregate,
        next_offsets,
        list(read_records(topics.commands, topics.partitions, client_config)),
        read_records(topics.events, topics.partitions, client_config),
        read_records(topics.replies, topics.partitions, client_config),
        read_records(topics.dlq, topics.partitions, client_config),
        max_command_bytes=max_command_bytes,
    )
