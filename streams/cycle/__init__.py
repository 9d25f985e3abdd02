"""The command cycle without I/O: one batch of command records in, what its transaction must write
out (events, snapshots, outcomes, replies, dead letters), the snapshot policy and the outcome
store's records. Pure: the runtime writes what it decides.
"""

from kes.streams.cycle.batch import BatchStep
from kes.streams.cycle.entity import Entity
from kes.streams.cycle.idempotency import OutcomePolicy
from kes.streams.cycle.records import CommandRecord, OutRecord
from kes.streams.cycle.result import BatchResult
from kes.streams.cycle.snapshotpolicy import SnapshotPolicy, TailIndex

__all__ = [
    "BatchResult",
    "BatchStep",
    "CommandRecord",
    "Entity",
    "OutRecord",
    "OutcomePolicy",
    "SnapshotPolicy",
    "TailIndex",
]
