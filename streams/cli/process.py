"""`kes process run|status`: run an app's process manager, or show its processes.

`register(sub)` adds the `process` sub-command to the `kes` parser.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import Any

from kes.schemas.errors import ConfigurationError, SchemaVersionError
from kes.streams.cli.cliargs import add_cluster_args, add_web_args, settings_from
from kes.streams.config.apps import event_adapters, event_versions, import_app
from kes.streams.config.settings import Settings
from kes.streams.kafka.config import confluent_config
from kes.streams.processes.process import ProcessManager
from kes.streams.processes.status import describe, read_processes, summarize
from kes.streams.processes.topics import ProcessTopics

__all__ = ["DEFAULT_PROCESS_WEB_PORT", "cmd_run", "cmd_status", "process_named", "register"]

DEFAULT_PROCESS_WEB_PORT = 6069
"""Where `kes process run` serves its web views unless told otherwise."""

_HELP = """\
A process manager (saga) reacts to events with commands and timers. Its runner is a consumer
group, <topic prefix><name>, reading the events of the process's aggregates and the replies of
those it commands; per cycle it updates each process's record (RocksDB and the compacted
changelog <name>.state), sends the commands and commits the offsets in ONE Kafka transaction.
The app module lists its processes in PROCESSES.
"""

_EPILOG = """\
examples:
  kes process run kes.examples.bank.transfers transfer-money
  kes process status kes.examples.bank.transfers transfer-money
  kes process status kes.examples.bank.transfers transfer-money t-42
"""


def process_named(app: str, name: str) -> ProcessManager[Any]:
    """The app module's process manager called `name`; the error lists the ones it has."""
    module = import_app(app)
    found: list[ProcessManager[Any]] = list(getattr(module, "PROCESSES", None) or [])
    if not found:
        raise ConfigurationError(f"app module {app!r} has no PROCESSES list")
    for process in found:
        if isinstance(process, ProcessManager) and process.name == name:
            return process
    known = ", ".join(sorted(p.name for p in found))
    raise ConfigurationError(f"app module has no process {name!r}; it has: {known}")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `process` sub-command (run, status) to the `kes` parser."""
    parser = sub.add_parser(
        "process",
        help="run a process manager (saga), or show its processes",
        description=_HELP,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="process_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="drive the processes until Ctrl-C",
        description="Join the process's consumer group and run cycles until Ctrl-C or SIGTERM. "
        "Start more runners (each with its own --data-dir) to share the partitions.",
    )
    _add_common(run)
    run.add_argument("--data-dir", help="local RocksDB files (default: .kes-data, $KES_DATA_DIR)")
    views = "/health, /metrics and /processes"
    add_web_args(run, env="KES_PROCESS_WEB_PORT", default=DEFAULT_PROCESS_WEB_PORT, views=views)
    run.add_argument(
        "--stuck-after",
        type=float,
        default=300.0,
        help="seconds without progress before /metrics counts a process stuck (default 300)",
    )
    run.add_argument("--loglevel", default="WARNING", help="default: WARNING")
    run.set_defaults(handler=cmd_run)
    show = actions.add_parser(
        "status",
        help="count processes by status, list stuck ones, or show one process",
        description="Read the process's changelog: counts by status, pending timers and stuck "
        "processes (failed, or running without progress for --stuck-after seconds with no "
        "timer ahead); with a process id, that process's record.",
    )
    _add_common(show)
    show.add_argument("process_id", nargs="?", help="show this process")
    show.add_argument(
        "--stuck-after", type=float, default=300.0, help="seconds without progress (default 300)"
    )
    show.set_defaults(handler=cmd_status)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", help="app module with a PROCESSES list")
    parser.add_argument("name", help="the process's name, e.g. transfer-money")
    add_cluster_args(parser)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a process manager until Ctrl-C or SIGTERM."""
    from kes.streams.processes.runner import ProcessRunner
    from kes.streams.runtime.transaction import FatalKafkaError
    from kes.streams.web.process import ProcessWeb

    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(message)s")
    process = process_named(args.app, args.name)
    settings: Settings = settings_from(args, data_dir=args.data_dir)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    runner = ProcessRunner(
        process, settings, adapters=event_adapters(args.app), versions=event_versions(args.app)
    )
    web = None
    if args.web_port:
        web = ProcessWeb(runner, args.web_host, args.web_port, stuck_after=args.stuck_after)
        web.start()
    print(f"process {process.name}: group {runner.topics.group}; Ctrl-C stops it", flush=True)
    if web is not None:
        print(f"web views on http://{args.web_host}:{web.port}/health", flush=True)
    try:
        runner.run(stop)
    except FatalKafkaError as exc:
        print(f"kes: the runner cannot go on: {exc}", flush=True)
        return 70
    except SchemaVersionError as exc:
        print(f"kes: the runner refuses an event newer than its code: {exc}", flush=True)
        return 78
    finally:
        if web is not None:
            web.close()
    stats = runner.stats
    print(
        f"stopped: {stats.routed} routed, {stats.inputs} inputs, {stats.timers} timers, "
        f"{stats.commands} commands",
        flush=True,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the counts of a process manager's processes, or one process's record."""
    import time

    process = process_named(args.app, args.name)
    settings = settings_from(args)
    topics = ProcessTopics.of(process, settings)
    records = read_processes(topics, confluent_config(settings))
    if args.process_id is not None:
        record = records.get(args.process_id)
        if record is None:
            raise ConfigurationError(f"no process {args.process_id!r} in {topics.state}")
        print(describe(record))
        return 0
    summary = summarize(records, time.time_ns() // 1_000_000, int(args.stuck_after * 1000))
    print(summary.render(process.name))
    for process_id in summary.stuck[:20]:
        print(describe(records[process_id]))
    return 0
