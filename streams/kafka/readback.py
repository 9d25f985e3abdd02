"""Reading a topic's committed records back, up to its end at the time of the call.

Used by every tool that checks or rebuilds from the log (verify, rebuild, recovery's tail fold,
the gap check, dead letters, history, migration): one read_committed consumer per call, assigned
to the partitions (no group), stopped at the end offsets taken at start.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, TopicPartition

from kes.streams.kafka.watermarks import watermarks

__all__ = ["TopicRecord", "read_records", "read_topic"]


class TopicRecord(NamedTuple):
    """One committed record as read back: where it is, and what it holds."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def read_records(
    topic: str,
    partitions: int,
    client_config: Mapping[str, Any],
    *,
    timeout: float = 10.0,
    only: Iterable[int] | None = None,
    start: Mapping[int, int] | None = None,
) -> Iterator[TopicRecord]:
    """Each committed record of a topic, up to its end at call time (no group, no commit);
    `start` gives the first offset to read of some partitions (else their beginning)."""
    consumer = Consumer(
        {
            **client_config,
            "group.id": "kes-verify",
            "auto.offset.reset": "earliest",  # from the log start once retention deleted some
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        wanted = list(range(partitions) if only is None else only)
        # with retries: a topic just created may not have its leaders yet
        marks = watermarks(consumer, topic, max(wanted) + 1 if wanted else 0, max(timeout, 30))
        ends = {p: marks[p][1] for p in wanted}
        first = {p: max(0, (start or {}).get(p, 0)) for p in wanted}
        todo = {p for p, high in ends.items() if high > first[p]}
        consumer.assign([TopicPartition(topic, p, first[p]) for p in todo])
        while todo:
            msg = consumer.poll(timeout)
            if msg is None:
                raise TimeoutError(f"no progress reading {topic} (partitions {sorted(todo)} left)")
            partition, offset, error = msg.partition() or 0, msg.offset() or 0, msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    todo.discard(partition)
                    continue
                raise RuntimeError(str(error))
            if offset >= ends[partition] - 1:
                todo.discard(partition)
            if offset < ends[partition]:
                raw: Any = msg.headers() or []
                headers = [(str(k), _header_bytes(v)) for k, v in raw]
                yield TopicRecord(partition, offset, msg.key(), msg.value(), headers)
    finally:
        consumer.close()


def _header_bytes(value: bytes | str | None) -> bytes:
    return value if isinstance(value, bytes) else (value or "").encode()


def read_topic(
    topic: str,
    partitions: int,
    client_config: Mapping[str, Any],
    *,
    timeout: float = 10.0,
    only: Iterable[int] | None = None,
) -> Iterator[tuple[int, bytes | None, bytes | None]]:
    """Each committed record (partition, key, value) of a topic, up to its end at call time.

    `only` limits the read to some partitions.
    """
    for record in read_records(topic, partitions, client_config, timeout=timeout, only=only):
        yield record.partition, record.key, record.value
