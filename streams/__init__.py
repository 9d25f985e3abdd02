"""Behaviors, process managers, the worker, projections, clients and web views."""

from streams.behavior import Behavior, DurableStateBehavior, EventSourcedBehavior
from streams.decision import (
    Accepted,
    CommandContext,
    Decision,
    Failed,
    Rejected,
    Rejection,
    RejectionCode,
    reject,
)
from streams.process import (
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
