"""`kes dlq list|show|redrive`: read, explain and redrive an aggregate's (or a projection's)
dead letters. See kes.streams.operations.deadletters."""

from __future__ import annotations

import argparse
import json

from kes.schemas.errors import KesError
from kes.streams.cli.cliargs import add_cluster_args, settings_from
from kes.streams.config.apps import behavior_named
from kes.streams.config.settings import Settings
from kes.streams.kafka.config import confluent_config
from kes.streams.operations.deadletters import explain, read_dead_letters, redrive, select

__all__ = ["cmd_dlq", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq` and its actions to the `kes` parser."""
    parser = sub.add_parser("dlq", help="read, explain and redrive dead letters")
    actions = parser.add_subparsers(dest="dlq_action", required=True)
    for name, text in (
        ("list", "one line per dead letter: where, when, why, from where"),
        ("show", "one dead letter in full, its command decoded (JSON)"),
        ("redrive", "put dead-lettered commands back on their partition, unchanged"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument(
            "app", metavar="APP-MODULE", help="module with a BEHAVIORS list, e.g. kes.examples.bank"
        )
        action.add_argument("aggregate", metavar="AGGREGATE", help="the aggregate, e.g. account")
        action.add_argument(
            "--projection", help="a projection's dead letters instead (list and show)"
        )
        action.add_argument(
            "--reason", help="only dead letters with this reason, e.g. UNKNOWN_TYPE"
        )
        if name == "show":
            action.add_argument("at", metavar="PARTITION@OFFSET", help="as `list` prints it")
        if name == "redrive":
            action.add_argument(
                "--at", nargs="*", default=[], metavar="PARTITION@OFFSET", help="only these"
            )
            action.add_argument(
                "--dry-run", action="store_true", help="say what would be redriven, write nothing"
            )
        add_cluster_args(action)
        action.set_defaults(handler=cmd_dlq)


def _topic(args: argparse.Namespace, settings: Settings) -> str:
    if args.projection:
        return f"{settings.topic_prefix}{args.projection}.dlq"
    return settings.topics(behavior_named(args.app, args.aggregate).name).dlq


def cmd_dlq(args: argparse.Namespace) -> int:
    """Run one `kes dlq` action; 1 when the topic or the named dead letter is missing."""
    settings = settings_from(args)
    config = confluent_config(settings)
    try:
        records = read_dead_letters(_topic(args, settings), config)
        if args.dlq_action == "list":
            chosen = select(records, reason=args.reason)
            for record in chosen:
                print(record.line())
            print(f"{len(chosen)} dead letter(s)")
            return 0
        if args.dlq_action == "show":
            found = select(records, at=[args.at])
            if not found:
                print(f"no dead letter at {args.at}")
                return 1
            print(json.dumps(explain(found[0]), indent=2))
            return 0
        if args.projection:
            print("refused: a projection's dead letters are events; rebuild the projection")
            return 1
        chosen = select(records, at=args.at, reason=args.reason)
        for line in redrive(chosen, config, dry_run=args.dry_run):
            print(line)
        return 0
    except KesError as exc:
        print(f"error: {exc}")
        return 1
