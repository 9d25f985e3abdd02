"""Given events, then rows: specifications for projections that run the projector's step, no Kafka.

    given_events(balances, ("acc-1", AccountOpened(account_id="acc-1", owner="ann", balance=5)),
                           ("acc-1", AccountCredited(account_id="acc-1", amount=3, balance=8)))
        .then_row("acc-1", BalanceRow(8, 2, 2, "ann").encode())

Events go through the same pure step as in production
(`kes.streams.projections.projection.project`): encoded as envelopes with per-entity revisions 1, 2,
..., decoded, adapted, handed to the handlers with their retries; rows are staged exactly as the
projector would write them. A handler that keeps failing is a dead letter here too:
`then_dead_letters` checks them. `.and_events(...)` applies more events on top of the rows so far (a
later batch).

Old events are tested against the current projection with the app's event adapters
(`adapters=EVENT_ADAPTERS`); an event given as `(entity id, event, version)` is one stored at
that schema version (for adapters keyed by version). `versions=` (event type -> declared version,
kes.streams.config.apps.event_versions) stamps the others as the worker writes them and
dead-letters those newer than it, as the projector does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

from google.protobuf.message import Message

from kes.schemas.codec import encode_event, event_key, pack, type_name
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.core.adapters import VERSION_KEY, EventAdapters
from kes.streams.projections.projection import AnyProjection, EventRecord, project

__all__ = ["ProjectionScenario", "given_events"]

_TOPIC = "events"

GivenEvent: TypeAlias = tuple[str, Message] | tuple[str, Message, int]
"""`(entity id, event)`, or `(entity id, event, schema version)` for one stored at a version."""


class _Rows:
    """The scenario's read model: rows and offsets in dictionaries (no store library)."""

    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}
        self.offsets: dict[tuple[str, int], int] = {}

    def get(self, key: str) -> bytes | None:
        return self.rows.get(key)

    def write(
        self, rows: Mapping[str, bytes | None], offsets: Mapping[tuple[str, int], int]
    ) -> None:
        for key, value in rows.items():
            if value is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = value
        self.offsets.update(offsets)

    def items(self) -> Iterator[tuple[str, bytes]]:
        return iter(sorted(self.rows.items()))


def given_events(
    projection: AnyProjection,
    *events: GivenEvent,
    adapters: EventAdapters | None = None,
    versions: Mapping[str, int] | None = None,
) -> ProjectionScenario:
    """Apply `(entity id, event)` pairs, in order, to an empty read model."""
    return ProjectionScenario(projection, adapters, versions).and_events(*events)


class ProjectionScenario:
    """A projection's read model after the events given so far; `then_*` assert on it."""

    def __init__(
        self,
        projection: AnyProjection,
        adapters: EventAdapters | None = None,
        versions: Mapping[str, int] | None = None,
    ) -> None:
        self.projection = projection
        self._versions = versions
        self.store = _Rows()
        self.dead_letters: list[str] = []
        """Each dead letter's error text, in order."""
        self._adapters = adapters
        self._revisions: dict[str, int] = {}
        self._offset = 0

    def records(self, *events: GivenEvent) -> list[EventRecord]:
        """`(entity id, event)` pairs as the event records a projector would read next."""
        return [self._record(*given) for given in events]

    def and_events(self, *events: GivenEvent) -> ProjectionScenario:
        """Apply more `(entity id, event)` pairs as one batch, then store the rows."""
        records = self.records(*events)
        result = project(
            self.projection,
            records,
            self.store,
            stored=self.store.offsets,
            adapters=self._adapters,
            pause=lambda _: None,
            versions=self._versions,
        )
        self.store.write(result.rows, result.offsets)
        self.dead_letters += [letter.error for _, letter in result.dead_letters]
        return self

    def _record(self, entity_id: str, event: Message, version: int | None = None) -> EventRecord:
        revision = self._revisions.get(entity_id, 0) + 1
        self._revisions[entity_id] = revision
        env = EventEnvelope(
            entity_id=entity_id,
            revision=revision,
            payload=pack(event),
            aggregate=self.projection.aggregates[0],
            event_type=type_name(event),
        )
        if version is None and self._versions is not None:
            version = self._versions.get(env.event_type)
        if version is not None:
            env.metadata[VERSION_KEY] = str(version)
        self._offset += 1
        key = event_key(entity_id, revision)
        return EventRecord(_TOPIC, 0, self._offset - 1, key, encode_event(env))

    def rows(self) -> dict[str, bytes]:
        """Every row, by key."""
        return dict(self.store.items())

    def then_row(
        self, key: str, expected: bytes | Any, decode: Callable[[bytes], Any] | None = None
    ) -> ProjectionScenario:
        """The row under `key` is `expected` (compared after `decode`, when given)."""
        row = self.store.get(key)
        if row is None:
            raise AssertionError(f"no row {key!r}; rows: {sorted(self.rows())}")
        actual = decode(row) if decode is not None else row
        if actual != expected:
            raise AssertionError(f"row {key!r}:\n  expected {expected!r}\n  actual   {actual!r}")
        return self

    def then_rows(
        self, expected: Mapping[str, Any], decode: Callable[[bytes], Any] | None = None
    ) -> ProjectionScenario:
        """The read model holds exactly `expected` (values compared after `decode`)."""
        actual = {k: decode(v) if decode else v for k, v in self.rows().items()}
        if actual != dict(expected):
            raise AssertionError(f"rows:\n  expected {dict(expected)!r}\n  actual   {actual!r}")
        return self

    def then_no_row(self, key: str) -> ProjectionScenario:
        """No row under `key`."""
        if self.store.get(key) is not None:
            raise AssertionError(f"row {key!r} exists: {self.store.get(key)!r}")
        return self

    def then_dead_letters(self, *fragments: str) -> ProjectionScenario:
        """One dead letter per fragment, in order, each error containing its fragment."""
        if len(self.dead_letters) != len(fragments) or not all(
            f in e for f, e in zip(fragments, self.dead_letters, strict=True)
        ):
            raise AssertionError(
                f"dead letters:\n  expected {list(fragments)!r}\n  actual   {self.dead_letters!r}"
            )
        return self
