"""The bank's transfers with a short credit deadline (3 s, grace 1 s), for the timer tests."""

from typing import Any

from examples.bank.domain import account
from examples.bank.transfers import transfer, transfer_process
from streams.behavior import Behavior
from streams.process import ProcessManager

BEHAVIORS: list[Behavior[Any]] = [account, transfer]
PROCESSES: list[ProcessManager[Any]] = [transfer_process(deadline_ms=3_000, grace_ms=1_000)]
