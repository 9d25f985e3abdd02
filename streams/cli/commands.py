"""The `kes` command line: one sub-command per operation a user does.

Each sub-command is a small function taking the parsed arguments and returning an exit code;
`main` turns any KesError into a one-line message on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import KafkaException

from kes.schemas.errors import AdminError, ConfigurationError, KesError
from kes.streams.cli import migrate as migrate_cli
from kes.streams.cli.cliargs import add_cluster_args, settings_from
from kes.streams.config.settings import Guarantee, Settings
from kes.streams.kafka.config import KAFKA_LOG
from kes.streams.kafka.connectivity import check_reachable
from kes.streams.telemetry.tracing import install_file_exporter
from kes.topology.layout import AggregateTopics

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def cmd_dev_broker(args: argparse.Namespace) -> int:
    """Run a local Kafka broker (or a cluster of `--nodes`) in the foreground until Ctrl-C."""
    from kes.topology.localbroker import LocalBroker, broker_version
    from kes.topology.localcluster import LocalCluster

    data_dir = Path(args.data_dir) if args.data_dir else None
    server: LocalBroker | LocalCluster
    if args.nodes == 1:
        server = LocalBroker(data_dir=data_dir, port=args.port)
        name, shape = "broker", "single node"
    else:
        server = LocalCluster(args.nodes, data_dir=data_dir, port=args.port)
        name, shape = "cluster", f"{args.nodes} nodes, each a broker and a controller"
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting Kafka {broker_version()} (KRaft, {shape}) ...", flush=True)
    try:
        bootstrap = server.start()
        print(f"{name} ready at {bootstrap}", flush=True)
        print(f"  export KAFKA_BOOTSTRAP_SERVERS={bootstrap}", flush=True)
        nodes = server.nodes if isinstance(server, LocalCluster) else [server]
        for node in nodes:
            print(f"  log: {node.log_file}", flush=True)
        print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            if all(node.pid is None for node in nodes):
                break
    finally:
        server.stop()
        print(f"{name} stopped", flush=True)
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    return settings_from(
        args,
        data_dir=getattr(args, "data_dir", None),
        web_port=getattr(args, "web_port", None),
        web_host=getattr(args, "web_host", None),
        guarantee=getattr(args, "guarantee", None),
        app_id=getattr(args, "app_id", None),
        take_over=getattr(args, "take_over", None) or None,
        replication_factor=getattr(args, "replication_factor", None),
        min_insync_replicas=getattr(args, "min_insync_replicas", None),
    )


def cmd_topics(args: argparse.Namespace) -> int:
    """Plan, apply or describe the topics of an app module's aggregates."""
    from kes.streams.config.apps import load_behaviors
    from kes.streams.config.durablestate import layout_of
    from kes.streams.kafka.config import confluent_config
    from kes.topology.admin import replication_for, run_topics

    if args.action == "migrate":
        return migrate_cli.cmd_migrate(args)
    settings = _settings(args)
    if not settings.replication_factor:  # what the cluster can hold
        factor = replication_for(confluent_config(settings))
        settings = replace(settings, replication_factor=factor)
    code = 0
    for warning in settings.retention_warnings():
        print(f"warning: {warning}")
    for behavior in load_behaviors(args.app):
        code = max(
            code,
            run_topics(args.action, layout_of(settings, behavior), confluent_config(settings)),
        )
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker for an app module's aggregates until Ctrl-C."""
    from kes.streams.config.apps import event_adapters, load_behaviors
    from kes.streams.config.durablestate import layout_of
    from kes.streams.kafka.config import confluent_config
    from kes.streams.operations.lag import app_targets
    from kes.streams.runtime.worker import EXIT_CONFIGURATION, Worker
    from kes.streams.web.views import install_views

    settings = _settings(args)
    for warning in settings.retention_warnings():
        print(f"warning: {warning}", file=sys.stderr)
    behaviors = load_behaviors(args.app)
    for behavior in behaviors:  # code that cannot read its snapshots: not a retryable failure
        try:
            behavior.check_state_migrations()
        except ConfigurationError as exc:
            print(f"kes: error: {exc}", file=sys.stderr)
            return EXIT_CONFIGURATION
    for behavior in behaviors:
        _verified(layout_of(settings, behavior), confluent_config(settings))
    worker = Worker(behaviors, settings, event_adapters(args.app))
    views = install_views(worker)  # the operator's views: /, /lag, /entities, /metrics
    views.watch(app_targets(args.app, settings))  # projections' groups in /lag too
    worker.run(loglevel=args.loglevel)
    return 0


