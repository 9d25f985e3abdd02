"""Event adapters (upcasters): old events on the log read as the current event types.

The events topic keeps every event forever, so an event type that changed shape stays on the log
in its old form. An adapter turns one old type (optionally one schema version of it, taken from
the envelope's metadata) into a newer message; adapters chain, old → newer → newest, so each
schema change needs only one adapter. The worker writes an event's version under `VERSION_KEY`
when its behavior declares one (`@behavior.event(Type, version=2)`); an event written without
the key is version "1". The app module's `EVENT_ADAPTERS` (kes.streams.config.apps) reach every
place kes folds or reads events: the worker's recovery (the snapshot interval's tail fold, a rebuild
of a lost changelog), `kes snapshots rebuild`, `kes verify`, `kes events` and the console,
`read_events` / history when given them, and projections; so behaviors and handlers see only current
types. Snapshots' states evolve separately (kes.streams.core.statemigration). Pure: no Kafka here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

from kes.schemas.codec import pack, type_name, unpack
from kes.schemas.errors import ConfigurationError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope

__all__ = ["UNVERSIONED", "VERSION_KEY", "EventAdapter", "EventAdapters"]

VERSION_KEY = "schema-version"
"""The event metadata key that holds an event's schema version (written by the worker)."""

UNVERSIONED = "1"
"""The version of an event stored without the version key."""

EventAdapter = Callable[[Message], Message]
"""Old event (decoded, or the packed `Any` when registered with `packed=True`) → newer event."""

_MAX_CHAIN = 64


@dataclass(frozen=True)
class _Entry:
    adapter: EventAdapter
    packed: bool
    to_version: str | None


def _name(event_type: str | type[Message]) -> str:
    return event_type if isinstance(event_type, str) else str(event_type.DESCRIPTOR.full_name)


class EventAdapters:
    """A registry of event adapters keyed by old full type name and, optionally, schema version.

    A lookup tries the exact `(type, version)` first, then the type with any version. An adapter
    registered with `packed=True` receives the envelope's `Any` as is, for old types whose
    generated code is gone; otherwise it receives the decoded old message.
    """

    def __init__(self, version_key: str = VERSION_KEY) -> None:
        self._version_key = version_key
        self._entries: dict[tuple[str, str | None], _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def register(
        self,
        old_type: str | type[Message],
        adapter: EventAdapter,
        *,
        version: str | None = None,
        to_version: str | None = None,
        packed: bool = False,
    ) -> None:
        """Adapt events of `old_type` (full name or class), of schema `version` if given.

        `to_version` is written to the adapted event's metadata; without it the version key is
        dropped when this adapter matched on a version or changed the type (the result is
        "current": the old key described the old shape).
        Raises ConfigurationError if an adapter is already registered for the same key.
        """
        key = (_name(old_type), version)
        if key in self._entries:
            raise ConfigurationError(
                f"an event adapter for {key[0]} (version {version or 'any'}) is already registered"
            )
        self._entries[key] = _Entry(adapter, packed, to_version)

    def adapter(
        self,
        old_type: str | type[Message],
        *,
        version: str | None = None,
        to_version: str | None = None,
        packed: bool = False,
    ) -> Callable[[EventAdapter], EventAdapter]:
        """Decorator form of `register`."""

        def decorate(fn: EventAdapter) -> EventAdapter:
            self.register(old_type, fn, version=version, to_version=to_version, packed=packed)
            return fn

        return decorate

    def adapt(self, env: EventEnvelope) -> EventEnvelope:
        """The envelope with its payload adapted to the newest type; `env` itself if none applies.

        An event stored without the version key matches adapters of version "1". The input is
        never modified. Raises `DecodeError(UNKNOWN_TYPE)` when an adapter wants the
        decoded old message but its type is not registered, and ConfigurationError on a cycle.
        """
        current = env
        seen: set[tuple[str, str | None]] = set()
        while True:
            name = current.event_type or current.payload.TypeName()
            version = current.metadata.get(self._version_key)
            if version is None and current is env:  # as stored: written before any version
                version = UNVERSIONED
            entry = self._entries.get((name, version))
            matched_version = version if entry is not None else None
            if entry is None:
                entry = self._entries.get((name, None))
            if entry is None:
                return current
            if (name, version) in seen or len(seen) >= _MAX_CHAIN:
                raise ConfigurationError(
                    f"event adapters loop on {name} (version {version or 'any'}): "
                    "an adapter must produce a different type or set to_version"
                )
            seen.add((name, version))
            current = self._apply(current, entry, matched_version)

    def _apply(
        self, env: EventEnvelope, entry: _Entry, matched_version: str | None
    ) -> EventEnvelope:
        old_name = env.event_type or env.payload.TypeName()
        old: Message = _copy_any(env.payload) if entry.packed else unpack(env.payload)
        new = entry.adapter(old)
        if not isinstance(new, Message):
            raise ConfigurationError(
                f"the event adapter for {env.event_type or env.payload.TypeName()} returned "
                f"{type(new).__name__}, not a protobuf message"
            )
        adapted = EventEnvelope()
        adapted.CopyFrom(env)
        adapted.payload.CopyFrom(pack(new))
        adapted.event_type = type_name(new)
        if entry.to_version is not None:
            adapted.metadata[self._version_key] = entry.to_version
        elif matched_version is not None or adapted.event_type != old_name:
            adapted.metadata.pop(self._version_key, None)  # it described the old shape
        return adapted


def _copy_any(any_msg: any_pb2.Any) -> any_pb2.Any:
    copy = any_pb2.Any()
    copy.CopyFrom(any_msg)
    return copy
