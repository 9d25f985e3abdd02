"""The kes error hierarchy: one base class, one small class per failure an operator can act on.

Every error says what went wrong in one line; where it helps, it carries the coordinates an
operator needs (topic, partition, offset, entity id) and a hint of what to do.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AdminError",
    "BatchRedoError",
    "BrokerStartError",
    "CommandGapError",
    "CommandTimeoutError",
    "CommandsDeletedError",
    "CommandsTruncatedError",
    "ConfigurationError",
    "DeadLetterReason",
    "DecodeError",
    "DurableStateError",
    "GapUnreadError",
    "KesError",
    "KeyUnavailableError",
    "MigrationError",
    "OwnershipError",
    "ProjectionTimeoutError",
    "ReadModelConflictError",
    "ReadModelUnavailableError",
    "SchemaVersionError",
    "TopologyError",
    "TransactionError",
    "UnreachableError",
]


class DeadLetterReason(StrEnum):
    """Why a record went to a dead-letter topic (the `reason` field of a DeadLetter)."""

    UNDECODABLE = "UNDECODABLE"
    """The bytes are not a valid envelope (truncated, garbage, JSON that does not match)."""
    WRONG_CONTENT_TYPE = "WRONG_CONTENT_TYPE"
    """The content-type header names an encoding kes does not read, or is not UTF-8."""
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    """The payload's type URL names a message type no one registered."""
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    """The payload decodes, but the behavior has no handler for its type."""
    TOO_LARGE = "TOO_LARGE"
    """The record is larger than the configured maximum command size."""
    MISSING_KEY = "MISSING_KEY"
    """The record has no key and the envelope names no entity id."""
    HANDLER_ERROR = "HANDLER_ERROR"
    """The user's handler raised an exception."""
    NEWER_VERSION = "NEWER_VERSION"
    """The event's schema version is above the one the running code declares for its type."""


class KesError(Exception):
    """Base class of every error kes raises on purpose."""


class ConfigurationError(KesError):
    """A setting is missing or invalid; the message names it and what to set."""


class DurableStateError(KesError):
    """Something would fold a durable-state aggregate from its change records, which expire: its
    snapshot changelog is the state of record; the message names the aggregate and what to do."""


class BrokerStartError(KesError):
    """The local development broker could not be resolved, formatted or started."""


class DecodeError(KesError):
    """A record could not be decoded into an envelope or a registered message type."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class AdminError(KesError):
    """An admin request to the cluster failed or timed out; the message names the request."""


class TopologyError(KesError):
    """The topics on the cluster do not match the declared layout."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("topic layout is wrong: " + "; ".join(problems))
        self.problems = problems


class TransactionError(KesError):
    """A partition's transaction failed or was fenced by a newer owner; its batch did not apply."""

    def __init__(self, topic: str, partition: int, detail: str) -> None:
        super().__init__(f"{topic}[{partition}]: {detail}")
        self.topic = topic
        self.partition = partition


class CommandGapError(KesError):
    """A batch started past the next expected command offset, with commands in between.

    Applying it would skip those commands; the worker stops instead, and the partition is read
    again from its last committed offset.
    """

    def __init__(self, topic: str, partition: int, expected: int, got: int, missed: int) -> None:
        super().__init__(
            f"{topic}[{partition}]: expected offset {expected}, got {got}: "
            f"{missed} command(s) in between were not delivered to this worker"
        )
        self.topic = topic
        self.partition = partition


class GapUnreadError(KesError):
    """The records between a partition's next expected offset and its batch could not be read
    (a broker unreachable, a timeout): nothing of the batch applies, it is read again later."""

    def __init__(self, topic: str, partition: int, expected: int, got: int, why: str) -> None:
        super().__init__(
            f"{topic}[{partition}]: could not read offsets {expected}..{got - 1} before the "
            f"batch at {got} ({why}); reading it again"
        )
        self.topic = topic
        self.partition = partition


class CommandsDeletedError(KesError):
    """Commands this partition has not applied were deleted by the topic's retention.

    They can never be applied: the worker stops rather than skip them silently. An operator who
    accepts the loss records it with `kes skip-deleted` (the partition then goes on from the
    log start); otherwise restore the commands and replay them under new offsets.
    """

    def __init__(self, topic: str, partition: int, expected: int, log_start: int) -> None:
        super().__init__(
            f"{topic}[{partition}]: commands at offsets {expected}..{log_start - 1} were deleted "
            f"by retention before they were applied; to go on without them run "
            f"`kes skip-deleted <app> --aggregate <name> --partition {partition}`"
        )
        self.topic = topic
        self.partition = partition
        self.expected = expected
        self.log_start = log_start


