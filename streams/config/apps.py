"""App modules: where a user's behaviors (and event adapters) are found by name.

An app module is a plain Python module with a module-level `BEHAVIORS` list, and optionally
`EVENT_ADAPTERS` (a kes.streams.core.adapters.EventAdapters) and `PROJECTIONS`; `kes worker
kes.examples.bank` loads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from kes.schemas.errors import ConfigurationError
from kes.streams.core.adapters import EventAdapters
from kes.streams.core.behavior import Behavior
from kes.streams.core.eventversions import declared_versions

__all__ = ["behavior_named", "event_adapters", "event_versions", "import_app", "load_behaviors"]


def import_app(name: str) -> ModuleType:
    """Import an app module, turning an ImportError into a one-line ConfigurationError."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import app module {name!r}: {exc}") from None


def load_behaviors(app: str | ModuleType) -> list[Behavior[Any]]:
    """The behaviors an app module registers in its module-level `BEHAVIORS` list."""
    module = import_app(app) if isinstance(app, str) else app
    behaviors: list[Behavior[Any]] = list(getattr(module, "BEHAVIORS", None) or [])
    if not behaviors:
        raise ConfigurationError(f"app module {module.__name__!r} has no BEHAVIORS list")
    return behaviors


def behavior_named(app: str | ModuleType, aggregate: str) -> Behavior[Any]:
    """The app's behavior for `aggregate`; the error lists the aggregates it has."""
    behaviors = load_behaviors(app)
    for behavior in behaviors:
        if behavior.name == aggregate:
            return behavior
    known = ", ".join(sorted(b.name for b in behaviors))
    raise ConfigurationError(f"app module has no aggregate {aggregate!r}; it has: {known}")


def event_adapters(app: str | ModuleType) -> EventAdapters | None:
    """The app module's optional `EVENT_ADAPTERS`, applied wherever its events are read."""
    module = import_app(app) if isinstance(app, str) else app
    adapters = getattr(module, "EVENT_ADAPTERS", None)
    if adapters is not None and not isinstance(adapters, EventAdapters):
        raise ConfigurationError(
            f"{module.__name__}.EVENT_ADAPTERS is not a kes.streams.core.adapters.EventAdapters"
        )
    return adapters


def event_versions(app: str | ModuleType) -> Mapping[str, int]:
    """Each event type the app module's behaviors fold -> the schema version they declare (an
    app without BEHAVIORS: none); projections dead-letter events newer than that."""
    module = import_app(app) if isinstance(app, str) else app
    return declared_versions(getattr(module, "BEHAVIORS", None) or [])
