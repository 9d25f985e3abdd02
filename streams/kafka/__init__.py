"""Kafka client plumbing shared by every process: client configurations (confluent-kafka, aiokafka,
Faust), a connectivity check, watermarks, reading a topic's committed records back and the keys
topic of personal data.
"""

from kes.streams.kafka.config import aiokafka_options, confluent_config, faust_credentials
from kes.streams.kafka.connectivity import check_reachable
from kes.streams.kafka.keyreader import KeysTopic, keyring_for
from kes.streams.kafka.readback import TopicRecord, read_records, read_topic

__all__ = [
    "KeysTopic",
    "TopicRecord",
    "aiokafka_options",
    "check_reachable",
    "confluent_config",
    "faust_credentials",
    "keyring_for",
    "read_records",
    "read_topic",
]
