"""The options every `kes` sub-command that talks to a cluster shares, and Settings from them."""

from __future__ import annotations

import argparse
import os
from typing import Any

from kes.streams.config.settings import Settings

__all__ = ["add_cluster_args", "add_web_args", "settings_from"]


def add_cluster_args(parser: argparse.ArgumentParser, *, partitions: bool = True) -> None:
    """--bootstrap/-b, --topic-prefix and (unless told not to) --partitions."""
    parser.add_argument(
        "--bootstrap",
        "-b",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    if partitions:
        parser.add_argument(
            "--partitions",
            type=int,
            help="partitions per aggregate topic, as given to `kes topics` (default 12, "
            "$KES_PARTITIONS)",
        )
    parser.add_argument(
        "--topic-prefix",
        help="prefix of every topic name, as given to `kes topics` ($KES_TOPIC_PREFIX)",
    )


def add_web_args(parser: argparse.ArgumentParser, *, env: str, default: int, views: str) -> None:
    """--web-port (`default`, or $`env`; 0: no web views) and --web-host ($KES_WEB_HOST) of a
    process that serves `views` (projection processes, process runners)."""
    parser.add_argument(
        "--web-port",
        type=int,
        default=int(os.environ.get(env, default)),
        help=f"port of {views} (default {default}, ${env}; 0: no web views)",
    )
    parser.add_argument(
        "--web-host", default=os.environ.get("KES_WEB_HOST", "127.0.0.1"), help="default: 127.0.0.1"
    )


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from the environment, then these options and `overrides` (None means unset)."""
    return Settings.from_env(
        bootstrap_servers=args.bootstrap,
        partitions=getattr(args, "partitions", None),
        topic_prefix=args.topic_prefix,
        **overrides,
    )
