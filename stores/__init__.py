"""State: snapshot stores (a cache of the snapshot changelog), read-model stores (in memory,
RocksDB, or PostgreSQL: rows, or a SQL projection's own tables), and revision ledgers (a
reactor's record of the events it handled)."""

from kes.stores.ledger import MemoryRevisionLedger, RevisionLedger, RocksDBRevisionLedger
from kes.stores.postgres import PostgresReadModelStore
from kes.stores.readmodels import (
    MemoryReadModelStore,
    ReadModelStore,
    RocksDBReadModelStore,
)
from kes.stores.snapshots import (
    Checkpoint,
    MemorySnapshotStore,
    PartitionSnapshots,
    RocksDBSnapshotStore,
    SnapshotStore,
)
from kes.stores.sqlmodel import SqlReadModel, SqlTransaction

__all__ = [
    "Checkpoint",
    "MemoryReadModelStore",
    "MemoryRevisionLedger",
    "MemorySnapshotStore",
    "PartitionSnapshots",
    "PostgresReadModelStore",
    "ReadModelStore",
    "RevisionLedger",
    "RocksDBReadModelStore",
    "RocksDBRevisionLedger",
    "RocksDBSnapshotStore",
    "SnapshotStore",
    "SqlReadModel",
    "SqlTransaction",
]
