"""The bank example: one event-sourced `account` behavior; a worker loads `BEHAVIORS` from here."""

from typing import Any

from examples.bank.domain import account
from streams.behavior import Behavior

__all__ = ["BEHAVIORS", "account"]

BEHAVIORS: list[Behavior[Any]] = [account]
"""Every behavior of this example, for a worker started with `--app examples.bank`."""
