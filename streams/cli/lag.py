"""`kes lag`: the figures of a worker's `GET /lag`, as a table, from any machine that reaches Kafka.

No worker is needed: the offsets come from the cluster (kes.streams.operations.groupoffsets). Rates
and the time to catch up need two readings, so they appear from the second refresh of `--watch` on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import IO

from kes.schemas.errors import ConfigurationError
from kes.streams.cli.cliargs import add_cluster_args, settings_from
from kes.streams.kafka.config import confluent_config
from kes.streams.operations.groupoffsets import OffsetsReader
from kes.streams.operations.lag import LagHistory, LagReport, LagTarget, app_targets

__all__ = ["cmd_lag", "format_report", "register"]

_HELP = """\
Print the lag of an app's consumer groups, per partition, as Kafka reports it: the group's
committed offset, the partition's log end offset (high watermark) and their difference. The
groups are the command processor's (the app id, $KES_APP_ID) on each aggregate's commands topic
and each projection's and reactor's on the events topics it reads; add others with --group.
With --watch the table refreshes and shows consume and produce rates (offsets per second) and
the estimated time to catch up. Lag counts offsets: on topics written in transactions (events),
commit markers take offsets too, see streams/operations/lag.py.
"""

_EPILOG = """\
examples:
  kes lag kes.examples.bank
  kes lag kes.examples.bank --watch
  kes lag kes.examples.bank --group audit=account.events --json
"""

_COLUMNS = ("GROUP", "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "RATE/S", "ETA", "OWNER")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `lag` sub-command to the `kes` parser."""
    parser = sub.add_parser(
        "lag",
        help="show the lag of an app's consumer groups per partition (no worker needed)",
        description=_HELP,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", help="app module with a BEHAVIORS list, e.g. kes.examples.bank")
    add_cluster_args(parser, partitions=False)
    parser.add_argument("--app-id", help="the worker's app id = group (default: kes, $KES_APP_ID)")
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="GROUP=TOPIC",
        help="also show this group on this topic (repeatable)",
    )
    parser.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="print the /lag JSON instead")
    parser.set_defaults(handler=cmd_lag)


def _extra(pairs: Sequence[str]) -> list[LagTarget]:
    targets = []
    for pair in pairs:
        group, sep, topic = pair.partition("=")
        if not sep or not group or not topic:
            raise ConfigurationError(f"--group {pair!r}: write it as GROUP=TOPIC")
        targets.append(LagTarget(group, topic, kind="other"))
    return targets


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _eta(seconds: float | None, lag: int | None) -> str:
    if lag == 0:
        return "0s"
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def format_report(report: LagReport) -> str:
    """The table `kes lag` prints: one row per partition, a total row per group."""
    rows: list[tuple[str, ...]] = [_COLUMNS]
    for group in report.groups:
        name, topic = group.target.group, group.target.topic
        if group.error:
            rows.append((name, topic, "-", "-", "-", "-", "-", "-", f"error: {group.error}"))
            continue
        for p in group.partitions:
            owner = "-" if p.owner is None else f"{p.owner.client_id}@{p.owner.host}"
            rows.append(
                (name, topic, str(p.partition), _num(p.committed), str(p.log_end), _num(p.lag),
                 _rate(p.consume_rate), _eta(p.eta_seconds, p.lag), owner)
            )  # fmt: skip
        end = sum(p.log_end for p in group.partitions)
        rows.append(
            (name, topic, "TOTAL", "", str(end), _num(group.lag), _rate(group.consume_rate),
             _eta(group.eta_seconds, group.lag), group.state or "-")
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_lag(args: argparse.Namespace, out: IO[str] = sys.stdout) -> int:
    """Print the lag table once, or every `--interval` seconds with `--watch`."""
    settings = settings_from(args, app_id=args.app_id)
    targets = app_targets(args.app, settings) + _extra(args.group)
    reader = OffsetsReader(confluent_config(settings))
    history = LagHistory(rate_window=max(10.0, args.interval * 5))
    while True:
        report = history.add(reader.read(targets))
        text = json.dumps(report.to_json()) if args.json else format_report(report)
        if args.watch and not args.json and out.isatty():
            out.write("\x1b[H\x1b[2J")
        stamp = time.strftime("%H:%M:%S", time.localtime(report.at))
        if args.watch and not args.json:
            out.write(f"kes lag {args.app} at {stamp} (Ctrl-C stops)\n")
        out.write(text + "\n")
        out.flush()
        if not args.watch:
            return 0
        time.sleep(args.interval)
