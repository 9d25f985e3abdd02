"""Command clients: put commands on an aggregate's commands topic and, if asked, await the reply.

A command goes to partition `partition_for(entity_id)` of `<aggregate>.commands`, keyed by the
entity id, from an idempotent producer with `acks=all`; `send` returns once the broker has it.
`ask` also sets `reply_wanted` and waits for the worker's `Reply` on `<aggregate>.replies`.

Every client reads replies through one shared consumer thread (no consumer group: it assigns
every partition of the replies topic at the end offsets taken before its first `ask`, and reads
committed records only), and hands each reply to the waiter of its command id. So one client
serves thousands of concurrent asks with one consumer, and no reply to its commands is missed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from confluent_kafka import Producer
from google.protobuf.message import Message

from kes.schemas.codec import (
    PROTOBUF,
    REPLY_PARTITION_HEADER,
    encode_command,
    new_command,
    unpack_as,
)
from kes.schemas.errors import (
    CommandTimeoutError,
    ConfigurationError,
    KesError,
)
from kes.schemas.kes.v1.envelopes_pb2 import CommandEnvelope, Reply
from kes.streams.client.replies import ReplyRouter
from kes.streams.telemetry.tracing import producer_headers
from kes.topology.layout import AggregateTopics
from kes.topology.partitioning import MURMUR2_PARTITIONER, partition_for

__all__ = ["AsyncCommandClient", "CommandClient", "outcome", "state_of"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

_PRODUCER_DEFAULTS: dict[str, object] = {"linger.ms": 1, "message.timeout.ms": 30_000}
"""Overridable through `client_config`."""
_PRODUCER_ENFORCED: dict[str, object] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": MURMUR2_PARTITIONER,
}
"""Not overridable: per-entity order and agreement with `partition_for` depend on them."""
_CLOSE_TIMEOUT = 30.0

_Delivered = Callable[[KesError | None], None]


def outcome(reply: Reply) -> str:
    """`"accepted"` or `"rejected"`: which outcome a reply carries (`""` if none)."""
    return reply.WhichOneof("outcome") or ""


def state_of(reply: Reply, state_type: type[M]) -> M | None:
    """The entity's state after an accepted command, as `state_type`; None if not accepted."""
    if reply.WhichOneof("outcome") != "accepted" or not reply.accepted.HasField("state"):
        return None
    return unpack_as(reply.accepted.state, state_type)


