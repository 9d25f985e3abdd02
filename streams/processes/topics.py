"""A process manager's topics and consumer group, declared in one place.

A process named `transfer-money` (topic prefix `p`) owns:

- `p.transfer-money.inbox`: the events and rejections routed to it, keyed by process id (so all
  inputs of one process meet on one partition); kept as long as commands are;
- `p.transfer-money.state`: the compacted changelog of its process records, co-partitioned with
  the inbox, with a checkpoint record per partition (as a worker's snapshot changelog).

Its consumer group is `<prefix><name>`; it reads the events topics of the process's aggregates
and the replies topics of the aggregates it commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kes.streams.config.settings import Settings
from kes.streams.processes.process import ProcessManager
from kes.topology.layout import TopicSpec

__all__ = ["ProcessTopics"]


@dataclass(frozen=True)
class ProcessTopics:
    """Names, partition count and sources of one process manager under some settings."""

    group: str
    inbox: str
    state: str
    partitions: int
    events: tuple[tuple[str, str], ...]
    """(events topic, aggregate) of each aggregate the process reads."""
    replies: tuple[tuple[str, str], ...]
    """(replies topic, aggregate) of each aggregate the process commands."""
    replication_factor: int = 1
    min_insync_replicas: int = 1
    inbox_retention_ms: int = 7 * 24 * 3600 * 1000

    @classmethod
    def of(cls, process: ProcessManager[Any], settings: Settings) -> ProcessTopics:
        """The layout of `process` under `settings` (prefix, partitions, replication)."""
        group = process.group_id(settings.topic_prefix)
        layout = settings.topics(process.aggregates[0])
        return cls(
            group=group,
            inbox=f"{group}.inbox",
            state=f"{group}.state",
            partitions=settings.partitions,
            events=tuple((settings.topics(a).events, a) for a in process.aggregates),
            replies=tuple((settings.topics(a).replies, a) for a in process.sends_to),
            replication_factor=layout.replication_factor,
            min_insync_replicas=layout.min_insync_replicas,
            inbox_retention_ms=layout.command_retention_ms,
        )

    def sources(self) -> dict[str, tuple[str, str]]:
        """Each source topic: ("event" or "reply", its aggregate)."""
        found = {topic: ("event", aggregate) for topic, aggregate in self.events}
        found.update({topic: ("reply", aggregate) for topic, aggregate in self.replies})
        return found

    def specs(self) -> list[TopicSpec]:
        """The inbox and the state changelog, as the runner creates them when missing."""
        isr = {"min.insync.replicas": str(self.min_insync_replicas)}
        inbox = {"cleanup.policy": "delete", "retention.ms": str(self.inbox_retention_ms), **isr}
        state = {"cleanup.policy": "compact", "retention.ms": "-1", **isr}
        factor = self.replication_factor
        return [
            TopicSpec(self.inbox, self.partitions, factor, inbox),
            TopicSpec(self.state, self.partitions, factor, state),
        ]
