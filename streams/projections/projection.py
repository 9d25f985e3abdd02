"""Projections and reactors: named handlers of an aggregate's events, each its own consumer group.

A `Projection` builds a read model: its handlers get each event (envelope and decoded payload)
and a `RowWriter` to write rows through; the projector stores the rows together with the offsets
of the events they reflect, in one atomic write, so every event is applied exactly once to the
read model. A `Reactor` performs side effects instead (mails, calls to other services): at least
once, so its handlers dedup on the envelope's `(entity_id, revision)`.

A `SqlProjection` builds a read model of real database tables: its handlers get `sql` and run
statements inside the batch's database transaction, which stores the offsets too (one poll,
one transaction; kes.stores.sqlmodel).

All three are registered like a behavior's handlers, by protobuf type:

    balances = Projection("account-balances", ["account"])

    @balances.on(bank_pb2.AccountOpened)
    def opened(event: EventEnvelope, payload: bank_pb2.AccountOpened, rows: RowWriter) -> None:
        rows.put(event.entity_id, ...)

The consumer group is `<topic prefix><name>`, the dead-letter topic `<topic prefix><name>.dlq`.
`project` is the pure per-batch step the projector (kes.streams.projections.projector) runs; no
Kafka here.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, NamedTuple, TypeAlias, TypeVar

from google.protobuf.message import Message

from kes.schemas.codec import Headers, decode_event, new_dead_letter, unpack
from kes.schemas.errors import (
    BatchRedoError,
    ConfigurationError,
    DeadLetterReason,
    DecodeError,
    ReadModelUnavailableError,
)
from kes.schemas.kes.v1.envelopes_pb2 import DeadLetter, EventEnvelope, Reply
from kes.streams.config.apps import import_app
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.eventversions import newer_event
from kes.streams.core.keyring import Keyring
from kes.streams.projections.rows import RowBatch, RowReader, RowWriter, Sql, Staging
from kes.streams.telemetry.tracing import TRACEPARENT, project_span

log = logging.getLogger(__name__)

__all__ = [
    "AnyProjection",
    "EventRecord",
    "Projection",
    "Reaction",
    "Reactor",
    "RowHandler",
    "SqlHandler",
    "SqlProjection",
    "StepResult",
    "load_projections",
    "pending",
    "project",
    "projection_named",
    "targets",
]

E = TypeVar("E", bound=Message)
H = TypeVar("H")

RowHandler: TypeAlias = Callable[[EventEnvelope, E, RowWriter], None]
"""A projection's handler: `(event envelope, payload, rows)`; writes rows, returns nothing."""

SqlHandler: TypeAlias = Callable[[EventEnvelope, E, Sql], None]
"""A SQL projection's handler: `(event envelope, payload, sql)`; runs statements through `sql`."""

Reaction: TypeAlias = Callable[[EventEnvelope, E], None]
"""A reactor's handler: `(event envelope, payload)`; performs a side effect, at least once."""

_NAME = re.compile(r"[A-Za-z0-9._-]+")


