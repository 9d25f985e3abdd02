"""Worker settings: one small frozen dataclass, filled from flags or environment variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from kes.schemas.errors import ConfigurationError
from kes.streams.core.keyring import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    LocalMasterKey,
    master_key_from_env,
)
from kes.topology.layout import AggregateTopics

__all__ = ["DEFAULT_WEB_PORT", "Guarantee", "Settings"]

DEFAULT_WEB_PORT = 6066
"""The worker's web port (Faust's default), published by docker-compose.yml."""


class Guarantee(StrEnum):
    """Processing guarantee of a worker."""

    EXACTLY_ONCE = "exactly_once"
    """Events, snapshot, reply and the command offset commit in one Kafka transaction (default)."""
    AT_LEAST_ONCE = "at_least_once"
    """No transactions: faster; a crash may write a batch's events twice (same keys, so the
    compacted log drops the copies, but read_uncommitted readers can see them twice)."""


_ENV = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "data_dir": "KES_DATA_DIR",
    "web_host": "KES_WEB_HOST",
    "web_port": "KES_WEB_PORT",
    "web_advertised_url": "KES_WEB_ADVERTISED_URL",
    "guarantee": "KES_GUARANTEE",
    "app_id": "KES_APP_ID",
    "batch_max_commands": "KES_BATCH_MAX_COMMANDS",
    "batch_max_ms": "KES_BATCH_MAX_MS",
    "partitions": "KES_PARTITIONS",
    "topic_prefix": "KES_TOPIC_PREFIX",
    "session_timeout_ms": "KES_SESSION_TIMEOUT_MS",
    "group_protocol": "KES_GROUP_PROTOCOL",
    "take_over": "KES_TAKE_OVER",
    "max_command_bytes": "KES_MAX_COMMAND_BYTES",
    "max_record_bytes": "KES_MAX_RECORD_BYTES",
    "replication_factor": "KES_REPLICATION_FACTOR",
    "min_insync_replicas": "KES_MIN_INSYNC_REPLICAS",
    "outcome_horizon_s": "KES_OUTCOME_HORIZON_SECONDS",
    "max_outcomes": "KES_MAX_OUTCOMES",
    "commands_retention_ms": "KES_COMMANDS_RETENTION_MS",
    "replies_retention_ms": "KES_REPLIES_RETENTION_MS",
    "state_changes_retention_ms": "KES_STATE_CHANGES_RETENTION_MS",
    "master_key": MASTER_KEY_ENV,
    "master_key_file": MASTER_KEY_FILE_ENV,
    "postgres_dsn": "KES_POSTGRES_DSN",
    "readmodel_store": "KES_READMODEL_STORE",
    "snapshot_every": "KES_SNAPSHOT_EVERY",
    "snapshot_max_tail": "KES_SNAPSHOT_MAX_TAIL",
}


_CLIENT_PREFIX = "KES_KAFKA_"
"""`KES_KAFKA_SASL_USERNAME=u` sets client setting `sasl.username` (lower case, `_` -> `.`)."""


@dataclass(frozen=True)
class Settings:
    """How a worker connects and batches. Every field has an environment variable (see from_env)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = 12
    """Partitions of each aggregate's commands, events and snapshot topics (see `kes topics`)."""
    topic_prefix: str = ""
    """Prepended to aggregate names in topic names: `<prefix><aggregate>.commands`."""
    app_id: str = "kes"
    """The Faust app id; the consumer group of the command processor is derived from it."""
    data_dir: Path = Path(".kes-data")
    """Where the worker keeps its RocksDB files (a cache of the snapshot changelog)."""
    web_host: str = "127.0.0.1"
    web_port: int = DEFAULT_WEB_PORT
    web_advertised_url: str = ""
    """How other workers reach this one's views (owner routing of /entities, the dashboard's
    owners); "" : `http://<web_host>:<web_port>`, or the machine's host name when web_host
    binds every address (0.0.0.0 is never advertised)."""
    guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    batch_max_commands: int = 2_000
    """A cycle (one transaction for every partition the worker owns) takes at most this many
    commands ..."""
    batch_max_ms: int = 0
    """... and waits at most this many milliseconds for more after the first one (0: it takes
    what has arrived, so batches grow with load and an idle worker adds no latency)."""
    max_command_bytes: int = 900_000
    """Larger commands go to the dead-letter topic as TOO_LARGE (kept below the record limit, so
    a command always fits in a forward or a dead letter)."""
    max_record_bytes: int = 1_000_000
    """The largest record kes writes (key, value, headers). A command whose event or snapshot
    would be larger is dead-lettered as TOO_LARGE and rejected; a reply whose state would be
    larger leaves the state out. Keep it under the topics' `max.message.bytes` (the broker's
    default is 1,048,588)."""
    recent_command_ids: int = 32
    """Command ids remembered per entity (in its snapshot): a retry among them that is past the
    outcome horizon is still not applied again (it is answered DUPLICATE)."""
    outcome_horizon_s: int = 7 * 24 * 3600
    """How long each command's outcome answers its retries (0: no outcome store, only the
    recent command ids)."""
    max_outcomes: int = 1_000_000
    """At most this many outcomes per partition; beyond it the oldest are dropped first."""
    commands_retention_ms: int = 7 * 24 * 3600 * 1000
    """`retention.ms` of the commands topic (-1: forever); see `retention_warnings`."""
    replies_retention_ms: int = 3600 * 1000
    """`retention.ms` of the replies topic: a client that asks reads its reply within seconds."""
    state_changes_retention_ms: int = 7 * 24 * 3600 * 1000
    """`retention.ms` of a durable-state aggregate's events topic (its change records; -1:
    forever): readers (projections, process managers) must read a change within it."""
    snapshot_every: int = 1
    """An entity's snapshot goes to the snapshot changelog once every this many events (1: with
    every change). Between two, recovery folds the entity's newer events from the events topic;
    the worker's local store always holds the latest state (see
    kes.streams.cycle.snapshotpolicy)."""
    snapshot_max_tail: int = 100_000
    """An entity whose oldest unsnapshotted event lies more than this many offsets behind its
    events partition's newest is snapshotted anyway: it bounds how far back recovery reads."""
    transaction_timeout_ms: int = 20_000
    """How long a transaction left open by a crashed worker can block read_committed readers."""
    session_timeout_ms: int = 10_000
    """A worker that stops heartbeating (killed, paused) loses its partitions after this long."""
    group_protocol: str = "classic"
    """The command consumer's group protocol: `classic` (cooperative-sticky, static membership,
    `session_timeout_ms`) or `consumer` (KIP-848, brokers 4.0+: the broker assigns and keeps the
    session, `group.consumer.session.timeout.ms`; no static membership, see Engine)."""
    replication_factor: int = 0
    """Replicas of each topic kes creates; 0: what the cluster can hold (3 with three brokers or
    more, else one per broker), resolved by `kes topics` (see
    kes.topology.admin.replication_for)."""
    min_insync_replicas: int = 0
    """`min.insync.replicas` of each topic; 0: 2 with a replication factor of 3 or more, else 1."""
    take_over: bool = False
    """Write partitions whose last checkpoint names another consumer group (see OwnershipError)."""
    client_config: Mapping[str, str] = field(default_factory=dict)
    """Extra librdkafka-style settings (SASL, TLS) passed to every client kes creates."""
    master_key: str = field(default="", repr=False)
    """The master key that wraps entities' data keys (personal data), base64 of 32 bytes."""
    master_key_file: str = ""
    """... or a file holding it (raw or base64); see kes.streams.core.keyring."""
    postgres_dsn: str = field(default="", repr=False)
    """The PostgreSQL database of SQL projections and of `readmodel_store="postgres"`: a libpq
    connection string or URI (`postgresql://user:password@host:5432/db`); kept out of repr."""
    readmodel_store: str = "rocksdb"
    """Where row projections keep their read model: `rocksdb` (a local directory under
    `data_dir`, one per process) or `postgres` (tables in `postgres_dsn`, shared by processes)."""

    def __post_init__(self) -> None:
        if self.batch_max_commands < 1 or self.batch_max_ms < 0:
            raise ConfigurationError("batch_max_commands must be >= 1 and batch_max_ms >= 0")
        if not 0 < self.max_command_bytes < self.max_record_bytes:
            raise ConfigurationError(
                "max_command_bytes must be positive and below max_record_bytes (a command must "
                "fit in the forward or dead letter it may become)"
            )
        if self.outcome_horizon_s < 0 or self.max_outcomes < 0:
            raise ConfigurationError("outcome_horizon_s and max_outcomes must be >= 0")
        if self.snapshot_every < 1 or self.snapshot_max_tail < 1:
            raise ConfigurationError("snapshot_every and snapshot_max_tail must be >= 1")
        if self.snapshot_every > 1 and self.guarantee is not Guarantee.EXACTLY_ONCE:
            raise ConfigurationError(
                "snapshot_every > 1 needs the exactly_once guarantee (recovery folds events "
                "only up to the checkpoint written in the same transaction)"
            )
        if not 0 < self.web_port < 65536:
            raise ConfigurationError(f"web_port {self.web_port} is not a TCP port")
        if self.readmodel_store not in ("rocksdb", "postgres"):
            raise ConfigurationError(
                f"readmodel_store {self.readmodel_store!r} is neither 'rocksdb' nor 'postgres' "
                "(KES_READMODEL_STORE)"
            )
        if self.group_protocol not in ("classic", "consumer"):
            raise ConfigurationError(
                f"group_protocol {self.group_protocol!r} is neither 'classic' nor 'consumer'"
            )

    @property
    def advertised_url(self) -> str:
        """This worker's web address as other workers reach it (never 0.0.0.0)."""
        if self.web_advertised_url:
            return self.web_advertised_url.rstrip("/")
        host = self.web_host
        if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - compared, not bound
            host = socket.gethostname()
        return f"http://{host}:{self.web_port}"

    def master(self) -> LocalMasterKey | None:
        """The configured master key (None: none; raises ConfigurationError when malformed)."""
        return master_key_from_env(
            {MASTER_KEY_ENV: self.master_key, MASTER_KEY_FILE_ENV: self.master_key_file}
        )

    @property
    def group_id(self) -> str:
        """The consumer group that owns the command partitions."""
        return self.app_id

    def topics(self, aggregate: str, *, durable_state: bool = False) -> AggregateTopics:
        """The topic layout of one aggregate under these settings (`durable_state`: its events
        topic keeps changes for `state_changes_retention_ms`; see kes.streams.config.durablestate).

        A replication setting left at 0 declares 1 here; `kes topics` resolves it from the
        cluster first (`kes.topology.admin.replication_for`), and a worker does not refuse topics
        whose replication differs from the declaration (it logs a warning).
        """
        factor = self.replication_factor or 1
        return AggregateTopics(
            aggregate,
            partitions=self.partitions,
            prefix=self.topic_prefix,
            replication_factor=factor,
            min_insync_replicas=self.min_insync_replicas or (2 if factor >= 3 else 1),
            reply_retention_ms=self.replies_retention_ms,
            command_retention_ms=self.commands_retention_ms,
            durable_state=durable_state,
            state_changes_retention_ms=self.state_changes_retention_ms,
        )

    def retention_warnings(self) -> list[str]:
        """What in these settings works against the idempotency horizon (empty when nothing)."""
        horizon_ms = self.outcome_horizon_s * 1000
        kept = self.commands_retention_ms
        if kept == -1 or not horizon_ms or kept >= horizon_ms:
            return []
        return [
            f"the commands topic keeps commands {kept / 3_600_000:g} h, less than the outcome "
            f"horizon ({horizon_ms / 3_600_000:g} h): a worker stopped longer than that loses "
            "commands before they apply (its partition stops, see `kes skip-deleted`) while "
            "clients may still retry; set KES_COMMANDS_RETENTION_MS >= "
            "KES_OUTCOME_HORIZON_SECONDS x 1000"
        ]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from environment variables, then explicit overrides (flags) on top.

        Client settings (SASL, TLS) come from `KES_KAFKA_*` variables, for example
        `KES_KAFKA_SECURITY_PROTOCOL=SASL_SSL` and `KES_KAFKA_SASL_MECHANISM=SCRAM-SHA-512`.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in _ENV.items():
            if env.get(var):
                values[name] = env[var]
        client = {
            var[len(_CLIENT_PREFIX) :].lower().replace("_", "."): value
            for var, value in env.items()
            if var.startswith(_CLIENT_PREFIX) and value
        }
        if client:
            values["client_config"] = client
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            for name in (
                "web_port",
                "batch_max_commands",
                "batch_max_ms",
                "partitions",
                "session_timeout_ms",
                "max_command_bytes",
                "max_record_bytes",
                "replication_factor",
                "min_insync_replicas",
                "outcome_horizon_s",
                "max_outcomes",
                "commands_retention_ms",
                "replies_retention_ms",
                "state_changes_retention_ms",
                "snapshot_every",
                "snapshot_max_tail",
            ):
                if name in values:
                    values[name] = int(values[name])
            if "data_dir" in values:
                values["data_dir"] = Path(values["data_dir"])
            if isinstance(values.get("take_over"), str):
                values["take_over"] = values["take_over"].lower() in ("1", "true", "yes")
            if "guarantee" in values:
                values["guarantee"] = Guarantee(values["guarantee"])
        except ValueError as exc:
            raise ConfigurationError(f"invalid setting: {exc}") from None
        return replace(cls(), **values)
