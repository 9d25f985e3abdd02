"""Customers: an aggregate whose name and email are personal data, marked in the .proto.

`schemas/customers/v1/customers.proto` marks them `[(kes.v1.personal) = true]`, so kes seals
them with each customer's data key in every event, snapshot and reply, and `kes erase` forgets
a customer. The behavior itself sees plain messages, as any behavior does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from google.protobuf.message import Message

from kes.schemas.customers.v1 import customers_pb2
from kes.streams.core import CommandContext, EventSourcedBehavior, Rejection, reject

__all__ = ["customer"]

_Outcome: TypeAlias = Sequence[Message] | Rejection

customer: EventSourcedBehavior[customers_pb2.Customer] = EventSourcedBehavior(
    "customer", customers_pb2.Customer
)
"""The `customer` aggregate: RegisterCustomer and ChangeEmail."""


@customer.command(customers_pb2.RegisterCustomer)
def register(
    state: customers_pb2.Customer, cmd: customers_pb2.RegisterCustomer, ctx: CommandContext
) -> _Outcome:
    """Register a customer once, with a name and an email."""
    if state.registered:
        return reject("customer already registered")
    if not cmd.name or "@" not in cmd.email:
        return reject("a customer needs a name and an email address")
    return [customers_pb2.CustomerRegistered(name=cmd.name, email=cmd.email, tier=cmd.tier)]


@customer.command(customers_pb2.ChangeEmail)
def change_email(
    state: customers_pb2.Customer, cmd: customers_pb2.ChangeEmail, ctx: CommandContext
) -> _Outcome:
    """Change a registered customer's email."""
    if not state.registered:
        return reject("customer not registered")
    if "@" not in cmd.email:
        return reject("not an email address")
    return [customers_pb2.EmailChanged(email=cmd.email)]


@customer.event(customers_pb2.CustomerRegistered)
def registered(
    state: customers_pb2.Customer, evt: customers_pb2.CustomerRegistered
) -> customers_pb2.Customer:
    """The customer exists with its name, email and tier."""
    state.name, state.email, state.tier, state.registered = evt.name, evt.email, evt.tier, True
    return state


@customer.event(customers_pb2.EmailChanged)
def email_changed(
    state: customers_pb2.Customer, evt: customers_pb2.EmailChanged
) -> customers_pb2.Customer:
    """The new email."""
    state.email = evt.email
    state.email_changes += 1
    return state