class CommandsTruncatedError(KesError):
    """A partition's checkpoint is past the end of its commands partition: the topic was deleted
    and recreated, or truncated (an unclean leader election). Its new commands would take the
    offsets of applied ones and be passed over as applied; the worker stops instead. `kes
    skip-deleted` records the decision to go on from the partition's log start.
    """

    def __init__(self, topic: str, partition: int, expected: int, end: int) -> None:
        super().__init__(
            f"{topic}[{partition}]: the checkpoint says commands below offset {expected} were "
            f"applied, but the partition ends at {end} (the topic was recreated or truncated); "
            f"commands there would be taken as applied. To go on from the partition's start run "
            f"`kes skip-deleted <app> --aggregate <name> --partition {partition}`"
        )
        self.topic = topic
        self.partition = partition
        self.expected = expected
        self.end = end


class UnreachableError(KesError):
    """No Kafka broker answered at the configured address."""

    def __init__(self, bootstrap: str, cause: str, detail: str) -> None:
        super().__init__(
            f"cannot reach Kafka at {bootstrap}: {cause} ({detail}); set --bootstrap or "
            f"KAFKA_BOOTSTRAP_SERVERS"
        )
        self.bootstrap = bootstrap
        self.cause = cause


class OwnershipError(KesError):
    """Another consumer group writes this partition's events: two deployments share the topics.

    Two groups writing one aggregate would give two different events the same key, and the
    compacted events topic would rewrite history. Stop the other deployment, or set
    `KES_TAKE_OVER=1` (`kes worker --take-over`) once it is gone for good.
    """

    def __init__(self, topic: str, partition: int, owner: str, group: str) -> None:
        super().__init__(
            f"{topic}[{partition}] is written by consumer group {owner!r}, not {group!r}: "
            f"two deployments must not share an aggregate's topics. Stop {owner!r}, or start "
            f"this worker with --take-over (KES_TAKE_OVER=1) once {owner!r} is gone for good"
        )
        self.topic = topic
        self.partition = partition
        self.owner = owner
        self.group = group


class CommandTimeoutError(KesError):
    """No reply arrived in time; the command may still apply later (its id makes retries safe)."""

    def __init__(self, command_id: str, entity_id: str, timeout: float) -> None:
        super().__init__(
            f"no reply for command {command_id} (entity {entity_id!r}) within {timeout:g}s: "
            "is a worker running for this aggregate? Retrying with the same command id is safe."
        )
        self.command_id = command_id
        self.entity_id = entity_id
        self.timeout = timeout


class MigrationError(KesError):
    """A topic set cannot be migrated (or migrated to) as it is; the message says why and what
    to do first."""


class SchemaVersionError(KesError):
    """Stored data this deployment's code cannot read as it is: of a newer schema version (a
    rollback, an older worker during a rolling upgrade), older than the oldest it migrates, or
    a state migration that fails on it; deploy code that reads it, never drop the data."""


class ProjectionTimeoutError(KesError):
    """A projection had not applied the events waited for (read-your-writes) in time."""

    def __init__(
        self, projection: str, pending: dict[tuple[str, int], int], timeout: float
    ) -> None:
        where = ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(pending.items()))
        super().__init__(
            f"projection {projection!r} has not applied {where} within {timeout:g}s: "
            "is it running, and is it behind (kes projection status)?"
        )
        self.projection = projection
        self.pending = pending
        self.timeout = timeout


class KeyUnavailableError(KesError):
    """Personal data cannot be sealed or opened: no master key, or a key that does not unwrap.

    A worker whose aggregates have personal fields refuses to start without a master key
    (`KES_MASTER_KEY` or `KES_MASTER_KEY_FILE`, see docs/security.md), rather than write
    personal data in plain text.
    """


class BatchRedoError(KesError):
    """A handler failed after writing through a batch that cannot undo one event (a SQL
    transaction on its fast path, without savepoints): the projector rolls the batch back and
    runs it again with each event undoable. It never reaches the user."""


class ReadModelUnavailableError(KesError):
    """The read model's database cannot be reached or dropped the connection; nothing of the
    batch in flight was stored, and the projection resumes from the offsets the database holds."""


class ReadModelConflictError(KesError):
    """Another process stored progress for a partition since this one read it: this process no
    longer owns the partition (a rebalance it has not seen yet), so its batch is not stored."""

    def __init__(self, projection: str, where: list[tuple[str, int]]) -> None:
        names = ", ".join(f"{t}[{p}]" for t, p in sorted(where))
        super().__init__(
            f"projection {projection!r}: another process stored {names} since this one read "
            "it; this batch was not stored, and the process stops (restart it to rejoin)"
        )
        self.projection = projection
        self.where = where
