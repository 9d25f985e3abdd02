"""Topics and partitioning: where an aggregate's commands, events, replies and dead letters live."""

from topology.localbroker import LocalBroker, kafka_classpath, kafka_version

__all__ = ["LocalBroker", "kafka_classpath", "kafka_version"]
