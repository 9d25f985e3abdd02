"""The difference between a declared topic layout and the cluster, as data and as text.

`kes.topology.admin` fills these from the cluster; nothing here talks to Kafka. A partition-count
mismatch is only ever reported: changing the count of a keyed topic moves entities to other
partitions, which breaks the co-partitioning of commands, events and snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from kes.topology.layout import TopicSpec

__all__ = ["ConfigDrift", "Plan", "TopicCheck", "TopicState", "TopicStatus"]

_PARTITION_HINT = (
    "kes never changes a partition count (entities would move to other partitions): "
    "recreate the topic, or declare the count it has"
)


class TopicStatus(StrEnum):
    """How one topic on the cluster compares with its declaration."""

    OK = "OK"
    """The topic exists as declared."""
    MISSING = "MISSING"
    """The topic does not exist; `apply` creates it."""
    CONFIG_DRIFT = "CONFIG_DRIFT"
    """A declared config key has another value; `apply` sets it."""
    PARTITION_MISMATCH = "PARTITION_MISMATCH"
    """The partition count differs; only reported, never changed."""
    REPLICATION_MISMATCH = "REPLICATION_MISMATCH"
    """The replication factor differs; only reported, never changed."""


@dataclass(frozen=True)
class ConfigDrift:
    """A declared config key whose value on the cluster differs (`actual` None: not reported)."""

    key: str
    wanted: str
    actual: str | None

    def __str__(self) -> str:
        return f"{self.key}={self.actual} (wanted {self.wanted})"


@dataclass(frozen=True)
class TopicState:
    """A topic as the cluster has it; `config` holds the declared keys' actual values only."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str | None] = field(default_factory=dict)
    leaderless: tuple[int, ...] = ()


@dataclass(frozen=True)
class TopicCheck:
    """One declared topic next to what the cluster has (`actual` None: the topic is missing)."""

    spec: TopicSpec
    actual: TopicState | None

    @property
    def drift(self) -> tuple[ConfigDrift, ...]:
        """The declared config keys whose actual value differs, in declaration order."""
        if self.actual is None:
            return ()
        return tuple(
            ConfigDrift(key, wanted, self.actual.config.get(key))
            for key, wanted in self.spec.config.items()
            if self.actual.config.get(key) != wanted
        )

    @property
    def statuses(self) -> tuple[TopicStatus, ...]:
        """Every way the topic differs from its declaration; `(OK,)` when it does not."""
        if self.actual is None:
            return (TopicStatus.MISSING,)
        found = []
        if self.actual.partitions != self.spec.partitions:
            found.append(TopicStatus.PARTITION_MISMATCH)
        if self.actual.replication_factor != self.spec.replication_factor:
            found.append(TopicStatus.REPLICATION_MISMATCH)
        if self.drift:
            found.append(TopicStatus.CONFIG_DRIFT)
        return tuple(found) or (TopicStatus.OK,)

    @property
    def blocking(self) -> list[str]:
        """The mismatches a worker must not run with: the partition count (entities would move
        between partitions) and the cleanup policy (an event-sourced aggregate's events must
        never be deleted; a durable-state one's are declared `delete`, so that is what is
        checked for them)."""
        return [
            line
            for line in self.problems
            if "partitions, declared" in line or ": cleanup.policy=" in line
        ]

    @property
    def problems(self) -> list[str]:
        """One line per mismatch, naming the topic, what is wanted and what is there."""
        actual, spec = self.actual, self.spec
        if actual is None:
            return []
        lines = []
        if actual.partitions != spec.partitions:
            lines.append(
                f"{spec.name}: has {actual.partitions} partitions, declared {spec.partitions}"
            )
        if actual.replication_factor != spec.replication_factor:
            lines.append(
                f"{spec.name}: replication factor is {actual.replication_factor}, "
                f"declared {spec.replication_factor}"
            )
        lines.extend(f"{spec.name}: {d}" for d in self.drift)
        return lines


@dataclass(frozen=True)
class Plan:
    """The layout compared with the cluster, and what `apply` did (`created`, `altered`)."""

    checks: tuple[TopicCheck, ...]
    created: tuple[str, ...] = ()
    altered: tuple[tuple[str, ConfigDrift], ...] = ()

    @property
    def to_create(self) -> list[TopicSpec]:
        """The declared topics that do not exist."""
        return [c.spec for c in self.checks if c.actual is None]

    @property
    def problems(self) -> list[str]:
        """Every mismatch of an existing topic, one human line each (missing topics excluded)."""
        return [line for check in self.checks for line in check.problems]

    @property
    def blocking(self) -> list[str]:
        """The mismatches of existing topics a worker must not run with (see TopicCheck)."""
        return [line for check in self.checks for line in check.blocking]

    @property
    def ok(self) -> bool:
        """True when every declared topic exists exactly as declared."""
        return all(c.statuses == (TopicStatus.OK,) for c in self.checks)

    def render(self) -> str:
        """A table of the topics, then what was done and what is wrong, for the CLI."""
        rows = [("TOPIC", "PARTITIONS", "RF", "STATUS")]
        for check in self.checks:
            spec, actual = check.spec, check.actual
            parts = _cell(actual.partitions if actual else None, spec.partitions)
            rf = _cell(actual.replication_factor if actual else None, spec.replication_factor)
            rows.append((spec.name, parts, rf, ", ".join(check.statuses)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        lines.extend(f"created {name}" for name in self.created)
        lines.extend(
            f"changed {name}: {d.key} {d.actual} -> {d.wanted}" for name, d in self.altered
        )
        problems = self.problems
        lines.extend(f"problem: {line}" for line in problems)
        if any(TopicStatus.PARTITION_MISMATCH in c.statuses for c in self.checks):
            lines.append(f"note: {_PARTITION_HINT}")
        missing = len(self.to_create)
        if missing:
            lines.append(f"{missing} to create, run `kes topics apply`")
        elif not problems:
            lines.append(f"all {len(self.checks)} topics as declared")
        return "\n".join(lines)


def _cell(actual: int | None, wanted: int) -> str:
    if actual is None:
        return f"- (want {wanted})"
    return str(actual) if actual == wanted else f"{actual} (want {wanted})"
