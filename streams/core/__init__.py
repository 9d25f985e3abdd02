"""The pure core: behaviors (decide and evolve), decisions, the Given/When/Then test kit, schema
evolution (event adapters or upcasters, event versions, state migrations) and personal data's
keyring. No Kafka, Faust, RocksDB or database client:
everything else in kes.streams stands on this layer.
"""

from kes.streams.core.adapters import VERSION_KEY, EventAdapter, EventAdapters
from kes.streams.core.behavior import (
    Behavior,
    CommandHandler,
    DurableStateBehavior,
    DurableStateHandler,
    EventHandler,
    EventSourcedBehavior,
)
from kes.streams.core.decision import (
    Accepted,
    CommandContext,
    Decision,
    Failed,
    Rejected,
    Rejection,
    RejectionCode,
    reject,
)
from kes.streams.core.eventversions import check_event_version
from kes.streams.core.keyring import Keyring, LocalMasterKey, MasterKey, master_key_from_env
from kes.streams.core.statemigration import StateMigrations
from kes.streams.core.testkit import Given, Scenario, given

__all__ = [
    "VERSION_KEY",
    "Accepted",
    "Behavior",
    "CommandContext",
    "CommandHandler",
    "Decision",
    "DurableStateBehavior",
    "DurableStateHandler",
    "EventAdapter",
    "EventAdapters",
    "EventHandler",
    "EventSourcedBehavior",
    "Failed",
    "Given",
    "Keyring",
    "LocalMasterKey",
    "MasterKey",
    "Rejected",
    "Rejection",
    "RejectionCode",
    "Scenario",
    "StateMigrations",
    "check_event_version",
    "given",
    "master_key_from_env",
    "reject",
]
