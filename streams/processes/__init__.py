"""Process managers (sagas): events in, commands out. The pure definitions and their test kit here;
the runner (kes.streams.processes.runner) reads events and replies and writes commands,
process state and offsets in one transaction.
"""

from kes.streams.processes.process import (
    CancelTimer,
    End,
    ProcessContext,
    ProcessManager,
    Send,
    SetTimer,
    Step,
    by_correlation,
    by_entity,
    by_metadata,
)
from kes.streams.processes.testkit import ProcessScenario, given_process

__all__ = [
    "CancelTimer",
    "End",
    "ProcessContext",
    "ProcessManager",
    "ProcessScenario",
    "Send",
    "SetTimer",
    "Step",
    "by_correlation",
    "by_entity",
    "by_metadata",
    "given_process",
]