class _Handlers(Generic[H]):
    """Naming, validation and the registry of handlers by the payload's full protobuf name."""

    def __init__(
        self,
        name: str,
        aggregates: Sequence[str],
        *,
        max_attempts: int = 3,
        retry_backoff: float = 0.1,
    ) -> None:
        if not _NAME.fullmatch(name or ""):
            raise ConfigurationError(
                f"projection name {name!r} is not usable as a group id and topic name: "
                "use only letters, digits, '.', '_' and '-'"
            )
        if isinstance(aggregates, str) or not aggregates:
            raise ConfigurationError(f"projection {name!r} needs a list of aggregate names")
        if max_attempts < 1 or retry_backoff < 0:
            raise ConfigurationError("max_attempts must be >= 1 and retry_backoff >= 0")
        self._name = name
        self._aggregates = tuple(aggregates)
        self.max_attempts = max_attempts
        """Calls of a handler for one event before the event goes to the dead-letter topic."""
        self.retry_backoff = retry_backoff
        """Seconds before the second attempt; doubled before each further one."""
        self._handlers: dict[str, H] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, {list(self._aggregates)!r})"

    @property
    def name(self) -> str:
        """The projection's name: its consumer group and read model."""
        return self._name

    @property
    def aggregates(self) -> tuple[str, ...]:
        """The aggregates whose events it reads."""
        return self._aggregates

    @property
    def event_types(self) -> tuple[str, ...]:
        """Full protobuf names of the event types with a handler."""
        return tuple(self._handlers)

    def group_id(self, prefix: str = "") -> str:
        """The consumer group: `<prefix><name>`."""
        return f"{prefix}{self._name}"

    def dlq_topic(self, prefix: str = "") -> str:
        """Where events its handlers keep failing on go: `<prefix><name>.dlq`."""
        return f"{prefix}{self._name}.dlq"

    def handles(self, event_type: str) -> bool:
        """Whether a handler is registered for the full protobuf name `event_type`."""
        return event_type in self._handlers

    def _register(self, event_type: type[Message], handler: H) -> None:
        key = str(event_type.DESCRIPTOR.full_name)
        if key in self._handlers:
            raise ConfigurationError(f"{self!r} already has a handler for {key}")
        self._handlers[key] = handler

    def _handler(self, payload: Message) -> H:
        return self._handlers[payload.DESCRIPTOR.full_name]


class Projection(_Handlers[RowHandler[Any]]):
    """A read model built from events; rows and offsets are written together (exactly once)."""

    def on(self, event_type: type[E]) -> Callable[[RowHandler[E]], RowHandler[E]]:
        """Register the decorated function as the handler of `event_type`."""

        def register(handler: RowHandler[E]) -> RowHandler[E]:
            self._register(event_type, handler)
            return handler

        return register

    def apply(self, event: EventEnvelope, payload: Message, rows: RowWriter) -> None:
        """Run the handler of the payload's type (which must be registered)."""
        self._handler(payload)(event, payload, rows)


