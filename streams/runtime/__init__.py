"""The worker: Faust as host, one consumer and one transactional producer (the engine), an actor
per partition running the cycle, the transaction that writes its output with the offsets,
recovery of a partition's snapshots, the tail fold and rebuild from the events, the gap check.
"""

from kes.streams.runtime.engine import EXIT_BATCH_FAILED, EXIT_CONFIGURATION, Engine
from kes.streams.runtime.gaps import skip_deleted
from kes.streams.runtime.processor import PartitionProcessor
from kes.streams.runtime.rebuild import rebuild_partition
from kes.streams.runtime.recovery import recover
from kes.streams.runtime.tailfold import fold_tail
from kes.streams.runtime.transaction import CycleAbortedError, FatalKafkaError, TransactionalWriter
from kes.streams.runtime.worker import Worker

__all__ = [
    "EXIT_BATCH_FAILED",
    "EXIT_CONFIGURATION",
    "CycleAbortedError",
    "Engine",
    "FatalKafkaError",
    "PartitionProcessor",
    "TransactionalWriter",
    "Worker",
    "fold_tail",
    "rebuild_partition",
    "recover",
    "skip_deleted",
]