class _Core:
    """What both clients share: the producer and its poll thread, and the lazy reply router."""

    def __init__(
        self,
        topics: AggregateTopics,
        bootstrap_servers: str,
        client_config: Mapping[str, str] | None,
        aggregate: str | None,
        reply_partition: int | None = None,
    ) -> None:
        if reply_partition is not None and not 0 <= reply_partition < topics.partitions:
            raise ConfigurationError(
                f"reply_partition {reply_partition} is not a partition of {topics.replies}"
            )
        self.topics = topics
        self.aggregate = aggregate if aggregate is not None else topics.name
        self._span_name = f"send {self.aggregate}"
        self._config: dict[str, object] = {
            **(client_config or {}),
            "bootstrap.servers": bootstrap_servers,
        }
        self._producer = Producer({**_PRODUCER_DEFAULTS, **self._config, **_PRODUCER_ENFORCED})
        self._router: ReplyRouter | None = None
        self.reply_partition = (
            random.randrange(topics.partitions) if reply_partition is None else reply_partition
        )
        """The replies partition this client reads: its commands ask for their replies there
        (random by default, so clients spread over the partitions)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._poller = threading.Thread(
            target=self._poll, name=f"kes-producer-{topics.name}", daemon=True
        )
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def envelope(
        self,
        entity_id: str,
        command_msg: Message,
        reply_wanted: bool,
        command_id: str | None,
        expected_revision: int | None,
        correlation_id: str | None,
        metadata: Mapping[str, str] | None,
    ) -> CommandEnvelope:
        if not entity_id:
            raise ConfigurationError("a command needs a non-empty entity id")
        return new_command(
            entity_id,
            command_msg,
            aggregate=self.aggregate,
            command_id=command_id,
            expected_revision=expected_revision,
            reply_wanted=reply_wanted,
            correlation_id=correlation_id,
            metadata=metadata,
        )

    def produce(self, env: CommandEnvelope, content_type: str, delivered: _Delivered) -> None:
        """Queue the command for its entity's partition; raises BufferError when the queue is full.

        `delivered` runs on the poll thread with None once the broker acknowledged, else an error.
        """
        if self._closed:
            raise KesError("the command client is closed")
        topic = self.topics.commands
        partition = partition_for(env.entity_id, self.topics.partitions)
        value, content_headers = encode_command(env, content_type)
        headers: list[tuple[str, str | bytes | None]] = list(content_headers)
        if env.reply_wanted:
            headers.append((REPLY_PARTITION_HEADER, str(self.reply_partition).encode()))
        span, trace_headers = producer_headers(self._span_name)
        headers.extend(trace_headers)

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                delivered(None)
            else:
                delivered(
                    KesError(
                        f"command {env.command_id} was not delivered to {topic}[{partition}]: "
                        f"{err.str()}"
                    )
                )

        try:
            self._producer.produce(
                topic,
                value,
                env.entity_id.encode(),
                partition=partition,
                headers=headers,
                on_delivery=on_delivery,
            )
        finally:
            span.end()

    def router(self) -> ReplyRouter:
        """The reply router, started on first use (blocks while it reads the end offsets)."""
        with self._lock:
            if self._closed:
                raise KesError("the command client is closed")
            if self._router is None:
                self._router = ReplyRouter(self.topics, self._config, self.reply_partition)
            return self._router

    def close(self) -> None:
        """Deliver what is queued (up to 30 s), then stop both threads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            router, self._router = self._router, None
        left = self._producer.flush(_CLOSE_TIMEOUT)
        self._stop.set()
        self._poller.join()
        if router is not None:
            router.close()
        if left:
            log.warning(
                "%d command(s) to %s were not delivered before close", left, self.topics.commands
            )


