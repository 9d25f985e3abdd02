"""How a kes process is set up: its settings (flags and KES_* variables), the app module that
names its behaviors, adapters and projections. Stands on kes.streams.core.
"""

from kes.streams.config.apps import (
    behavior_named,
    event_adapters,
    event_versions,
    import_app,
    load_behaviors,
)
from kes.streams.config.durablestate import is_durable_state, layout_of
from kes.streams.config.settings import Guarantee, Settings

__all__ = [
    "Guarantee",
    "Settings",
    "behavior_named",
    "event_adapters",
    "event_versions",
    "import_app",
    "is_durable_state",
    "layout_of",
    "load_behaviors",
]
