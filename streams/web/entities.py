"""`GET /entities/<aggregate>/<id>`: an entity's current state, from whichever worker is asked.

The entity lives on partition `murmur2(id) % partitions` of its aggregate; the worker that owns
that commands partition holds its latest committed snapshot. A worker that does not own it looks
the owner up in the group's assignment (each worker's consumer names itself by its web URL, its
client id) and forwards the request there, once: a forwarded request that
arrives at a non-owner (the partitions moved meanwhile) is answered 503, never forwarded again.
Workers must therefore reach each other at their `--web-host`/`--web-port` address.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from google.protobuf import json_format
from google.protobuf.message import Message

from kes.schemas.codec import decode_snapshot, type_name, unpack
from kes.schemas.errors import KesError
from kes.schemas.kes.v1.envelopes_pb2 import Snapshot
from kes.streams.core.behavior import Behavior
from kes.streams.operations.groupoffsets import IsolatedOffsetsReader, OffsetsReader
from kes.topology.partitioning import partition_for

if TYPE_CHECKING:
    from kes.streams.runtime.worker import Worker

__all__ = ["FORWARDED_HEADER", "entity_json", "entity_response", "partition_owners"]

FORWARDED_HEADER = "X-Kes-Forwarded-By"
"""Set on a request one worker forwards to another; its value is the forwarding worker's URL."""


def entity_json(
    aggregate: str, entity_id: str, snapshot: Snapshot, behavior: Behavior[Any] | None = None
) -> dict[str, Any]:
    """The JSON body for an entity: its revision and its state as protobuf JSON (migrated to
    the behavior's state version when given)."""
    state: Message = (
        unpack(snapshot.state)
        if behavior is None
        else behavior.load_state(snapshot.state, snapshot.state_version, entity_id)
    )
    return {
        "aggregate": aggregate,
        "entity_id": entity_id,
        "revision": snapshot.revision,
        "state_type": type_name(state),
        "state": json_format.MessageToDict(state, preserving_proto_field_name=True),
    }


def partition_owners(
    reader: OffsetsReader | IsolatedOffsetsReader, group: str
) -> dict[tuple[str, int], str]:
    """`{(topic, partition): worker URL}` for every partition of the group's assignment.

    Blocking (an admin request): call it from a thread in async code.
    """
    return {
        where: owner.client_id
        for where, owner in reader.owners(group).items()
        if owner.client_id.startswith("http")
    }


async def entity_response(
    worker: Worker,
    reader: OffsetsReader | IsolatedOffsetsReader,
    web: Any,
    request: Any,
    aggregate: str,
    entity_id: str,
) -> Any:
    """Answer from the local snapshot store when this worker owns the entity, else forward."""
    me = worker.settings.advertised_url
    topics = worker.topics.get(aggregate)
    if topics is None:
        known = ", ".join(sorted(worker.topics))
        return _error(web, 404, f"no aggregate {aggregate!r}; this worker has: {known}", me)
    partition = partition_for(entity_id, topics.partitions)
    where = {"partition": partition, "served_by": me}
    for tp, task in list(worker.processors.items()):
        if tp.topic != topics.commands or tp.partition != partition:
            continue
        if not task.done() or task.cancelled() or task.exception() is not None:
            return _error(web, 503, f"partition {partition} is recovering; retry shortly", me)
        raw = task.result().store.get(entity_id)
        if raw is None:
            return web.json(
                {"aggregate": aggregate, "entity_id": entity_id, "revision": 0, **where,
                 "error": "no such entity (it has no events)"},
                status=404,
            )  # fmt: skip
        try:
            behavior = task.result().step.behavior
            body = entity_json(aggregate, entity_id, decode_snapshot(raw), behavior)
        except KesError as exc:
            return _error(web, 500, f"snapshot of {entity_id!r} does not decode: {exc}", me)
        return web.json({**body, **where})
    if request.headers.get(FORWARDED_HEADER):
        return _error(web, 503, f"partition {partition} is moving between workers; retry", me)
    owners = await asyncio.to_thread(partition_owners, reader, worker.settings.group_id)
    owner = owners.get((topics.commands, partition))
    if owner is None or owner.rstrip("/") == me.rstrip("/"):
        return _error(web, 503, f"partition {partition} has no ready owner yet; retry", me)
    return await _forward(worker, web, owner, aggregate, entity_id, me)


async def _forward(
    worker: Worker, web: Any, owner: str, aggregate: str, entity_id: str, me: str
) -> Any:
    import aiohttp  # the worker's web server has it loaded; nothing else here needs it

    url = f"{owner.rstrip('/')}/entities/{quote(aggregate, safe='')}/{quote(entity_id, safe='')}"
    try:
        async with worker.app.http_client.get(
            url, headers={FORWARDED_HEADER: me}, timeout=aiohttp.ClientTimeout(total=10)
        ) as response:
            text = await response.text()
            return web.text(text, content_type=response.content_type, status=response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _error(web, 502, f"the owner {owner} did not answer: {exc}", me)


def _error(web: Any, status: int, message: str, me: str) -> Any:
    return web.json({"error": message, "served_by": me}, status=status)
