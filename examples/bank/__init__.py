"""The bank example: one event-sourced `account` behavior; a worker loads `BEHAVIORS` from here.

`PROJECTIONS` holds its read side, for `kes projection run kes.examples.bank <name>`.
"""

from typing import Any

from kes.examples.bank.domain import account
from kes.examples.bank.projections import balances, balances_table, large_transactions_reactor
from kes.streams.core import Behavior
from kes.streams.projections import AnyProjection

__all__ = ["BEHAVIORS", "PROJECTIONS", "account"]

BEHAVIORS: list[Behavior[Any]] = [account]
"""Every behavior of this example, for a worker started with `--app kes.examples.bank`."""

PROJECTIONS: list[AnyProjection] = [balances, balances_table, large_transactions_reactor]
"""The read side: the "account-balances" projection (rows), "account-balances-sql" (a PostgreSQL
table, where KES_POSTGRES_DSN is set) and the "large-transactions" reactor."""
