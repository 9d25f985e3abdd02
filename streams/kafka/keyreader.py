"""Readers' view of an aggregate's keys topic: each entity's latest data-key record, on demand.

`kes events`, projections, `kes verify` and a rebuild read sealed events; `KeysTopic.lookup`
answers the entity's record on `<aggregate>.keys` (a wrapped key, or an erasure marker). A
partition is read (read_committed, no group) the first time one of its entities is asked for,
and read on from where it stopped when an entity is missing: a new entity's key record is
committed in the transaction that wrote its first events, but the transaction's markers reach
the two partitions one after the other, so a miss is asked again for up to `settle` seconds.
Records are kept per partition read (their wrapped form only, about a hundred bytes each).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from kes.schemas.errors import DeadLetterReason, DecodeError, KesError
from kes.schemas.kes.v1.personal_pb2 import DataKey
from kes.streams.core.keyring import Keyring, MasterKey
from kes.streams.kafka.watermarks import watermarks
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import partition_for

__all__ = ["KeysTopic", "keyring_for"]

log = logging.getLogger(__name__)


class KeysTopic:
    """The latest key record per entity of one aggregate, read partition by partition."""

    def __init__(
        self,
        topics: AggregateTopics,
        client_config: Mapping[str, Any],
        *,
        timeout: float = 30.0,
        settle: float = 5.0,
    ) -> None:
        self.topics = topics
        self._config = dict(client_config)
        self._timeout = timeout
        self._settle = settle
        self._records: dict[str, DataKey] = {}
        self._next: dict[int, int] = {}
        """Per partition read: the offset to read on from."""
        self._consumer: Consumer | None = None

    def _open(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **self._config,
                    "group.id": f"kes-keys-{uuid.uuid4().hex}",  # required; never joined
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                }
            )
        return self._consumer

    def lookup(self, entity_id: str) -> DataKey | None:
        """The entity's latest key record (None: none, even after waiting `settle` seconds)."""
        partition = partition_for(entity_id, self.topics.partitions)
        if partition not in self._next:
            self._read_on(partition)
        found = self._records.get(entity_id)
        deadline = time.monotonic() + self._settle
        while found is None and time.monotonic() < deadline:
            time.sleep(0.1)
            self._read_on(partition)
            found = self._records.get(entity_id)
        if found is None:
            log.warning("%s: no key record for %r", self.topics.keys, entity_id)
        return found

    def _read_on(self, partition: int) -> None:
        """Read the partition from where it stopped to its end now (last stable offset)."""
        consumer = self._open()
        topic = self.topics.keys
        low, high = watermarks(consumer, topic, partition + 1, self._timeout)[partition]
        start = max(self._next.get(partition, low), low)
        self._next[partition] = max(start, high)
        if start >= high:
            return
        consumer.assign([TopicPartition(topic, partition, start)])
        try:
            while True:
                msg = consumer.poll(self._timeout)
                if msg is None:
                    raise KesError(f"reading {topic}[{partition}] stalled at offset {start}")
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return
                    raise KesError(f"reading {topic}[{partition}]: {error.str()}")
                offset = msg.offset() or 0
                if offset >= high:
                    return
                self._keep(msg.key(), msg.value(), topic, partition, offset)
                if offset >= high - 1:
                    return
        finally:
            consumer.unassign()

    def _keep(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> None:
        if not key:
            return
        entity_id = key.decode("utf-8", "replace")
        if value is None:  # a tombstone: no record any more
            self._records.pop(entity_id, None)
            return
        try:
            self._records[entity_id] = DataKey.FromString(value)
        except Exception as exc:
            raise DecodeError(
                DeadLetterReason.UNDECODABLE,
                f"{topic}[{partition}]@{offset}: not a kes.v1.DataKey: {exc}",
            ) from exc

    def close(self) -> None:
        """Close the consumer (a later lookup opens another)."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def keyring_for(
    topics: AggregateTopics, client_config: Mapping[str, Any], master: MasterKey | None
) -> Keyring:
    """A keyring that opens the aggregate's sealed records with `master` (None: none opened)."""
    return Keyring(master, KeysTopic(topics, client_config).lookup)
