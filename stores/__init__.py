"""State: snapshot stores (a cache of the snapshot changelog), read-model stores, and revision
ledgers (a reactor's record of the events it handled)."""

from stores.ledger import MemoryRevisionLedger, RevisionLedger, RocksDBRevisionLedger
from stores.readmodels import (
    MemoryReadModelStore,
    ReadModelStore,
    RocksDBReadModelStore,
)
from stores.snapshots import (
    Checkpoint,
    MemorySnapshotStore,
    PartitionSnapshots,
    RocksDBSnapshotStore,
    SnapshotStore,
)

__all__ = [
    "Checkpoint",
    "MemoryReadModelStore",
    "MemoryRevisionLedger",
    "MemorySnapshotStore",
    "PartitionSnapshots",
    "ReadModelStore",
    "RevisionLedger",
    "RocksDBReadModelStore",
    "RocksDBRevisionLedger",
    "RocksDBSnapshotStore",
    "SnapshotStore",
]
