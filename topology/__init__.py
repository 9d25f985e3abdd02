"""Topics and partitioning: where an aggregate's commands, events, replies and dead letters live.

The names here are pure (no client library): an aggregate's topic layout, the partitioner, and
the plan of a topic set's changes. The modules that talk to a cluster are imported by name:
kes.topology.admin (`kes topics plan|apply|describe`), kes.topology.localbroker and
kes.topology.localcluster (local Kafka from Maven jars), kes.topology.localpostgres.
"""

from kes.topology.layout import AggregateTopics, TopicSpec
from kes.topology.partitioning import MURMUR2_PARTITIONER, murmur2, partition_for
from kes.topology.plans import ConfigDrift, Plan, TopicCheck, TopicState, TopicStatus

__all__ = [
    "MURMUR2_PARTITIONER",
    "AggregateTopics",
    "ConfigDrift",
    "Plan",
    "TopicCheck",
    "TopicSpec",
    "TopicState",
    "TopicStatus",
    "murmur2",
    "partition_for",
]