def _verified(topics: AggregateTopics, config: dict[str, Any], patience: float = 60.0) -> None:
    """verify_layout, asked again while the cluster cannot answer (a controller election, a
    broker restarting): a worker started during a failover waits instead of exiting 1."""
    from kes.topology.admin import verify_layout

    deadline = time.monotonic() + patience
    while True:
        try:
            verify_layout(topics, config)
            return
        except AdminError as exc:
            if time.monotonic() > deadline:
                raise
            print(f"kes: waiting for the cluster: {exc}", file=sys.stderr, flush=True)
            time.sleep(2)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the bank demo until Ctrl-C (or --duration)."""
    from kes.streams.cli.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            rate=args.rate, accounts=args.accounts, duration=args.duration, web_port=args.web_port
        )
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kes",
        description="kes: Kafka-native event sourcing. Commands in, events out, exactly once.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the bank example end to end: broker, topics, worker, a stream of commands",
        description="Start a local broker (or use $KAFKA_BOOTSTRAP_SERVERS), create the bank "
        "example's topics, start a worker with its web views, and stream commands. Prints the "
        "dashboard URL and a short tour. Ctrl-C stops everything it started.",
    )
    demo.add_argument("--rate", type=float, default=50.0, help="commands per second (default 50)")
    demo.add_argument("--accounts", type=int, default=200, help="accounts (default 200)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--web-port", type=int, default=6066, help="dashboard port (default 6066)")
    demo.set_defaults(handler=cmd_demo)

    dev = sub.add_parser("dev", help="development helpers (a local broker)")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="WHAT")
    broker = dev_sub.add_parser(
        "broker",
        help="run a local Kafka broker or cluster (from Maven Central jars) until Ctrl-C",
        description="Resolve Kafka's jars with Maven (once), start a single-node KRaft broker "
        "(or --nodes of them in one cluster) on loopback, print the bootstrap address, and stop "
        "on Ctrl-C.",
    )
    broker.add_argument(
        "--port",
        type=int,
        default=0,
        help="listener port; with --nodes, the first node's, the next ones count up "
        "(default: free ones)",
    )
    broker.add_argument("--data-dir", help="keep data here across runs (default: a temp dir)")
    broker.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="brokers (each also a KRaft controller); 3 gives a replicated cluster with "
        "production defaults: replication factor 3, min.insync.replicas 2 (default 1)",
    )
    broker.set_defaults(handler=cmd_dev_broker)

    topics = sub.add_parser(
        "topics",
        help="plan, apply or describe the Kafka topics of an app's aggregates",
        description="Each aggregate has <name>.commands, .events (compacted event log), .snapshots "
        "(compacted changelog), .replies, .dlq and .keys (entities' data keys). `plan` shows "
        "what is missing or wrong, `apply` "
        "creates what is missing and fixes config drift (never partition counts), `describe` shows "
        "the layout as it is. Exit code 1 when the layout is wrong. `migrate APP AGGREGATE "
        "--partitions N --to-prefix NEW` moves an aggregate to a new topic set with N partitions.",
    )
    topics.add_argument("action", choices=["plan", "apply", "describe", "migrate"])
    topics.add_argument("app", help="app module with a BEHAVIORS list, e.g. kes.examples.bank")
    add_cluster_args(topics)
    topics.add_argument(
        "--replication-factor",
        type=int,
        help="replicas per topic (default: 3 with three brokers or more, else one per broker; "
        "$KES_REPLICATION_FACTOR)",
    )
    topics.add_argument(
        "--min-insync-replicas",
        type=int,
        help="min.insync.replicas (default: 2 with three replicas or more, else 1; "
        "$KES_MIN_INSYNC_REPLICAS)",
    )
    migrate_cli.add_arguments(topics)
    topics.set_defaults(handler=cmd_topics)

    worker = sub.add_parser(
        "worker",
        help="run a worker that applies an app's commands (exactly once)",
        description="Join the app's consumer group, take a share of the command partitions, "
        "recover their snapshots and apply commands in Kafka transactions. Start more workers "
        "with the same --app-id to scale out; each serves web views on --web-port.",
    )
    worker.add_argument("app", help="app module with a BEHAVIORS list, e.g. kes.examples.bank")
    add_cluster_args(worker)
    worker.add_argument(
        "--app-id", help="Faust app id = consumer group (default: kes, $KES_APP_ID)"
    )
    worker.add_argument(
        "--data-dir", help="local RocksDB files (default: .kes-data, $KES_DATA_DIR)"
    )
    worker.add_argument("--web-host", help="web views bind address (default: 127.0.0.1)")
    worker.add_argument(
        "--web-port", type=int, help="web views port (default: 6066, $KES_WEB_PORT)"
    )
    worker.add_argument(
        "--guarantee", choices=[g.value for g in Guarantee], help="default: exactly_once"
    )
    worker.add_argument(
        "--take-over",
        action="store_true",
        help="write partitions whose checkpoint names another app id (that deployment is gone)",
    )
    worker.add_argument("--loglevel", default="WARNING", help="default: WARNING")
    worker.set_defaults(handler=cmd_worker)

    from kes.streams.cli.console import register

    register(sub)
    from kes.streams.cli import verify as verify_cli

    verify_cli.register(sub)
    from kes.streams.cli import projection as projection_cli

    projection_cli.register(sub)
    from kes.streams.cli import process as process_cli

    process_cli.register(sub)
    from kes.streams.cli import lag as lag_cli

    lag_cli.register(sub)
    from kes.streams.cli import gaps as gaps_cli

    gaps_cli.register(sub)
    from kes.streams.cli import snapshots as snapshots_cli

    snapshots_cli.register(sub)
    from kes.streams.cli import dlq as dlq_cli

    dlq_cli.register(sub)
    from kes.streams.cli import erasure

    erasure.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kes` console script."""
    args = _parser().parse_args(argv)
    handler: Handler = args.handler
    install_file_exporter()  # KES_TRACE_FILE: this process's spans as JSON lines
    try:
        if hasattr(args, "bootstrap") and handler is not cmd_worker:
            KAFKA_LOG.setLevel(logging.CRITICAL)  # a command's output is its own lines only
        if hasattr(args, "bootstrap"):  # it talks to Kafka: is anyone there?
            check_reachable(settings_from(args))
        return handler(args)
    except KesError as exc:
        print(f"kes: error: {exc}", file=sys.stderr)
        return 1
    except KafkaException as exc:
        print(f"kes: error: Kafka: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
