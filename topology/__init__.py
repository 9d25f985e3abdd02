"""Topics and partitioning: where an aggregate's commands, events, replies and dead letters live."""

from topology.localbroker import LocalBroker, kafka_classpath, kafka_version
from topology.partitioning import MURMUR2_PARTITIONER, murmur2, partition_for

__all__ = [
    "MURMUR2_PARTITIONER",
    "LocalBroker",
    "kafka_classpath",
    "kafka_version",
    "murmur2",
    "partition_for",
]
