"""`kes verify`: check an aggregate's invariants on a cluster, from the data itself.

Exit status 0 when every invariant holds, 1 on any violation (the entities are named), so it can
gate a deploy or close a chaos run. See kes.streams.operations.verify and
kes.streams.operations.outcomes for what is checked.
"""

from __future__ import annotations

import argparse

from kes.streams.cli.cliargs import add_cluster_args, settings_from
from kes.streams.config.apps import behavior_named, event_adapters
from kes.streams.config.durablestate import layout_of
from kes.streams.kafka.config import confluent_config
from kes.streams.kafka.keyreader import keyring_for
from kes.streams.operations.outcomes import read_outcomes
from kes.streams.operations.verify import verify

__all__ = ["EXIT_VIOLATIONS", "cmd_verify", "register"]

EXIT_VIOLATIONS = 1
"""Exit status of `kes verify` when an invariant is violated."""

_HELP = """\
Check an aggregate's invariants from its topics (read_committed, up to their ends now):

  - per entity, event revisions are 1..n with no gap and no repeat;
  - no command is applied twice (a command's events are one contiguous run);
  - the entity's snapshot in the changelog equals the fold of its events.

With --commands, also read the commands, replies and dead-letter topics and check that every
command the workers have processed has exactly one outcome: one dead letter for a record that
does not decode, one forwarded copy for a misrouted one, one reply per reply-wanted record (at
most one accepted per command id, at the revision of its last event), no events or replies for
commands that are not on the topic. Commands past a partition's last checkpoint are pending.

Run it when the workers are idle for an exact answer; on a live system it never reports a
violation that is not one, but counts recent commands as pending.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `verify` sub-command to the `kes` parser."""
    parser = sub.add_parser(
        "verify",
        help="check an aggregate's invariants (revisions, exactly once, snapshots) on a cluster",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "app", metavar="APP-MODULE", help="module with a BEHAVIORS list, e.g. kes.examples.bank"
    )
    parser.add_argument("aggregate", metavar="AGGREGATE", help="the aggregate, e.g. account")
    parser.add_argument(
        "--commands",
        action="store_true",
        help="also check that every processed command has exactly one outcome",
    )
    add_cluster_args(parser)
    parser.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify one aggregate; print the summary; 1 on any violation, naming the entities."""
    settings = settings_from(args)
    behavior = behavior_named(args.app, args.aggregate)
    topics = layout_of(settings, behavior)
    config = confluent_config(settings)
    keys = keyring_for(topics, config, settings.master())
    checked = verify(behavior, topics, config, event_adapters(args.app), keys)
    print(f"{topics.events}: {checked.summary()}")
    entities = {v.split(":", 1)[0] for v in checked.violations}
    ok = checked.ok
    if args.commands:
        outcomes = read_outcomes(
            topics, behavior.name, config, max_command_bytes=settings.max_command_bytes
        )
        print(f"{topics.commands}: {outcomes.summary()}")
        entities |= outcomes.entities
        ok = ok and outcomes.ok
    if ok:
        return 0
    named = sorted(entities)
    print(f"violations in {len(named)} entities: " + ", ".join(named[:100]))
    return EXIT_VIOLATIONS
