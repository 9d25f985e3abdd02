"""`kes topics migrate APP AGGREGATE --partitions N --to-prefix NEW`: grow (or shrink) an
aggregate's partition count by moving it to a new topic set; see kes.streams.operations.migrator."""

from __future__ import annotations

import argparse
from dataclasses import replace

from kes.streams.cli.cliargs import settings_from
from kes.streams.config.apps import behavior_named
from kes.streams.config.durablestate import layout_of
from kes.streams.kafka.config import confluent_config
from kes.streams.operations.migrator import Migration, migrate
from kes.topology.admin import plan, replication_for
from kes.topology.layout import AggregateTopics

__all__ = ["add_arguments", "cmd_migrate", "cutover"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `kes topics migrate` adds to the `topics` parser (which already has
    --partitions, the new count here, and --topic-prefix, the old set's prefix)."""
    parser.add_argument("aggregate", nargs="?", help="migrate: the aggregate to move, e.g. account")
    parser.add_argument(
        "--to-prefix", help="migrate: prefix of the new topic set (must differ from the old one)"
    )
    parser.add_argument(
        "--app-id",
        help="migrate: the workers' app id on the new set (default: the one the old set's "
        "checkpoints name)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="migrate: seconds to wait for the old workers' group to empty (default 30)",
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    """Migrate one aggregate; print what was moved and how to cut over. 0 when done."""
    if not args.aggregate or args.to_prefix is None or not args.partitions:
        print("usage: kes topics migrate APP AGGREGATE --partitions N --to-prefix NEW-PREFIX")
        return 2
    settings = settings_from(
        args,
        replication_factor=args.replication_factor,
        min_insync_replicas=args.min_insync_replicas,
    )
    config = confluent_config(settings)
    if not settings.replication_factor:
        settings = replace(settings, replication_factor=replication_for(config))
    behavior = behavior_named(args.app, args.aggregate)
    layout = layout_of(settings, behavior)
    target = replace(layout, prefix=args.to_prefix)
    found = plan(replace(layout, partitions=1), config)
    old = next((c.actual.partitions for c in found.checks if c.actual is not None), 0)
    source = replace(layout, partitions=old or layout.partitions)
    print(
        f"migrating {source.prefix}{source.name}.* ({source.partitions} partitions) to "
        f"{target.prefix}{target.name}.* ({target.partitions} partitions)",
        flush=True,
    )
    report = migrate(
        Migration(source, target, owner=args.app_id or "", wait=args.wait),
        config,
        progress=lambda line: print(f"  {line}", flush=True),
    )
    print(report.summary())
    print(cutover(args.app, source, target, report.owner or args.app_id or "<app id>"))
    return 0


def cutover(app: str, source: AggregateTopics, target: AggregateTopics, owner: str) -> str:
    """What to do once the new set is written: workers, producers, projections, the old set."""
    new = f"KES_TOPIC_PREFIX={target.prefix} KES_PARTITIONS={target.partitions}"
    old = f"--topic-prefix '{source.prefix}' --partitions {source.partitions}"
    return "\n".join(
        [
            "cut over (the old set is left as it was):",
            f"  1. workers on the new set, same app id (and master key, with personal data): "
            f"{new} kes worker {app} --app-id {owner}",
            f"  2. producers and clients: {new} (murmur2 over {target.partitions} partitions); "
            "resume sending. A retry of a command sent before the migration is answered its "
            "original outcome",
            f"  3. check: {new} kes verify {app} {target.name}",
            f"  4. projections read {target.events} from now on: rebuild read models there "
            f"({new} kes projection rebuild {app} NAME); start a reactor's group at that topic's "
            "end (kafka-consumer-groups --reset-offsets --to-latest) unless it deduplicates with "
            "kes.streams.projections.dedup.once",
            f"  5. the old set is no longer written: keep it as an archive (its dead letters: "
            f"kes dlq list {app} {source.name} {old}) or delete it",
        ]
    )
