"""The customers example: personal data sealed by kes, and erased with `kes erase`.

A worker for it needs a master key (`KES_MASTER_KEY`, see docs/security.md).
"""

from typing import Any

from examples.customers.domain import customer
from examples.customers.projections import directory
from streams.behavior import Behavior
from streams.projection import AnyProjection

__all__ = ["BEHAVIORS", "PROJECTIONS", "customer"]

BEHAVIORS: list[Behavior[Any]] = [customer]
"""The `customer` aggregate."""

PROJECTIONS: list[AnyProjection] = [directory]
"""The "customer-directory" projection."""
