"""Replies to waiting clients: one consumer thread per client, replies routed by command id.

The router reads `<aggregate>.replies` without a consumer group: it assigns every partition at
the end offsets it reads on start, before the client sends any command that wants a reply, so a
reply to such a command always lies at or after where it starts reading. It reads committed
records only (the worker writes replies inside its transactions) and hands each reply to the
callback registered for its command id; replies nobody waits for (other clients') are dropped.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.codec import decode_reply
from schemas.errors import DecodeError, KesError
from schemas.kes.v1.envelopes_pb2 import Reply
from streams.watermarks import watermarks
from topology.layout import AggregateTopics

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

    def __init__(self, topics: AggregateTopics, config: Mapping[str, object]) -> None:
        self._topic = topics.replies
        self._pending: dict[str, ReplyCallback] = {}
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
            self._consumer.assign(self._end_offsets(topics.partitions))
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
            self._pending[command_id] = on_reply

    def forget(self, command_id: str) -> None:
        """Stop waiting for `command_id` (after a reply or a timeout)."""
        with self._lock:
            self._pending.pop(command_id, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # Wait only while nothing has arrived, then take what else is there: a
                # consume(N, 0.1) would hold every reply back until N arrive or 100 ms pass.
                first = self._consumer.poll(0.1)
                records = [] if first is None else [first, *self._consumer.consume(_BATCH, 0)]
            except KafkaException as exc:  # pragma: no cover - broker trouble; keep trying
                log.warning("reading %s failed: %s", self._topic, exc)
                continue
            for record in records:
                if record.error():
                    log.debug("reading %s: %s", self._topic, record.error())
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
                    on_reply = self._pending.pop(reply.command_id, None)
                if on_reply is not None:
                    on_reply(reply)

    def close(self) -> None:
        """Stop the thread, close the consumer, and fail every ask still waiting."""
        with self._lock:
            self._stop.set()
            waiting = list(self._pending.values())
            self._pending.clear()
        self._thread.join()
        self._consumer.close()
        for on_reply in waiting:
            on_reply(KesError("the command client was closed before the reply arrived"))