class CommandClient:
    """Send commands to one aggregate and wait for replies; thread-safe, blocking.

    `aggregate` is the behavior name written into each envelope; it defaults to `topics.name`
    and must be given when topic names carry a prefix. `reply_partition` picks the one replies
    partition this client reads (default: a random one). Use as a context manager, or `close()`.
    """

    def __init__(
        self,
        topics: AggregateTopics,
        bootstrap_servers: str,
        client_config: Mapping[str, str] | None = None,
        *,
        aggregate: str | None = None,
        reply_partition: int | None = None,
    ) -> None:
        self._core = _Core(topics, bootstrap_servers, client_config, aggregate, reply_partition)

    @property
    def topics(self) -> AggregateTopics:
        """The aggregate's topics this client writes to and reads replies from."""
        return self._core.topics

    @property
    def reply_partition(self) -> int:
        """The one replies partition this client reads (its commands ask for replies there)."""
        return self._core.reply_partition

    def send(
        self,
        entity_id: str,
        command_msg: Message,
        *,
        command_id: str | None = None,
        expected_revision: int | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str = PROTOBUF,
    ) -> str:
        """Send a command without waiting for its outcome; returns its id once the broker has it."""
        env = self._core.envelope(
            entity_id, command_msg, False, command_id, expected_revision, correlation_id, metadata
        )
        self._deliver(env, content_type, None)
        return env.command_id

    def ask(
        self,
        entity_id: str,
        command_msg: Message,
        timeout: float = 10.0,
        *,
        command_id: str | None = None,
        expected_revision: int | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str = PROTOBUF,
    ) -> Reply:
        """Send a command and return the worker's reply (accepted or rejected).

        Raises CommandTimeoutError when no reply arrives within `timeout` seconds (sending
        included); the command may still apply later, and re-asking with its id is safe.
        """
        deadline = time.monotonic() + timeout
        env = self._core.envelope(
            entity_id, command_msg, True, command_id, expected_revision, correlation_id, metadata
        )
        router = self._core.router()
        replied: concurrent.futures.Future[Reply] = concurrent.futures.Future()

        def on_reply(result: Reply | KesError) -> None:
            _settle(replied, result)

        router.expect(env.command_id, on_reply)
        try:
            self._deliver(env, content_type, deadline)
            return replied.result(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise CommandTimeoutError(env.command_id, entity_id, timeout) from None
        finally:
            router.forget(env.command_id, on_reply)

    def _deliver(self, env: CommandEnvelope, content_type: str, deadline: float | None) -> None:
        acked: concurrent.futures.Future[None] = concurrent.futures.Future()
        while True:
            try:
                self._core.produce(env, content_type, lambda err: _settle(acked, err))
                break
            except BufferError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError from None
                time.sleep(0.01)
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        acked.result(wait)

    def close(self) -> None:
        """Deliver queued commands, stop reading replies, fail asks still waiting. Idempotent."""
        self._core.close()

    def __enter__(self) -> CommandClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncCommandClient:
    """The asyncio flavour of `CommandClient`: same arguments and wire behaviour, never blocks.

    Delivery reports and replies arrive on the client's threads and are handed to the loop with
    `call_soon_threadsafe`. Use with `async with`, or `await close()`.
    """

    def __init__(
        self,
        topics: AggregateTopics,
        bootstrap_servers: str,
        client_config: Mapping[str, str] | None = None,
        *,
        aggregate: str | None = None,
        reply_partition: int | None = None,
    ) -> None:
        self._core = _Core(topics, bootstrap_servers, client_config, aggregate, reply_partition)

    @property
    def topics(self) -> AggregateTopics:
        """The aggregate's topics this client writes to and reads replies from."""
        return self._core.topics

    @property
    def reply_partition(self) -> int:
        """The one replies partition this client reads (its commands ask for replies there)."""
        return self._core.reply_partition

    async def send(
        self,
        entity_id: str,
        command_msg: Message,
        *,
        command_id: str | None = None,
        expected_revision: int | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str = PROTOBUF,
    ) -> str:
        """Send a command without waiting for its outcome; returns its id once the broker has it."""
        env = self._core.envelope(
            entity_id, command_msg, False, command_id, expected_revision, correlation_id, metadata
        )
        await self._deliver(env, content_type)
        return env.command_id

    async def ask(
        self,
        entity_id: str,
        command_msg: Message,
        timeout: float = 10.0,
        *,
        command_id: str | None = None,
        expected_revision: int | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str = PROTOBUF,
    ) -> Reply:
        """Send a command and return the worker's reply; CommandTimeoutError after `timeout` s."""
        env = self._core.envelope(
            entity_id, command_msg, True, command_id, expected_revision, correlation_id, metadata
        )
        loop = asyncio.get_running_loop()
        replied: asyncio.Future[Reply] = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                router = await self._router()

                def on_reply(result: Reply | KesError) -> None:
                    _settle_threadsafe(loop, replied, result)

                router.expect(env.command_id, on_reply)
                try:
                    await self._deliver(env, content_type)
                    return await replied
                finally:
                    router.forget(env.command_id, on_reply)
        except TimeoutError:
            raise CommandTimeoutError(env.command_id, entity_id, timeout) from None

    async def _router(self) -> ReplyRouter:
        router = self._core._router
        if router is not None:
            return router
        return await asyncio.to_thread(self._core.router)

    async def _deliver(self, env: CommandEnvelope, content_type: str) -> None:
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()
        while True:
            try:
                self._core.produce(
                    env, content_type, lambda err: _settle_threadsafe(loop, acked, err)
                )
                break
            except BufferError:
                await asyncio.sleep(0.01)
        await acked

    async def close(self) -> None:
        """Deliver queued commands, stop reading replies, fail asks still waiting. Idempotent."""
        await asyncio.to_thread(self._core.close)

    async def __aenter__(self) -> AsyncCommandClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


T = TypeVar("T")


def _settle(future: concurrent.futures.Future[T], result: object) -> None:
    """Resolve a thread future with a result, or fail it with a KesError; once only."""
    if future.done():
        return
    try:
        if isinstance(result, KesError):
            future.set_exception(result)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except concurrent.futures.InvalidStateError:
        pass


def _settle_async(future: asyncio.Future[T], result: object) -> None:
    if future.done():
        return
    if isinstance(result, KesError):
        future.set_exception(result)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def _settle_threadsafe(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], result: object
) -> None:
    """From a client thread: resolve an asyncio future on its loop (ignored if the loop closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle_async, future, result)
