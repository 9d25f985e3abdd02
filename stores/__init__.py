"""State: snapshot stores (a cache of the snapshot changelog) and read-model stores
(in memory, RocksDB, or PostgreSQL: rows, or a SQL projection's own tables)."""

from stores.postgres import PostgresReadModelStore
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
from stores.sqlmodel import SqlReadModel, SqlTransaction

__all__ = [
    "Checkpoint",
    "MemoryReadModelStore",
    "MemorySnapshotStore",
    "PartitionSnapshots",
    "PostgresReadModelStore",
    "ReadModelStore",
    "RocksDBReadModelStore",
    "RocksDBSnapshotStore",
    "SnapshotStore",
    "SqlReadModel",
    "SqlTransaction",
]
