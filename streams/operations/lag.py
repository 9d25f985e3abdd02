"""Consumer lag as Kafka reports it: committed offsets of a group against the log end of a topic.

The figures come from Kafka, not from counters a worker keeps: a group's committed offsets (what
`kafka-consumer-groups --describe` shows as CURRENT-OFFSET) and each partition's log end offset,
the high watermark (LOG-END-OFFSET). `lag = log_end - committed`, per partition; a partition with
no committed offset has no lag figure (the tool prints `-`). This module is the pure part: readings
in, figures out; kes.streams.operations.groupoffsets reads them from the cluster.

Rates need two readings over time, which `LagHistory` keeps: the consume rate is how fast the
committed offset moved, the produce rate how fast the log end moved, both in offsets per second
over the last `rate_window` seconds. The time to catch up is `lag / (consume - produce)`: zero when
there is no lag, None (never, at this pace) when the group does not gain on the producers.

**Transactions and control records.** Lag counts *offsets*, not records. A transactional producer
(the worker writing events, snapshots, replies and dead letters) ends every transaction with a
commit or abort marker, a control record that takes one offset in each partition the transaction
wrote to and is never delivered to consumers; aborted records take offsets too. So:

- The log end includes the markers: after a transaction, the last offset is a marker, one past the
  last readable record.
- A consumer that commits its *position* (the Java consumer, librdkafka's `commit()` without
  arguments, a transaction's `send_offsets_to_transaction` of the position) moves past the marker:
  an idle group shows lag 0. One that commits `last record offset + 1` stops before the trailing
  marker and shows lag 1 per partition while idle. Both were checked on the real broker
  (tests/integration/test_lag.py); `kafka-consumer-groups` shows the same numbers either way.
- While catching up, lag over-counts readable records by the markers (and aborted records) in
  between, and rates count markers as offsets.
- The command processor's group reads the commands topic. Clients usually write it without
  transactions: no markers then, and its lag is the number of commands not yet applied. Commands
  a process runner sends, or a worker forwards, are written in transactions: the worker commits
  `last command offset + 1`, so a partition they wrote to shows lag 1 while idle (the trailing
  marker), and aborted ones count until later commands pass them. Its offsets are committed
  inside the worker's transactions, so they move only when a batch's events are committed, never
  ahead of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from kes.streams.config.apps import import_app, load_behaviors
from kes.streams.config.settings import Settings
from kes.streams.projections.projection import Reactor, load_projections

__all__ = [
    "GroupLag",
    "GroupReading",
    "LagHistory",
    "LagReport",
    "LagTarget",
    "Owner",
    "PartitionLag",
    "PartitionReading",
    "app_targets",
    "figures",
]


@dataclass(frozen=True)
class LagTarget:
    """A consumer group reading a topic: the pair lag is measured for."""

    group: str
    topic: str
    kind: str = "commands"
    """What the group is: "commands" (the command processor), "projection", or another label."""
    dead_letters: str | None = None
    """The dead-letter topic of what this group processes, if it has one."""

    @property
    def key(self) -> str:
        """`group/topic`: unique per target."""
        return f"{self.group}/{self.topic}"


def app_targets(app: str | ModuleType, settings: Settings) -> list[LagTarget]:
    """The groups of an app: the command processor's group (`settings.group_id`) on each
    aggregate's commands topic, then each projection's and reactor's group on each events
    topic it reads (the module's `PROJECTIONS`, if it has one)."""
    module = import_app(app) if isinstance(app, str) else app
    targets = []
    for behavior in load_behaviors(module):
        topics = settings.topics(behavior.name)
        targets.append(LagTarget(settings.group_id, topics.commands, "commands", topics.dlq))
    projections = load_projections(module) if getattr(module, "PROJECTIONS", None) else []
    prefix = settings.topic_prefix
    for projection in projections:
        kind = "reactor" if isinstance(projection, Reactor) else "projection"
        for aggregate in projection.aggregates:
            targets.append(
                LagTarget(
                    projection.group_id(prefix),
                    settings.topics(aggregate).events,
                    kind,
                    projection.dlq_topic(prefix),
                )
            )
    return targets


@dataclass(frozen=True)
class Owner:
    """The group member a partition is assigned to, as the group coordinator describes it."""

    consumer_id: str
    host: str
    client_id: str
    worker: str | None = None
    """The kes worker's web address: a worker's consumer names itself by it (its client id)."""


@dataclass(frozen=True)
class PartitionReading:
    """One partition's offsets at one moment."""

    partition: int
    committed: int | None
    """The group's committed offset; None when the group never committed one."""
    log_end: int
    """The high watermark: one past the last offset written, control records included."""
    owner: Owner | None = None


@dataclass(frozen=True)
class GroupReading:
    """A target's offsets at one moment (`at`, seconds since the epoch)."""

    target: LagTarget
    at: float
    partitions: tuple[PartitionReading, ...] = ()
    state: str = ""
    """The group's state as the coordinator reports it (Stable, Empty, Dead, ...)."""
    error: str | None = None
    """Why the offsets could not be read (the partitions are then empty)."""


@dataclass(frozen=True)
class PartitionLag:
    """One partition's figures."""

    partition: int
    committed: int | None
    log_end: int
    lag: int | None
    consume_rate: float | None
    """Committed offsets per second over the rate window; None without an earlier reading."""
    produce_rate: float | None
    """Log-end offsets per second over the rate window."""
    eta_seconds: float | None
    owner: Owner | None = None


@dataclass(frozen=True)
class GroupLag:
    """A target's figures per partition and in total."""

    target: LagTarget
    at: float
    partitions: tuple[PartitionLag, ...]
    lag: int | None
    """Sum of the partitions' lags; None when no partition has a committed offset."""
    consume_rate: float | None
    produce_rate: float | None
    eta_seconds: float | None
    state: str = ""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the body of one group in `GET /lag`."""
        return {
            "group": self.target.group,
            "topic": self.target.topic,
            "kind": self.target.kind,
            "state": self.state,
            "error": self.error,
            "at": self.at,
            "lag": self.lag,
            "consume_rate": self.consume_rate,
            "produce_rate": self.produce_rate,
            "eta_seconds": self.eta_seconds,
            "partitions": [
                {
                    "partition": p.partition,
                    "committed": p.committed,
                    "log_end": p.log_end,
                    "lag": p.lag,
                    "consume_rate": p.consume_rate,
                    "produce_rate": p.produce_rate,
                    "eta_seconds": p.eta_seconds,
                    "owner": None if p.owner is None else _owner_json(p.owner),
                }
                for p in self.partitions
            ],
        }


def _owner_json(owner: Owner) -> dict[str, Any]:
    return {
        "consumer_id": owner.consumer_id,
        "host": owner.host,
        "client_id": owner.client_id,
        "worker": owner.worker,
    }


@dataclass(frozen=True)
class LagReport:
    """Every target's figures from one round of readings."""

    at: float
    groups: tuple[GroupLag, ...]

    def to_json(self) -> dict[str, Any]:
        """The body of `GET /lag` (and `kes lag --json`)."""
        return {"at": self.at, "groups": [g.to_json() for g in self.groups]}


def _rate(now: int | None, then: int | None, seconds: float) -> float | None:
    if now is None or then is None or seconds <= 0:
        return None
    return max(0, now - then) / seconds


def _eta(lag: int | None, consume: float | None, produce: float | None) -> float | None:
    if lag is None:
        return None
    if lag == 0:
        return 0.0
    if consume is None:
        return None
    net = consume - (produce or 0.0)
    return lag / net if net > 0 else None


def _sum(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def figures(now: GroupReading, earlier: Sequence[GroupReading] = ()) -> GroupLag:
    """Lag, rates and time to catch up of `now`.

    A partition's rates compare it with its oldest reading in `earlier` (oldest first) that has
    the figure: the consume rate needs a committed offset then and now.
    """
    rows = []
    for p in now.partitions:
        lag = None if p.committed is None else max(0, p.log_end - p.committed)
        consume = produce = None
        for reading in earlier:
            old = next((o for o in reading.partitions if o.partition == p.partition), None)
            if old is None:
                continue
            seconds = now.at - reading.at
            if produce is None:
                produce = _rate(p.log_end, old.log_end, seconds)
            if consume is None:
                consume = _rate(p.committed, old.committed, seconds)
        rows.append(
            PartitionLag(
                p.partition,
                p.committed,
                p.log_end,
                lag,
                consume,
                produce,
                _eta(lag, consume, produce),
                p.owner,
            )
        )
    known = [r.lag for r in rows if r.lag is not None]
    total = sum(known) if known else None
    consume = _sum(r.consume_rate for r in rows)
    produce = _sum(r.produce_rate for r in rows)
    return GroupLag(
        now.target, now.at, tuple(rows), total, consume, produce,
        _eta(total, consume, produce), now.state, now.error,
    )  # fmt: skip


@dataclass
class LagHistory:
    """Readings of each target over the last `keep` seconds: rates, and series for charts.

    Rates compare the newest reading with the oldest ones not older than `rate_window` seconds
    (or with the last one, if all are older); the caller decides how often to read.
    """

    rate_window: float = 30.0
    keep: float = 600.0
    _readings: dict[str, deque[GroupReading]] = field(default_factory=dict)
    _series: dict[str, deque[GroupLag]] = field(default_factory=dict)

    def add(self, readings: Sequence[GroupReading]) -> LagReport:
        """Record a round of readings; returns their figures."""
        groups = []
        at = max((r.at for r in readings), default=0.0)
        for reading in readings:
            key = reading.target.key
            past = self._readings.setdefault(key, deque())
            while past and past[0].at < reading.at - self.keep:
                past.popleft()
            recent = [r for r in past if r.at >= reading.at - self.rate_window] or list(past)[-1:]
            lag = figures(reading, recent if reading.error is None else ())
            if reading.error is None:
                past.append(reading)
                series = self._series.setdefault(key, deque())
                series.append(lag)
                while series and series[0].at < reading.at - self.keep:
                    series.popleft()
            groups.append(lag)
        return LagReport(at, tuple(groups))

    def series(self, target: LagTarget, seconds: float | None = None) -> list[GroupLag]:
        """The figures of `target` over the last `seconds` (all kept ones by default)."""
        points = list(self._series.get(target.key, ()))
        if seconds is not None and points:
            points = [p for p in points if p.at >= points[-1].at - seconds]
        return points
