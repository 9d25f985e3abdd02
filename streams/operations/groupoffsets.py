"""Reading consumer-group offsets from the cluster: the Kafka side of kes.streams.operations.lag.

One `OffsetsReader.read(targets)` asks the cluster, with the confluent-kafka AdminClient, what
`kafka-consumer-groups --describe` asks it: the groups' committed offsets (OffsetFetch), the
topics' log end offsets (ListOffsets, latest, read_uncommitted: the high watermark), and the
groups' members with their assignments (DescribeGroups). Blocking; call it from a thread in
async code.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from kes.schemas.errors import AdminError, ConfigurationError
from kes.streams.operations.lag import GroupReading, LagTarget, Owner, PartitionReading
from kes.topology.admin import admin_result

__all__ = ["IsolatedOffsetsReader", "OffsetsReader"]

_METADATA_TTL = 30.0
"""Seconds a reader keeps the cluster's partition counts (a new target topic asks at once)."""


def _require_bootstrap(client_config: Mapping[str, Any]) -> None:
    if "bootstrap.servers" not in client_config:
        raise ConfigurationError("client config has no bootstrap.servers: set the broker")


class OffsetsReader:
    """Reads committed offsets, log ends and owners of (group, topic) targets."""

    def __init__(self, client_config: Mapping[str, Any], timeout: float = 10.0) -> None:
        _require_bootstrap(client_config)
        self.timeout = timeout
        self._admin = AdminClient(dict(client_config))
        self._counts: tuple[float, dict[str, int]] | None = None
        self._known: set[str] = set()

    def read(self, targets: Sequence[LagTarget]) -> list[GroupReading]:
        """One reading per target, in order; a target whose topic is missing carries an error.

        Raises AdminError when the cluster does not answer at all.
        """
        at = time.time()
        counts = self._partition_counts({t.topic for t in targets})
        ends = self._log_ends(counts)
        groups = sorted({t.group for t in targets})
        described = self._describe(groups)
        readings = []
        for target in targets:
            count = counts.get(target.topic)
            if count is None:
                readings.append(
                    GroupReading(target, at, error=f"topic {target.topic} does not exist")
                )
                continue
            committed = self._committed(target.group, target.topic, count)
            state, owners = described.get(target.group, ("", {}))
            rows = tuple(
                PartitionReading(
                    p, committed.get(p), ends[(target.topic, p)], owners.get((target.topic, p))
                )
                for p in range(count)
            )
            readings.append(GroupReading(target, at, rows, state))
        return readings

    def _partition_counts(self, topics: set[str]) -> dict[str, int]:
        """Partition counts of the topics that exist, from metadata at most `_METADATA_TTL` old.

        The cluster's whole metadata is asked for (asking for a missing topic by name could
        create it), so it is kept a while: a monitor reads lag every few seconds.
        """
        now = time.monotonic()
        if self._counts is None or now - self._counts[0] > _METADATA_TTL or topics - self._known:
            try:
                metadata = self._admin.list_topics(timeout=self.timeout)
            except KafkaException as exc:
                raise AdminError(f"list topics: {exc.args[0] if exc.args else exc}") from exc
            counts = {
                name: len(meta.partitions)
                for name, meta in metadata.topics.items()
                if meta.error is None and not name.startswith("__")
            }
            self._counts, self._known = (now, counts), set(topics)
        return {name: n for name, n in self._counts[1].items() if name in topics}

    def _log_ends(self, counts: Mapping[str, int]) -> dict[tuple[str, int], int]:
        if not counts:
            return {}
        request = {
            TopicPartition(topic, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
            for topic, n in counts.items()
            for p in range(n)
        }
        futures = self._admin.list_offsets(request, request_timeout=self.timeout)
        ends = {}
        for tp, future in futures.items():
            info = admin_result(future, f"log end of {tp.topic}[{tp.partition}]", self.timeout)
            ends[(tp.topic, tp.partition)] = int(info.offset)
        return ends

    def _committed(self, group: str, topic: str, count: int) -> dict[int, int]:
        request = [
            ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(count)])
        ]
        futures = self._admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
        result = admin_result(futures[group], f"committed offsets of group {group}", self.timeout)
        return {tp.partition: int(tp.offset) for tp in result.topic_partitions if tp.offset >= 0}

    def owners(self, group: str) -> dict[tuple[str, int], Owner]:
        """`{(topic, partition): member}` of the group's current assignment."""
        return self._describe([group]).get(group, ("", {}))[1]

    def _describe(
        self, groups: Sequence[str]
    ) -> dict[str, tuple[str, dict[tuple[str, int], Owner]]]:
        if not groups:
            return {}
        futures = self._admin.describe_consumer_groups(list(groups), request_timeout=self.timeout)
        described = {}
        for group, future in futures.items():
            description = admin_result(future, f"describe group {group}", self.timeout)
            owners = {}
            for member in description.members:
                owner = Owner(member.member_id, member.host, member.client_id)
                for tp in member.assignment.topic_partitions if member.assignment else ():
                    owners[(tp.topic, tp.partition)] = owner
            state = getattr(description.state, "name", str(description.state))
            described[group] = (str(state), owners)
        return described


class IsolatedOffsetsReader:
    """An OffsetsReader in a child process, for long-running processes such as the worker.

    librdkafka 2.16's admin requests to a group coordinator can abort the process that made
    them (`rd_kafka_enq_once_del_source_return: Assertion 'eonce->refcnt > 0'`,
    confluentinc/librdkafka#4605) when they time out while a broker fails over: in the
    worker that was a SIGABRT in the middle of its cycle. Here such a crash costs one reading:
    the child is started again on the next call. Same methods as OffsetsReader.
    """

    def __init__(self, client_config: Mapping[str, Any], timeout: float = 10.0) -> None:
        _require_bootstrap(client_config)
        self.timeout = timeout
        self._config = dict(client_config)
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # fork and librdkafka do not mix
        self._process: Any = None
        self._conn: Any = None

    def read(self, targets: Sequence[LagTarget]) -> list[GroupReading]:
        """As OffsetsReader.read, asked of the child process."""
        return self._call("read", list(targets))  # type: ignore[no-any-return]

    def owners(self, group: str) -> dict[tuple[str, int], Owner]:
        """As OffsetsReader.owners, asked of the child process."""
        return self._call("owners", group)  # type: ignore[no-any-return]

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._start()
            try:
                self._conn.send((method, args))
                if not self._conn.poll(self.timeout * 3 + 30):
                    self._stop()
                    raise AdminError(f"offsets reader: no answer to {method} in time")
                answer = self._conn.recv()
            except (EOFError, OSError) as exc:
                code = self._process.exitcode if self._process is not None else None
                self._stop()
                raise AdminError(f"offsets reader process ended (exit {code}): {exc}") from None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _start(self) -> None:
        self._stop()
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_serve, args=(child, self._config, self.timeout), daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
            self._process = None

    def close(self) -> None:
        """Stop the child process."""
        with self._lock:
            self._stop()


def _serve(conn: Any, config: Mapping[str, Any], timeout: float) -> None:
    """The child: answer OffsetsReader calls until the pipe closes."""
    reader = OffsetsReader(config, timeout)
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(getattr(reader, method)(*args))
        except Exception as exc:  # any failure is the caller's AdminError, never the child's end
            conn.send(AdminError(f"{method}: {exc}"))
