"""`kes projection run|rebuild|status`: run an app's projection, rebuild its read model, show lag.

`register(sub)` adds the `projection` sub-command to the `kes` parser; each handler takes the
parsed arguments and returns an exit code, raising a KesError for anything the user must fix.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from kes.schemas.errors import ConfigurationError
from kes.streams.cli.cliargs import add_cluster_args, add_web_args, settings_from
from kes.streams.config.apps import event_adapters, event_versions
from kes.streams.config.settings import Settings
from kes.streams.projections.admin import dead_letter_count, rebuild, status
from kes.streams.projections.host import ProjectionHost
from kes.streams.projections.projection import AnyProjection, load_projections, projection_named
from kes.streams.projections.projector import Projector
from kes.streams.projections.readmodels import describe, exists, open_read_model
from kes.streams.web.projection import ProjectionWeb

__all__ = [
    "DEFAULT_PROJECTION_WEB_PORT",
    "cmd_rebuild",
    "cmd_run",
    "cmd_status",
    "parse_timestamp",
    "register",
]

DEFAULT_PROJECTION_WEB_PORT = 6068
"""Where `kes projection run` serves its web views unless told otherwise."""

_HELP = """\
Projections turn an aggregate's events into a read model (or, as reactors, into side effects).
Each runs as its own consumer group, <topic prefix><name>, reading committed events only, and
keeps its rows with the offsets they reflect in <data dir>/projections/<group> (RocksDB), or in
PostgreSQL (KES_POSTGRES_DSN) for a SQL projection or with KES_READMODEL_STORE=postgres: a
crash neither loses an event nor applies one twice. The app module lists them in PROJECTIONS.
Events a handler keeps failing on go to <topic prefix><name>.dlq with the reason.
"""

_EPILOG = """\
examples:
  kes projection run kes.examples.bank account-balances
  kes projection run kes.examples.bank --all --web-port 6068
  KES_POSTGRES_DSN=postgresql://kes@db/kes kes projection run kes.examples.bank account-balances-sql
  kes projection status kes.examples.bank account-balances
  kes projection rebuild kes.examples.bank account-balances --from 2024-05-01T00:00:00Z
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `projection` sub-command (run, rebuild, status) to the `kes` parser."""
    parser = sub.add_parser(
        "projection",
        help="run a projection (read model or reactor), rebuild it, or show its lag",
        description=_HELP,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="projection_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="apply events to the read model until Ctrl-C",
        description="Join each named projection's consumer group (or every projection's, with "
        "--all) and apply events until Ctrl-C or SIGTERM; each keeps its own group and store. "
        "Start more processes (each with its own --data-dir) to share partitions. Serves "
        "/health, /metrics and /projections/<name>/rows/<key> on --web-port.",
    )
    run.add_argument("app", help="app module with a PROJECTIONS list, e.g. kes.examples.bank")
    run.add_argument("names", nargs="*", metavar="NAME", help="projections to run in this process")
    run.add_argument("--all", action="store_true", help="run every projection of the app")
    add_cluster_args(run)
    run.add_argument(
        "--data-dir", help="where read models live (default: .kes-data, $KES_DATA_DIR)"
    )
    views = "/health, /metrics and row reads"
    env = "KES_PROJECTION_WEB_PORT"
    add_web_args(run, env=env, default=DEFAULT_PROJECTION_WEB_PORT, views=views)
    run.add_argument("--loglevel", default="WARNING", help="default: WARNING")
    run.set_defaults(handler=cmd_run)
    again = actions.add_parser(
        "rebuild",
        help="clear the read model and rewind the group (the projection must be stopped)",
        description="Delete the local read model and reset the projection to the beginning of "
        "the log, or to the first events at or after --from; the next `run` catches up again. "
        "The projection must be stopped; with several processes, rebuild each data dir.",
    )
    _add_common(again)
    again.add_argument(
        "--from",
        dest="from_time",
        metavar="TIMESTAMP",
        help="restart at this time: ISO 8601 (2024-05-01T12:00:00Z) or epoch milliseconds",
    )
    again.add_argument(
        "--refire",
        action="store_true",
        help="a reactor: yes, run its side effects again for every event from the restart point",
    )
    again.set_defaults(handler=cmd_rebuild)
    show = actions.add_parser(
        "status",
        help="show stored and committed offsets against the log end, and the lag",
        description="Per events partition: the log end, the offset stored with the local read "
        "model, the group's committed offset in Kafka, and the lag; then the dead letters.",
    )
    _add_common(show)
    show.set_defaults(handler=cmd_status)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", help="app module with a PROJECTIONS list, e.g. kes.examples.bank")
    parser.add_argument("name", help="the projection's name, e.g. account-balances")
    add_cluster_args(parser)
    parser.add_argument(
        "--data-dir", help="where read models live (default: .kes-data, $KES_DATA_DIR)"
    )


def _settings(args: argparse.Namespace) -> Settings:
    return settings_from(args, data_dir=args.data_dir)


def cmd_run(args: argparse.Namespace) -> int:
    """Run projections until Ctrl-C or SIGTERM; a projection's failure stops them all and is
    raised (`kes` reports it and exits 1)."""
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(message)s")
    projections = _chosen(args)
    settings = _settings(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    adapters = event_adapters(args.app)
    versions = event_versions(args.app)
    projectors = [Projector(p, settings, adapters=adapters, versions=versions) for p in projections]
    host = ProjectionHost(projectors)
    web = ProjectionWeb(host, args.web_host, args.web_port) if args.web_port else None
    for projector in projectors:
        print(
            f"projection {projector.projection.name}: group {projector.group_id}, read model "
            f"{describe(projector.projection, settings)}",
            flush=True,
        )
    if web is not None:
        web.start()
        print(f"web views on http://{args.web_host}:{web.port}/health; Ctrl-C stops", flush=True)
    try:
        host.run(stop)  # a failure is raised after the stops are reported: `kes` says it last
    finally:
        if web is not None:
            web.close()
        for projector in projectors:
            stats = projector.stats
            print(
                f"{projector.projection.name} stopped: {stats.records} events read, "
                f"{stats.applied} applied, {stats.dead_letters} dead-lettered",
                flush=True,
            )
    return 0


def _chosen(args: argparse.Namespace) -> list[AnyProjection]:
    if args.all and args.names:
        raise ConfigurationError("name projections or pass --all, not both")
    if args.all:
        return load_projections(args.app)
    if not args.names:
        raise ConfigurationError("name a projection to run, or pass --all")
    return [projection_named(args.app, name) for name in args.names]


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Clear a stopped projection's read model and rewind it."""
    projection = projection_named(args.app, args.name)
    settings = _settings(args)
    since = parse_timestamp(args.from_time) if args.from_time else None
    store = open_read_model(projection, settings)
    try:
        restart = rebuild(projection, settings, store, from_timestamp_ms=since, refire=args.refire)
    finally:
        store.close()
    where = "the beginning" if since is None else f"{args.from_time}"
    print(f"projection {projection.name} cleared; it restarts from {where}:")
    for (topic, partition), offset in sorted(restart.items()):
        print(f"  {topic}[{partition}] @ {offset}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print each partition's end, stored and committed offsets and lag, then dead letters."""
    projection = projection_named(args.app, args.name)
    settings = _settings(args)
    stored = None
    if exists(projection, settings):
        store = open_read_model(projection, settings, read_only=True)
        try:
            stored = store.offsets()
        finally:
            store.close()
    progress = status(projection, settings, stored)
    rows = [("TOPIC", "PARTITION", "END", "STORED", "COMMITTED", "LAG")]
    for p in progress:
        rows.append(
            (p.topic, str(p.partition), str(p.end), _cell(p.stored), _cell(p.committed),
             _cell(p.lag))
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    lags = [p.lag for p in progress]
    total = "unknown" if any(lag is None for lag in lags) else str(sum(lag or 0 for lag in lags))
    here = "" if stored is not None else " (none here)"
    print(f"projection {projection.name}: lag {total}; read model "
          f"{describe(projection, settings)}{here}")  # fmt: skip
    print(f"dead letters in {projection.dlq_topic(settings.topic_prefix)}: "
          f"{dead_letter_count(projection, settings)}")  # fmt: skip
    return 0


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds from digits (already milliseconds) or ISO 8601 (UTC if no zone)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"--from {text!r} is not a time: use ISO 8601 (2024-05-01T12:00:00Z) or epoch ms"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
