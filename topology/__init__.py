"""Topics and partitioning: where an aggregate's commands, events, replies and dead letters live."""

from topology.admin import apply, describe, plan, run_topics, verify_layout
from topology.layout import AggregateTopics, TopicSpec
from topology.localbroker import LocalBroker, kafka_classpath, kafka_version
from topology.localcluster import LocalCluster
from topology.partitioning import MURMUR2_PARTITIONER, murmur2, partition_for
from topology.plans import ConfigDrift, Plan, TopicCheck, TopicState, TopicStatus

__all__ = [
    "MURMUR2_PARTITIONER",
    "AggregateTopics",
    "ConfigDrift",
    "LocalBroker",
    "LocalCluster",
    "Plan",
    "TopicCheck",
    "TopicSpec",
    "TopicState",
    "TopicStatus",
    "apply",
    "describe",
    "kafka_classpath",
    "kafka_version",
    "murmur2",
    "partition_for",
    "plan",
    "run_topics",
    "verify_layout",
]
