"""`kes skip-deleted`: go on without commands that retention deleted before they were applied.

A worker that finds such a gap stops with CommandsDeletedError (exit 78) rather than skip them
silently; one whose checkpoint is past the end of a recreated commands topic stops with
CommandsTruncatedError (exit 78). This records the operator's decision on the snapshot
changelog, where the partition's next owner reads it: its next command offset becomes the log
start.
"""

from __future__ import annotations

import argparse

from kes.schemas.errors import KesError
from kes.streams.cli.cliargs import add_cluster_args, settings_from
from kes.streams.config.apps import behavior_named
from kes.streams.runtime.gaps import skip_deleted

__all__ = ["cmd_skip_deleted", "register"]

_HELP = """\
Record that a commands partition goes on without the commands that the topic's retention
deleted before a worker applied them (the worker stopped with "were deleted by retention").
Writes one checkpoint record (next command offset = the partition's log start) to the
aggregate's snapshot changelog; restart the workers afterwards. Does nothing, and says so,
when nothing on the partition was deleted unapplied. The lost commands have no outcome: their
clients time out.

The same decision lets a partition go on from the start of a commands topic that was deleted
and recreated (the worker stopped with "the partition ends at"): its checkpoint is past the
new topic's end, and the new commands are applied from the log start on.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `skip-deleted` sub-command to the `kes` parser."""
    parser = sub.add_parser(
        "skip-deleted",
        help="let a partition go on without commands retention deleted before they applied",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "app", metavar="APP-MODULE", help="module with a BEHAVIORS list, e.g. kes.examples.bank"
    )
    parser.add_argument("--aggregate", required=True, help="the aggregate, e.g. account")
    parser.add_argument("--partition", type=int, required=True, help="the commands partition")
    parser.add_argument("--app-id", help="the workers' app id (default: kes, $KES_APP_ID)")
    add_cluster_args(parser)
    parser.set_defaults(handler=cmd_skip_deleted)


def cmd_skip_deleted(args: argparse.Namespace) -> int:
    """Record the decision; 0 when written or nothing to do, 1 when refused."""
    settings = settings_from(args, app_id=args.app_id)
    topics = settings.topics(behavior_named(args.app, args.aggregate).name)
    try:
        decision = skip_deleted(settings, topics, args.partition)
    except KesError as exc:
        print(f"refused: {exc}")
        return 1
    print(decision.summary(topics.commands, args.partition))
    return 0
