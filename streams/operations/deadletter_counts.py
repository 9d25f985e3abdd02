"""How many dead letters each dead-letter topic holds, counted from the topic itself.

Offsets cannot say it: the worker writes dead letters inside its transactions, so a dead-letter
partition's offsets include commit markers (and aborted records). The counter reads the topics
read_committed, without a consumer group, and counts records; each call reads only what was
appended since the last one, within a time budget, so the count catches up over a few calls.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from kes.schemas.errors import AdminError

__all__ = ["DeadLetterCounter"]


class DeadLetterCounter:
    """Counts committed records per topic; blocking (call it from a thread in async code)."""

    def __init__(self, client_config: Mapping[str, Any], timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._consumer = Consumer(
            {
                **client_config,
                "group.id": f"kes-dlq-count-{uuid.uuid4().hex[:8]}",  # never joins nor commits
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
            }
        )
        self._admin = AdminClient(dict(client_config))
        self._assigned: dict[str, int] = {}
        self._counts: dict[str, int] = {}

    def count(self, topics: Sequence[str], budget: float = 2.0) -> dict[str, int]:
        """Records counted so far on each existing topic of `topics`, after reading for up to
        `budget` seconds; topics that do not exist are left out."""
        self._assign([t for t in topics if t not in self._assigned])
        deadline = time.monotonic() + budget
        ends = self._ends()
        while time.monotonic() < deadline and self._behind(ends):
            for message in self._consumer.consume(500, timeout=0.2):
                if message.error() is None:
                    topic = str(message.topic())
                    self._counts[topic] = self._counts.get(topic, 0) + 1
        return {t: self._counts.get(t, 0) for t in topics if t in self._assigned}

    def _assign(self, topics: Sequence[str]) -> None:
        if not topics:
            return
        try:
            metadata = self._admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise AdminError(f"list topics: {exc.args[0] if exc.args else exc}") from exc
        new = []
        for topic in topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            self._assigned[topic] = len(meta.partitions)
            new += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        if new:
            self._consumer.incremental_assign(new)

    def _ends(self) -> dict[tuple[str, int], int]:
        """Each assigned partition's last stable offset (where read_committed reading ends)."""
        request = {
            TopicPartition(t, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
            for t, n in self._assigned.items()
            for p in range(n)
        }
        if not request:
            return {}
        futures = self._admin.list_offsets(
            request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self.timeout
        )
        ends = {}
        for tp, future in futures.items():
            try:
                ends[(tp.topic, tp.partition)] = int(future.result(self.timeout).offset)
            except (KafkaException, TimeoutError) as exc:
                raise AdminError(f"end of {tp.topic}[{tp.partition}]: {exc}") from exc
        return ends

    def _behind(self, ends: Mapping[tuple[str, int], int]) -> bool:
        """True while some partition's position is before the end read at the start."""
        if not ends:
            return False
        positions = self._consumer.position([TopicPartition(t, p) for t, p in ends])
        return any(max(tp.offset, 0) < ends[(tp.topic, tp.partition)] for tp in positions)

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()
