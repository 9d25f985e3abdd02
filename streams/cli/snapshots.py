"""`kes snapshots rebuild`: refold an aggregate's snapshots from its events, on purpose.

For when the snapshots are wrong but the events are right: an `evolve` bug fixed in a new
release, a changelog restored from an old backup. Workers rebuild a partition on their own when
its changelog is behind the group's offset (kes.streams.runtime.rebuild); this does every partition
(or one) when nothing looks wrong to them. The workers must be stopped: a running worker keeps
writing snapshots that a rebuild would then overwrite with older ones.
"""

from __future__ import annotations

import argparse
import time

from confluent_kafka import Consumer, TopicPartition

from kes.schemas.errors import DurableStateError, KesError, SchemaVersionError
from kes.stores.snapshots import MemorySnapshotStore
from kes.streams.cli.cliargs import add_cluster_args, settings_from
from kes.streams.config.apps import behavior_named, event_adapters
from kes.streams.config.durablestate import refuse_fold
from kes.streams.cycle.idempotency import OutcomePolicy
from kes.streams.kafka.config import confluent_config
from kes.streams.kafka.keyreader import keyring_for
from kes.streams.operations.groupoffsets import OffsetsReader
from kes.streams.runtime.rebuild import rebuild_partition

__all__ = ["cmd_snapshots_rebuild", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `snapshots rebuild` to the `kes` parser."""
    parser = sub.add_parser("snapshots", help="snapshot changelog maintenance")
    actions = parser.add_subparsers(dest="snapshots_action", required=True)
    rebuild = actions.add_parser(
        "rebuild",
        help="refold snapshots from the events (workers stopped)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rebuild.add_argument(
        "app", metavar="APP-MODULE", help="module with a BEHAVIORS list, e.g. kes.examples.bank"
    )
    rebuild.add_argument("aggregate", metavar="AGGREGATE", help="the aggregate, e.g. account")
    rebuild.add_argument("--partition", type=int, help="only this partition (default: all)")
    rebuild.add_argument("--app-id", help="the workers' app id (default: kes, $KES_APP_ID)")
    rebuild.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the group to empty (a stopped worker stays a member for its "
        "session timeout; default 30)",
    )
    add_cluster_args(rebuild)
    rebuild.set_defaults(handler=cmd_snapshots_rebuild)


def cmd_snapshots_rebuild(args: argparse.Namespace) -> int:
    """Rebuild; 0 when done, 1 when refused (workers running, a damaged log), 78 when the log
    holds an event newer than this code (as a worker refusing the same fold exits)."""
    settings = settings_from(args, app_id=args.app_id)
    behavior = behavior_named(args.app, args.aggregate)
    try:
        refuse_fold(behavior, "`kes snapshots rebuild`")
    except DurableStateError as exc:
        print(f"refused: {exc}")
        return 1
    topics = settings.topics(behavior.name)
    config = confluent_config(settings)
    group = settings.group_id
    reader_of_group = OffsetsReader(config, timeout=30)
    deadline = time.monotonic() + args.wait
    while owners := reader_of_group.owners(group):  # a stopped static member stays a session
        if time.monotonic() >= deadline:
            members = len(set(owners.values()))
            print(f"refused: group {group!r} has {members} member(s): stop the workers first")
            return 1
        time.sleep(1)
    partitions = range(topics.partitions) if args.partition is None else [args.partition]
    reader = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        asked = [TopicPartition(topics.commands, p) for p in partitions]
        committed = {tp.partition: tp.offset for tp in reader.committed(asked, timeout=30)}
    finally:
        reader.close()
    scratch = MemorySnapshotStore()
    policy = OutcomePolicy(settings.outcome_horizon_s * 1000, settings.max_outcomes)
    for partition in partitions:
        try:
            checkpoint = rebuild_partition(
                behavior,
                topics,
                partition,
                scratch.partition(topics.snapshots, partition),
                max(committed[partition], 0),
                group=group,
                client_config=config,
                adapters=event_adapters(args.app),
                recent_command_ids=settings.recent_command_ids,
                outcomes=policy,
                keys=keyring_for(topics, config, settings.master()),
            )
        except SchemaVersionError as exc:  # nothing of this partition was written
            print(f"refused: {exc}")
            return 78
        except KesError as exc:
            print(f"refused: {exc}")
            return 1
        print(
            f"{topics.snapshots}[{partition}]: rebuilt from the events; next command offset "
            f"{checkpoint.next_command_offset}"
        )
    return 0
