"""Where a topic's partitions begin and end, asked of the broker and waited for patiently.

A topic created a moment ago may have no leader yet, or be unknown to the broker answering; both
pass within seconds, so this retries them. A read_committed consumer is told the last stable
offset as the end, so a reader stopping there never waits on an open transaction.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from kes.schemas.errors import TopologyError

__all__ = ["watermarks"]

_PATIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
    }
)
_UNKNOWN = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION})
_UNKNOWN_PATIENCE = 5.0


def watermarks(
    consumer: Any, topic: str, partitions: int, timeout: float = 30.0
) -> dict[int, tuple[int, int]]:
    """`{partition: (low, high)}` for partitions `0..partitions-1` of `topic`.

    Retries a missing leader until `timeout`, an unknown topic or partition for a few seconds;
    then raises TopologyError naming the partition and what to check.
    """
    started = time.monotonic()
    result: dict[int, tuple[int, int]] = {}
    for p in range(partitions):
        while True:
            left = timeout - (time.monotonic() - started)
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=max(left, 0.1), cached=False
                )
                result[p] = (int(low), int(high))
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                elapsed = time.monotonic() - started
                code = error.code()
                patient = code in _PATIENT or error.retriable()
                if (patient and elapsed < timeout) or (
                    code in _UNKNOWN and elapsed < min(_UNKNOWN_PATIENCE, timeout)
                ):
                    time.sleep(0.1)
                    continue
                raise TopologyError(
                    [
                        f"cannot read the offsets of {topic}[{p}] ({error.str()}): do the "
                        f"aggregate's topics exist with {partitions} partitions? (kes topics)"
                    ]
                ) from None
    return result
