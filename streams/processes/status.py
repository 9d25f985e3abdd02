"""`kes process status`: every process's record, read back from its changelog.

The changelog (`<prefix><name>.state`) is the truth a runner restores from, so the status needs
no runner: it reads the committed records (the latest per process id) up to the end offsets
taken at start. A process is *stuck* when it failed, or when it is running and has not moved
for `stuck_after_ms` with no timer still ahead of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import text_format

from kes.schemas.codec import unpack
from kes.schemas.kes.v1.processes_pb2 import FAILED, RUNNING, ProcessRecord, ProcessStatus
from kes.streams.cycle.records import CHECKPOINT_KEY
from kes.streams.kafka.readback import read_topic
from kes.streams.processes.topics import ProcessTopics

__all__ = ["STATUSES", "ProcessSummary", "describe", "is_stuck", "read_processes", "summarize"]


def read_processes(
    topics: ProcessTopics, client_config: Mapping[str, Any]
) -> dict[str, ProcessRecord]:
    """The latest committed record of every process, by process id."""
    found: dict[str, ProcessRecord] = {}
    for _, key, value in read_topic(topics.state, topics.partitions, client_config):
        if key is None or key == CHECKPOINT_KEY or not value:
            continue
        found[key.decode()] = ProcessRecord.FromString(value)
    return found


def is_stuck(record: ProcessRecord, now_ms: int, stuck_after_ms: int) -> bool:
    """Failed, or running without progress for `stuck_after_ms` and no timer still to come."""
    if record.status == FAILED:
        return True
    if record.status != RUNNING:
        return False
    idle = now_ms - max(record.updated_ms, record.started_ms) > stuck_after_ms
    waiting = any(t.due_ms + stuck_after_ms > now_ms for t in record.timers)
    return idle and not waiting


@dataclass
class ProcessSummary:
    """Counts over every process of one process manager."""

    by_status: Counter[str] = field(default_factory=Counter)
    timers: int = 0
    stuck: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Processes recorded."""
        return sum(self.by_status.values())

    def render(self, name: str) -> str:
        """One line for a person."""
        counts = ", ".join(f"{self.by_status[s]} {s}" for s in STATUSES)
        return (
            f"{name}: {self.total} processes ({counts}); {self.timers} timers pending; "
            f"{len(self.stuck)} stuck"
        )


STATUSES = ("RUNNING", "COMPLETED", "COMPENSATED", "FAILED")
"""The statuses a process can be in, in the order reports list them."""


def summarize(
    records: Mapping[str, ProcessRecord], now_ms: int, stuck_after_ms: int
) -> ProcessSummary:
    """Counts by status, pending timers, and the ids of stuck processes."""
    summary = ProcessSummary()
    for process_id, record in records.items():
        summary.by_status[ProcessStatus.Name(record.status)] += 1
        summary.timers += len(record.timers) if record.status == RUNNING else 0
        if is_stuck(record, now_ms, stuck_after_ms):
            summary.stuck.append(process_id)
    summary.stuck.sort()
    return summary


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def describe(record: ProcessRecord) -> str:
    """Several lines about one process: status, times, steps, timers, state, error."""
    lines = [
        f"process {record.process} {record.process_id!r}: {ProcessStatus.Name(record.status)}",
        f"  started {_when(record.started_ms)}, last input {_when(record.updated_ms)}"
        f" ({record.last_input}), ended {_when(record.ended_ms)}",
        f"  inputs {record.inputs}, late inputs {record.late_inputs}",
    ]
    for step in record.steps:
        answered = "answered" if step.answered else "waiting"
        lines.append(
            f"  step {step.name}: {step.command_type} to {step.aggregate}/{step.entity_id}, "
            f"sent {_when(step.sent_ms)}, {answered}"
        )
    for timer in record.timers:
        lines.append(f"  timer {timer.name}: due {_when(timer.due_ms)}")
    try:
        state = text_format.MessageToString(unpack(record.state), as_one_line=True)
    except Exception as exc:  # an unknown state type: show the type, not a crash
        state = f"({record.state.type_url}: {exc})"
    lines.append(f"  state: {state}")
    if record.error:
        lines.append(f"  error: {record.error}")
    return "\n".join(lines)
