"""State: snapshot stores (a cache of the snapshot changelog) and read-model stores."""

from stores.snapshots import (
    Checkpoint,
    MemorySnapshotStore,
    PartitionSnapshots,
    RocksDBSnapshotStore,
    SnapshotStore,
)

__all__ = [
    "Checkpoint",
    "MemorySnapshotStore",
    "PartitionSnapshots",
    "RocksDBSnapshotStore",
    "SnapshotStore",
]
