"""State: snapshot stores (a cache of the snapshot changelog) and read-model stores."""

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
    "MemorySnapshotStore",
    "PartitionSnapshots",
    "ReadModelStore",
    "RocksDBReadModelStore",
    "RocksDBSnapshotStore",
    "SnapshotStore",
]
