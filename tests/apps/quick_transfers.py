"""The bank's transfers with a short credit deadline (3 s, grace 1 s), for the timer tests."""

from typing import Any

from kes.examples.bank.domain import account
from kes.examples.bank.transfers import transfer, transfer_process
from kes.streams.core.behavior import Behavior
from kes.streams.processes.process import ProcessManager

BEHAVIORS: list[Behavior[Any]] = [account, transfer]
PROCESSES: list[ProcessManager[Any]] = [transfer_process(deadline_ms=3_000, grace_ms=1_000)]
