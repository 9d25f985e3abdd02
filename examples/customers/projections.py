"""The customers' read side: a "customer-directory" projection (name and email per customer).

It holds personal data, so it drops a customer's row when the customer is erased (`kes erase`
publishes `kes.v1.EntityErased`, the erased entity's last event).
"""

from __future__ import annotations

import json

from kes.schemas.customers.v1 import customers_pb2
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.schemas.kes.v1.personal_pb2 import EntityErased
from kes.streams.projections import Projection, RowWriter

__all__ = ["directory"]

directory = Projection("customer-directory", ["customer"])
"""Name and email per customer id."""


def _row(rows: RowWriter, customer_id: str) -> dict[str, str]:
    data = rows.get(customer_id)
    return {} if data is None else dict(json.loads(data))


@directory.on(customers_pb2.CustomerRegistered)
def registered(
    event: EventEnvelope, payload: customers_pb2.CustomerRegistered, rows: RowWriter
) -> None:
    """A new row."""
    row = {"name": payload.name, "email": payload.email, "tier": payload.tier}
    rows.put(event.entity_id, json.dumps(row).encode())


@directory.on(customers_pb2.EmailChanged)
def email_changed(
    event: EventEnvelope, payload: customers_pb2.EmailChanged, rows: RowWriter
) -> None:
    """The row's new email."""
    row = _row(rows, event.entity_id)
    row["email"] = payload.email
    rows.put(event.entity_id, json.dumps(row).encode())


@directory.on(EntityErased)
def erased(event: EventEnvelope, payload: EntityErased, rows: RowWriter) -> None:
    """The customer was erased: its row goes."""
    rows.delete(event.entity_id)
