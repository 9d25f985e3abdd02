"""Events newer than the code: an event whose schema version is above the one the running code
declares for its type is refused, never folded as if it were the older shape.

The worker writes each event's declared version in its metadata (kes.streams.core.adapters
.VERSION_KEY; absent means 1). Code that meets a higher version is older than the code that
wrote it (a rollback, an old worker beside a new one): the fields it does not know would be
dropped from the fold without a word. So every place that folds or projects events checks each
one, after the event adapters ran (an adapter may turn an old event into the current version),
against the versions the code declares: the worker's recovery (tail fold, rebuild), `kes
snapshots rebuild` and `kes verify` against the behavior's, a projection against those of its
app's behaviors. Pure: no Kafka here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kes.schemas.errors import SchemaVersionError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.core.adapters import UNVERSIONED, VERSION_KEY
from kes.streams.core.behavior import Behavior

__all__ = ["check_event_version", "declared_version", "declared_versions", "newer_event"]


def _stored(env: EventEnvelope) -> int | None:
    """The event's schema version as a number; None when its metadata holds something else."""
    text = env.metadata.get(VERSION_KEY, UNVERSIONED)
    return int(text) if text.isascii() and text.isdigit() else None


def newer_event(env: EventEnvelope, declared: int | None) -> str | None:
    """Why `env` (adapted already) is newer than the code, whose version for its type is
    `declared` (None: undeclared, i.e. 1); None when the code knows it."""
    known = declared or 1
    stored = _stored(env)
    name = env.event_type or env.payload.TypeName()
    if stored is None:
        text = env.metadata[VERSION_KEY]
        return f"{name} says schema version {text!r}, not a version number this code knows"
    if stored > known:
        return f"{name} is at schema version {stored}, newer than this code's {known}"
    return None


def check_event_version(behavior: Behavior[Any], env: EventEnvelope, where: str) -> None:
    """Raise SchemaVersionError when `env` is newer than `behavior` declares for its type;
    `where` names the event for the operator (topic[partition]@offset)."""
    why = newer_event(env, declared_version(behavior, env.event_type or env.payload.TypeName()))
    if why is not None:
        raise SchemaVersionError(
            f"the event at {where} (entity {env.entity_id!r}, revision {env.revision}): {why}; "
            "deploy the code that wrote it, never fold it as an older shape"
        )


def declared_versions(behaviors: Iterable[Behavior[Any]]) -> Mapping[str, int]:
    """Each event type the behaviors fold (full name) -> the version they declare (1 if none);
    what a projection checks events against. A type two behaviors fold takes the higher."""
    versions: dict[str, int] = {}
    for behavior in behaviors:
        for event_type in behavior.event_types:
            name = str(event_type.DESCRIPTOR.full_name)
            versions[name] = max(declared_version(behavior, name), versions.get(name, 1))
    return versions


def declared_version(behavior: Behavior[Any], event_type: str) -> int:
    """The schema version `behavior` declares for `event_type` (1 if none); a durable-state
    behavior declares its one event, its state, at its state version (its `event_version`)."""
    declared = behavior.event_version(event_type)
    return declared if declared is not None else 1
