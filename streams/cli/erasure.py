"""Erasing an entity's data: `kes erase <app> <aggregate> <entity-id>...`, or `erase` in code.

Erasure is a command (`kes.v1.EraseEntity`) that the worker owning the entity decides in its own
transaction, in order with the entity's other commands, so no event of it can slip in after
its tombstones and no cached copy of its key or snapshot outlives it (kes.streams.cycle.batch
`_erase` writes what it does: event tombstones, EntityErased, the key and snapshot markers). Its
command id is the same every time (`ERASE_COMMAND_ID`), so running it again after a timeout, a
killed process or a lost reply is a retry: a worker killed mid-erasure aborted its transaction
(nothing of it is visible) and its successor decides the command again; an erasure that committed is
answered again as accepted. What erasure cannot reach is in docs/security.md.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from kes.schemas.kes.v1.envelopes_pb2 import Reply
from kes.schemas.kes.v1.personal_pb2 import EraseEntity
from kes.streams.cli.cliargs import add_cluster_args, settings_from
from kes.streams.client.client import CommandClient
from kes.streams.config.apps import behavior_named

__all__ = ["ERASE_COMMAND_ID", "Erasure", "cmd_erase", "erase", "register"]

ERASE_COMMAND_ID = "kes-erase"
"""The command id of every erasure: a second erasure of an entity is a retry of the first."""


@dataclass(frozen=True)
class Erasure:
    """What became of one entity's erasure."""

    entity_id: str
    erased: bool
    """True once the entity is erased (now, or by an earlier run)."""
    revision: int
    """The revision of its EntityErased event (0 when nothing was erased)."""
    detail: str = ""
    """Why it was not erased."""


def erase(client: CommandClient, entity_id: str, timeout: float = 30.0) -> Erasure:
    """Erase one entity through `client` (a client of its aggregate) and wait for the worker.

    Raises CommandTimeoutError when no worker answers in time: call it again (it is a retry).
    """
    reply: Reply = client.ask(entity_id, EraseEntity(), timeout, command_id=ERASE_COMMAND_ID)
    if reply.WhichOneof("outcome") == "accepted":
        return Erasure(entity_id, True, reply.accepted.revision)
    return Erasure(entity_id, False, 0, reply.rejected.message)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `erase` sub-command to the `kes` parser."""
    parser = sub.add_parser(
        "erase",
        help="erase entities: their data key, events and snapshot (personal data, GDPR)",
        description="Send each entity an erase command and wait for its worker: the entity's "
        "data key is replaced by a marker on <aggregate>.keys (sealed personal fields become "
        "unreadable everywhere at once), each of its events gets a tombstone, its snapshot is "
        "replaced by an erasure marker, and an EntityErased event tells projections to drop "
        "its rows. Later commands to it are rejected ERASED. Running it again is safe: it "
        "completes an interrupted erasure and confirms a finished one. Compaction removes the "
        "records themselves; see docs/security.md for what erasure cannot reach.",
    )
    parser.add_argument(
        "app", metavar="APP-MODULE", help="module with a BEHAVIORS list, e.g. kes.examples.bank"
    )
    parser.add_argument("aggregate", metavar="AGGREGATE", help="the aggregate, e.g. account")
    parser.add_argument("entity_ids", nargs="+", metavar="ENTITY-ID", help="entities to erase")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait per entity (default 30)"
    )
    add_cluster_args(parser)
    parser.set_defaults(handler=cmd_erase)


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase each entity; print one line each; 1 when any was not erased."""
    settings = settings_from(args)
    behavior = behavior_named(args.app, args.aggregate)
    topics = settings.topics(behavior.name)
    code = 0
    with CommandClient(
        topics, settings.bootstrap_servers, settings.client_config, aggregate=behavior.name
    ) as client:
        for entity_id in args.entity_ids:
            done = erase(client, entity_id, args.timeout)
            if done.erased:
                print(f"{entity_id}: erased (EntityErased at revision {done.revision})")
            else:
                print(f"{entity_id}: not erased: {done.detail}")
                code = 1
    return code
