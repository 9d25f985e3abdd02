"""Replies to waiting clients: one consumer thread per client, replies routed by command id.

Each client reads one partition of `<aggregate>.replies`, its own choice: its commands carry it
in the `kes-reply-partition` header and the worker writes their replies there, so what a client
reads does not grow with the number of partitions, and clients spread over the partitions.
The router assigns that partition (no consumer group) at the end offset it reads on start,
before the client sends any command that wants a reply, so a reply to such a command always
lies at or after where it starts reading. It reads committed records only (the worker writes
replies inside its transactions) and hands each reply to every callback registered for its
command id (two concurrent asks of one id both get it); other replies are dropped by key,
undecoded. Errors reading are retried with a growing pause (up to 5 s).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from kes.schemas.codec import decode_reply
from kes.schemas.errors import DecodeError, KesError
from kes.schemas.kes.v1.envelopes_pb2 import Reply
from kes.streams.kafka.watermarks import watermarks
from kes.topology.layout import AggregateTopics

__all__ = ["ReplyCallback", "ReplyRouter"]

log = logging.getLogger(__name__)

ReplyCallback = Callable[[Reply | KesError], None]
"""Called on the router's thread with the reply, or with a KesError when the router closes."""

_METADATA_TIMEOUT = 30.0
_BATCH = 500


class ReplyRouter:
    """One consumer thread that hands each reply to whoever waits for its command id.

    Construction blocks while it reads the end offsets; raises TopologyError if the replies
    topic is missing or has fewer partitions than declared.
    """

    def __init__(
        self, topics: AggregateTopics, config: Mapping[str, object], partition: int | None = None
    ) -> None:
        self._topic = topics.replies
        self._pending: dict[bytes, list[ReplyCallback]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                **config,
                "group.id": f"kes-client-{uuid.uuid4().hex}",  # required; never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
            }
        )
        try:
            ends = self._end_offsets(topics.partitions)
            assigned = [tp for tp in ends if partition in (None, tp.partition)]
            self._consumer.assign(assigned)
            self.partitions = [tp.partition for tp in assigned]
            """The replies partitions this router reads."""
        except BaseException:
            self._consumer.close()
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"kes-replies-{topics.name}", daemon=True
        )
        self._thread.start()

    def _end_offsets(self, partitions: int) -> list[TopicPartition]:
        """Where each partition ends now: a reply to a command sent later lies at or after it."""
        ends = watermarks(self._consumer, self._topic, partitions, _METADATA_TIMEOUT)
        return [TopicPartition(self._topic, p, high) for p, (_, high) in ends.items()]

    def expect(self, command_id: str, on_reply: ReplyCallback) -> None:
        """Call `on_reply` (on the consumer thread) when the reply to `command_id` arrives."""
        with self._lock:
            if self._stop.is_set():
                raise KesError("the command client is closed")
            self._pending.setdefault(command_id.encode(), []).append(on_reply)

    def forget(self, command_id: str, on_reply: ReplyCallback | None = None) -> None:
        """Stop waiting for `command_id` (after a reply or a timeout): `on_reply` only, if given."""
        key = command_id.encode()
        with self._lock:
            waiting = self._pending.get(key)
            if waiting is None:
                return
            if on_reply is not None and on_reply in waiting:
                waiting.remove(on_reply)
            if on_reply is None or not waiting:
                del self._pending[key]

    def _run(self) -> None:
        pause = 0.0
        while not self._stop.is_set():
            try:
                # Wait only while nothing has arrived, then take what else is there: a
                # consume(N, 0.1) would hold every reply back until N arrive or 100 ms pass.
                first = self._consumer.poll(0.1)
                records = [] if first is None else [first, *self._consumer.consume(_BATCH, 0)]
                pause = 0.0
            except KafkaException as exc:  # broker trouble: keep trying, less and less often
                pause = min(5.0, max(0.1, pause * 2))
                log.warning("reading %s failed: %s; again in %.1fs", self._topic, exc, pause)
                self._stop.wait(pause)
                continue
            for record in records:
                if record.error():
                    log.debug("reading %s: %s", self._topic, record.error())
                    continue
                key = record.key()
                with self._lock:
                    if key not in self._pending:  # another client's reply: not even decoded
                        continue
                try:
                    reply = decode_reply(record.value())
                except DecodeError as exc:
                    log.warning(
                        "skipping %s[%s]@%s: %s",
                        self._topic,
                        record.partition(),
                        record.offset(),
                        exc,
                    )
                    continue
                with self._lock:
                    waiting = self._pending.pop(reply.command_id.encode(), [])
                for on_reply in waiting:
                    on_reply(reply)

    def close(self) -> None:
        """Stop the thread, close the consumer, and fail every ask still waiting."""
        with self._lock:
            self._stop.set()
            waiting = [callback for each in self._pending.values() for callback in each]
            self._pending.clear()
        self._thread.join()
        self._consumer.close()
        for on_reply in waiting:
            on_reply(KesError("the command client was closed before the reply arrived"))
