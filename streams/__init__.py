"""Behaviors, the worker, projections, clients and web views."""

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

__all__ = [
    "Accepted",
    "Behavior",
    "CommandContext",
    "Decision",
    "DurableStateBehavior",
    "EventSourcedBehavior",
    "Failed",
    "Rejected",
    "Rejection",
    "RejectionCode",
    "reject",
]
