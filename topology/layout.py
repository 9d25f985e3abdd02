"""One aggregate's topics, declared in one place: names, partition counts and topic configs.

An aggregate named `account` owns six topics:

- `account.commands`: commands, keyed by entity id.
- `account.events`: the event log, the source of truth; compacted and kept forever. For a
  durable-state aggregate (`durable_state`), its state changes instead: one record per change,
  deleted after `state_changes_retention_ms`, as the snapshot changelog holds the state.
- `account.snapshots`: the snapshot changelog behind the worker's store; compacted.
- `account.replies`: command outcomes for waiting clients; short-lived.
- `account.dlq`: dead letters; kept until someone looks.
- `account.keys`: each entity's data key, wrapped (personal data, kes.streams.core.keyring);
  compacted, and an erased entity's record replaced by a marker that holds no key.

Commands, events and snapshots are co-partitioned (equal partition counts, all keyed by entity
id), so the worker that owns partition *p* of the commands finds the entity's events and
snapshot on partition *p* of the other two. Replies and dead letters use the same count, for
simplicity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kes.schemas.errors import ConfigurationError

__all__ = ["ERASURE_LAG_MS", "AggregateTopics", "TopicSpec"]

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_MAX_TOPIC_NAME = 249
_LONGEST_SUFFIX = ".snapshots"
_HOUR_MS = 60 * 60 * 1000
_WEEK_MS = 7 * 24 * _HOUR_MS

ERASURE_LAG_MS = 24 * _HOUR_MS
"""`max.compaction.lag.ms` of the keys topic: the longest an erased entity's wrapped key stays
on the topic's disks after `kes erase` replaced it (the broker's cleaner must be enabled)."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic as it should exist: its name, partition count, replication factor and configs.

    `config` holds only the keys kes declares; any other key on the cluster is left alone.
    """

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AggregateTopics:
    """The topic layout of one aggregate; validated on construction (raises ConfigurationError)."""

    name: str
    partitions: int = 12
    replication_factor: int = 1
    min_insync_replicas: int = 1
    reply_retention_ms: int = _HOUR_MS
    command_retention_ms: int = _WEEK_MS
    """How long commands stay on the commands topic (-1: forever); a worker stopped longer than
    this loses commands before they apply (its partition stops and names them)."""
    durable_state: bool = False
    """A durable-state aggregate: the snapshot changelog is its state of record, and its events
    topic holds each change for `state_changes_retention_ms` (cleanup.policy=delete)."""
    state_changes_retention_ms: int = _WEEK_MS
    """How long a durable-state aggregate's change records stay on its events topic (-1:
    forever); unused for an event-sourced aggregate, whose events are kept forever."""
    prefix: str = ""
    """Prepended to every topic name (environments, tenants, tests): `<prefix><name>.events`."""

    def __post_init__(self) -> None:
        if not self.name or not _NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"aggregate name {self.name!r} is not usable in topic names: "
                "use only letters, digits, '.', '_' and '-'"
            )
        if self.prefix and not _NAME.fullmatch(self.prefix):
            raise ConfigurationError(
                f"topic prefix {self.prefix!r}: use only letters, digits, '.', '_' and '-'"
            )
        if len(self.prefix + self.name) + len(_LONGEST_SUFFIX) > _MAX_TOPIC_NAME:
            raise ConfigurationError(
                f"aggregate name {self.name[:20]!r}... is too long: topic names are limited to "
                f"{_MAX_TOPIC_NAME} characters"
            )
        if self.partitions < 1:
            raise ConfigurationError(f"partitions must be at least 1, got {self.partitions}")
        if self.replication_factor < 1:
            raise ConfigurationError(
                f"replication_factor must be at least 1, got {self.replication_factor}"
            )
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ConfigurationError(
                f"min_insync_replicas must be between 1 and replication_factor "
                f"({self.replication_factor}), got {self.min_insync_replicas}"
            )
        if self.reply_retention_ms < 1:
            raise ConfigurationError(
                f"reply_retention_ms must be positive, got {self.reply_retention_ms}"
            )
        if self.state_changes_retention_ms < 1 and self.state_changes_retention_ms != -1:
            raise ConfigurationError(
                "state_changes_retention_ms must be positive or -1, got "
                f"{self.state_changes_retention_ms}"
            )
        if self.command_retention_ms < 1 and self.command_retention_ms != -1:
            raise ConfigurationError(
                f"command_retention_ms must be positive or -1, got {self.command_retention_ms}"
            )

    @property
    def commands(self) -> str:
        """Commands to the aggregate, keyed by entity id."""
        return f"{self.prefix}{self.name}.commands"

    @property
    def events(self) -> str:
        """The event log: compacted, never expired.

        Each event's key is unique (entity id + revision), so compaction keeps every event and
        drops only exact re-writes of a key and tombstones. A durable-state aggregate's changes
        (same keys) are deleted after `state_changes_retention_ms` instead.
        """
        return f"{self.prefix}{self.name}.events"

    @property
    def snapshots(self) -> str:
        """The snapshot changelog of the worker's store: compacted, latest snapshot per entity."""
        return f"{self.prefix}{self.name}.snapshots"

    @property
    def replies(self) -> str:
        """Command outcomes for waiting clients; deleted after `reply_retention_ms`."""
        return f"{self.prefix}{self.name}.replies"

    @property
    def dlq(self) -> str:
        """Dead letters: records kes could not process; never expired, kept until someone looks."""
        return f"{self.prefix}{self.name}.dlq"

    @property
    def keys(self) -> str:
        """Each entity's data key (wrapped), or its erasure marker: compacted, one record per
        entity, and cleaned within `ERASURE_LAG_MS` of an erasure (`max.compaction.lag.ms`)."""
        return f"{self.prefix}{self.name}.keys"

    def specs(self) -> list[TopicSpec]:
        """Every topic of the aggregate with its declared configs, commands first."""
        isr = {"min.insync.replicas": str(self.min_insync_replicas)}
        forever = {"retention.ms": "-1", "retention.bytes": "-1"}
        compacted = {"cleanup.policy": "compact", **forever, **isr}
        configs: list[tuple[str, dict[str, str]]] = [
            (
                self.commands,
                {"cleanup.policy": "delete", "retention.ms": str(self.command_retention_ms), **isr},
            ),
            (self.events, self._events_config(compacted, isr)),
            (self.snapshots, compacted),
            (
                self.replies,
                {"cleanup.policy": "delete", "retention.ms": str(self.reply_retention_ms), **isr},
            ),
            (self.dlq, {"cleanup.policy": "delete", **forever, **isr}),
            (self.keys, {**compacted, "max.compaction.lag.ms": str(ERASURE_LAG_MS)}),
        ]
        return [
            TopicSpec(name, self.partitions, self.replication_factor, dict(config))
            for name, config in configs
        ]

    def _events_config(self, compacted: dict[str, str], isr: dict[str, str]) -> dict[str, str]:
        """Compacted and kept forever (event sourcing), or deleted after the retention (durable
        state: the changelog holds the state, the changes are for readers)."""
        if not self.durable_state:
            return compacted
        retention = str(self.state_changes_retention_ms)
        return {"cleanup.policy": "delete", "retention.ms": retention, **isr}