class SqlProjection(_Handlers[SqlHandler[Any]]):
    """A read model in database tables; each batch's statements and offsets commit together.

    `schema` holds the statements that create its tables (idempotent: `CREATE TABLE IF NOT
    EXISTS`), run when the projection starts; `tables` are the tables a rebuild empties.
    """

    def __init__(
        self,
        name: str,
        aggregates: Sequence[str],
        *,
        schema: Sequence[str] = (),
        tables: Sequence[str] = (),
        max_attempts: int = 3,
        retry_backoff: float = 0.1,
    ) -> None:
        super().__init__(name, aggregates, max_attempts=max_attempts, retry_backoff=retry_backoff)
        bad = [t for t in tables if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", t)]
        if isinstance(schema, str) or isinstance(tables, str) or bad:
            raise ConfigurationError(
                f"projection {name!r}: schema and tables are lists of statements and of plain "
                f"table names{f' (not {bad[0]!r})' if bad else ''}"
            )
        self.schema = tuple(schema)
        """Statements creating the tables, run at start."""
        self.tables = tuple(tables)
        """The tables `kes projection rebuild` empties."""

    def on(self, event_type: type[E]) -> Callable[[SqlHandler[E]], SqlHandler[E]]:
        """Register the decorated function as the handler of `event_type`."""

        def register(handler: SqlHandler[E]) -> SqlHandler[E]:
            self._register(event_type, handler)
            return handler

        return register

    def apply(self, event: EventEnvelope, payload: Message, rows: Any) -> None:
        """Run the handler of the payload's type with `rows`, the batch's `Sql`."""
        self._handler(payload)(event, payload, rows)


class Reactor(_Handlers[Reaction[Any]]):
    """Side effects on events, at least once: dedup on `(event.entity_id, event.revision)`."""

    def on(self, event_type: type[E]) -> Callable[[Reaction[E]], Reaction[E]]:
        """Register the decorated function as the reaction to `event_type`."""

        def register(handler: Reaction[E]) -> Reaction[E]:
            self._register(event_type, handler)
            return handler

        return register

    def apply(self, event: EventEnvelope, payload: Message, rows: RowWriter) -> None:
        """Run the reaction to the payload's type; a reactor writes no rows."""
        self._handler(payload)(event, payload)


AnyProjection: TypeAlias = Projection | SqlProjection | Reactor
"""What an app module's `PROJECTIONS` list holds."""


# --- the per-batch step -------------------------------------------------------------------------


class EventRecord(NamedTuple):
    """An event record as read from an events topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


@dataclass
class StepResult:
    """What one batch asks the projector to write: rows, offsets, dead letters; and counts."""

    rows: Mapping[str, bytes | None]
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)
    applied: int = 0
    """Events a handler ran for."""
    skipped: int = 0
    """Events of types without a handler, and events below the stored offsets."""


def project(
    projection: AnyProjection,
    records: Sequence[EventRecord],
    reader: RowReader | Staging[Any],
    *,
    stored: Mapping[tuple[str, int], int] | None = None,
    adapters: EventAdapters | None = None,
    pause: Callable[[float], None] = time.sleep,
    keys: Mapping[str, Keyring] | None = None,
    strict: bool = False,
    versions: Mapping[str, int] | None = None,
) -> StepResult:
    """Apply a batch of records to a projection, staging its writes; stores nothing itself.

    The handlers write through `reader` when it is a Staging (the projector's batch
    transaction), else through a new RowBatch over it (a store).

    Per record, in offset order:
     1. skip it if it lies below the offset already `stored` for its partition (applied before),
        or if it is a tombstone (an erased entity's event: its `EntityErased` event follows);
     2. decode the envelope, open its sealed personal fields with `keys[topic]` (without a key, an
        erased entity's, they stay empty), and apply the event adapters (failure: dead letter,
        reason from the DecodeError, HANDLER_ERROR if an adapter raised something else);
     3. skip event types the projection has no handler for (their payload is never decoded);
        dead letter NEWER_VERSION an event whose schema version is above the one `versions`
        (event type -> version, from the app's behaviors) holds for its type: handled as the
        older shape, it would project wrongly and silently (kes.streams.core.eventversions);
     4. unpack the payload and run the handler on a child of the batch, up to `max_attempts`
        times (`pause` between, backing off); keep its writes only if it returned, else dead
        letter HANDLER_ERROR with the last error and keep nothing of it (a
        ReadModelUnavailableError is no handler's fault: it ends the batch, nothing stored; a
        staging that cannot undo the handler's writes raises BatchRedoError from `discard`);
     5. the partition's offset becomes the record's offset + 1 whatever the outcome.
    Row objects (`put_as`) are encoded once at the end; if one fails to encode, the batch is
    applied again `strict`ly (over a store here; a staging raises BatchRedoError for the
    projector to begin a strict one), each object encoded as it is put, so that the event
    behind it is the one dead-lettered.
    """
    batch: Staging[Any] = reader if isinstance(reader, Staging) else RowBatch(reader, strict=strict)
    result = StepResult(rows={})
    done = stored or {}
    for record in records:
        where = (record.topic, record.partition)
        if record.offset < done.get(where, 0):
            result.skipped += 1
            continue
        result.offsets[where] = record.offset + 1
        if record.value is None:
            result.skipped += 1
            continue
        try:
            event = decode_event(record.value)
            ring = keys.get(record.topic) if keys is not None else None
            if ring is not None:
                ring.open_event(event)
            if adapters is not None:
                event = adapters.adapt(event)
        except DecodeError as exc:
            result.dead_letters.append(_dead_letter(projection, record, exc.reason, str(exc)))
            continue
        except Exception as exc:
            reason = DeadLetterReason.HANDLER_ERROR
            text = f"event adapter failed: {type(exc).__name__}: {exc}"
            result.dead_letters.append(_dead_letter(projection, record, reason, text))
            continue
        event_type = event.event_type or event.payload.TypeName()
        if not projection.handles(event_type):
            result.skipped += 1
            continue
        if versions is not None and event_type in versions:
            why = newer_event(event, versions[event_type])
            if why is not None:
                reason = DeadLetterReason.NEWER_VERSION
                result.dead_letters.append(_dead_letter(projection, record, reason, why))
                continue
        if any(key == TRACEPARENT for key, _ in record.headers):
            with project_span(f"project {projection.name}", record.headers):
                error = _run(projection, event, batch, pause)
        else:  # untraced: no span to open (most events; the context manager costs per event)
            error = _run(projection, event, batch, pause)
        if error is None:
            result.applied += 1
        else:
            result.dead_letters.append(_dead_letter(projection, record, *error))
    if isinstance(batch, RowBatch):
        try:
            result.rows = batch.rows
        except Exception as exc:
            if strict or isinstance(reader, Staging):
                raise BatchRedoError(f"a row object failed to encode: {exc}") from exc
            log.info("%s: a row object failed to encode; applying the batch again, strictly",
                     projection.name)  # fmt: skip
            return project(
                projection,
                records,
                reader,
                stored=stored,
                adapters=adapters,
                pause=pause,
                keys=keys,
                strict=True,
                versions=versions,
            )
    return result


def _run(
    projection: AnyProjection,
    event: EventEnvelope,
    batch: Staging[Any],
    pause: Callable[[float], None],
) -> tuple[DeadLetterReason, str] | None:
    """Run the handler with retries; None on success, else the dead letter's reason and text."""
    try:
        payload = unpack(event.payload)
    except DecodeError as exc:
        return exc.reason, str(exc)
    delay = projection.retry_backoff
    for attempt in range(1, projection.max_attempts + 1):
        rows = batch.child()
        try:
            projection.apply(event, payload, rows)
        except ReadModelUnavailableError:
            raise
        except Exception as exc:
            batch.discard(rows)
            if attempt == projection.max_attempts:
                text = f"{type(exc).__name__}: {exc} (after {attempt} attempts)"
                return DeadLetterReason.HANDLER_ERROR, text
            pause(delay)
            delay *= 2
            continue
        batch.merge(rows)
        return None
    raise AssertionError("unreachable: max_attempts >= 1")


def _dead_letter(
    projection: AnyProjection, record: EventRecord, reason: DeadLetterReason, error: str
) -> tuple[bytes | None, DeadLetter]:
    letter = new_dead_letter(
        key=record.key,
        value=record.value,
        headers=record.headers,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
        error=f"projection {projection.name}: {error}",
    )
    return record.key, letter


# --- read-your-writes ---------------------------------------------------------------------------


def targets(written: Mapping[int, int] | Reply, topic: str) -> dict[tuple[str, int], int]:
    """The offsets a projection must have stored for `written` to be applied.

    `written` is `{partition: offset of an event}` on `topic`, or a Reply, whose accepted events
    lie at `event_offsets` of `accepted.partition`. A rejected reply, or one without events,
    needs nothing. The result maps `(topic, partition)` to the event's offset + 1.
    """
    if isinstance(written, Reply):
        if written.WhichOneof("outcome") != "accepted" or not written.accepted.event_offsets:
            return {}
        return {(topic, written.accepted.partition): max(written.accepted.event_offsets) + 1}
    return {(topic, partition): offset + 1 for partition, offset in written.items()}


def pending(
    stored: Mapping[tuple[str, int], int], wanted: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """The wanted offsets not reached yet by the stored ones (empty: all applied)."""
    return {where: offset for where, offset in wanted.items() if stored.get(where, 0) < offset}


# --- app modules --------------------------------------------------------------------------------


def load_projections(app: str | ModuleType) -> list[AnyProjection]:
    """The projections and reactors in an app module's `PROJECTIONS` list."""
    module = import_app(app) if isinstance(app, str) else app
    found: list[AnyProjection] = list(getattr(module, "PROJECTIONS", None) or [])
    if not found:
        raise ConfigurationError(f"app module {module.__name__!r} has no PROJECTIONS list")
    wrong = [p for p in found if not isinstance(p, Projection | SqlProjection | Reactor)]
    if wrong:
        raise ConfigurationError(
            f"{module.__name__}.PROJECTIONS holds {wrong[0]!r}, not a Projection, "
            "SqlProjection or Reactor"
        )
    return found


def projection_named(app: str | ModuleType, name: str) -> AnyProjection:
    """The app's projection or reactor called `name`; the error lists the ones it has."""
    found = load_projections(app)
    for projection in found:
        if projection.name == name:
            return projection
    known = ", ".join(sorted(p.name for p in found))
    raise ConfigurationError(f"app module has no projection {name!r}; it has: {known}")
