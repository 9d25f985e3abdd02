"""The worker: Faust as host, one consumer and one transactional producer (the engine), an actor
per partition running the cycle, the transaction that writes its output with the offsets,
recovery of a partition's snapshots, the tail fold and rebuild from the events, the gap check.

The Faust side is imported by name, so that the other layers that use the transaction and
recovery (process managers, migration) do not load Faust: kes.streams.runtime.worker.Worker (what
`kes worker` runs), kes.streams.runtime.engine.Engine and kes.streams.runtime.actors.
"""

from kes.streams.runtime.gaps import skip_deleted
from kes.streams.runtime.processor import PartitionProcessor
from kes.streams.runtime.rebuild import rebuild_partition
from kes.streams.runtime.recovery import recover
from kes.streams.runtime.tailfold import fold_tail
from kes.streams.runtime.transaction import CycleAbortedError, FatalKafkaError, TransactionalWriter

__all__ = [
    "CycleAbortedError",
    "FatalKafkaError",
    "PartitionProcessor",
    "TransactionalWriter",
    "fold_tail",
    "rebuild_partition",
    "recover",
    "skip_deleted",
]
