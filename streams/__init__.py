"""Behaviors, process managers, the worker, projections, clients and web views."""

from kes.streams.core.behavior import Behavior, DurableStateBehavior, EventSourcedBehavior
from kes.streams.core.decision import (
    Accepted,
    CommandContext,
    Decision,
    Failed,
    Rejected,
    Rejection,
    RejectionCode,
    reject,
)
from kes.streams.processes.process import (
    CancelTimer,
    End,
    ProcessContext,
    ProcessManager,
    Send,
    SetTimer,
    Step,
)

__all__ = [
    "Accepted",
    "Behavior",
    "CancelTimer",
    "CommandContext",
    "Decision",
    "DurableStateBehavior",
    "End",
    "EventSourcedBehavior",
    "Failed",
    "ProcessContext",
    "ProcessManager",
    "Rejected",
    "Rejection",
    "RejectionCode",
    "Send",
    "SetTimer",
    "Step",
    "reject",
]
