"""The `kes` command line: one sub-command per operation a user does.

Each sub-command is a small function taking the parsed arguments and returning an exit code;
`main` turns any KesError into a one-line message on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from schemas.errors import KesError

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _bootstrap(args: argparse.Namespace) -> str:
    return str(args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092")


def _add_bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        "-b",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )


def cmd_dev_broker(args: argparse.Namespace) -> int:
    """Run a local Kafka broker in the foreground until Ctrl-C."""
    from topology.localbroker import LocalBroker, kafka_version

    data_dir = Path(args.data_dir) if args.data_dir else None
    broker = LocalBroker(data_dir=data_dir, port=args.port)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting Kafka {kafka_version()} (KRaft, single node) ...", flush=True)
    try:
        bootstrap = broker.start()
        print(f"broker ready at {bootstrap}", flush=True)
        print(f"  export KAFKA_BOOTSTRAP_SERVERS={bootstrap}", flush=True)
        print(f"  log: {broker.log_file}", flush=True)
        print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            if broker.pid is None:
                break
    finally:
        broker.stop()
        print("broker stopped", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kes",
        description="kes: Kafka-native event sourcing. Commands in, events out, exactly once.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="development helpers (a local broker)")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="WHAT")
    broker = dev_sub.add_parser(
        "broker",
        help="run a local Kafka broker (from Maven Central jars) until Ctrl-C",
        description="Resolve Kafka's jars with Maven (once), start a single-node KRaft broker on "
        "loopback, print its bootstrap address, and stop it on Ctrl-C.",
    )
    broker.add_argument("--port", type=int, default=0, help="listener port (default: a free one)")
    broker.add_argument("--data-dir", help="keep data here across runs (default: a temp dir)")
    broker.set_defaults(handler=cmd_dev_broker)

    for register in _REGISTRARS:
        register(sub)
    return parser


Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
_REGISTRARS: list[Registrar] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kes` console script."""
    args = _parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KesError as exc:
        print(f"kes: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
