"""The customers example: personal data sealed by kes, and erased with `kes erase`.

A worker for it needs a master key (`KES_MASTER_KEY`, see docs/security.md).
"""

from typing import Any

from kes.examples.customers.domain import customer
from kes.examples.customers.projections import directory
from kes.streams.core import Behavior
from kes.streams.projections import AnyProjection

__all__ = ["BEHAVIORS", "PROJECTIONS", "customer"]

BEHAVIORS: list[Behavior[Any]] = [customer]
"""The `customer` aggregate."""

PROJECTIONS: list[AnyProjection] = [directory]
"""The "customer-directory" projection."""
