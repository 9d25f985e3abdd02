"""The bank's customer profiles: a durable-state aggregate, `profile`, and a projection of it.

An app module of its own (`kes worker kes.examples.bank.profiles`), as `kes.examples.bank.transfers`
is, so the topic set of `kes.examples.bank` stays as deployments have it. A profile keeps only its
latest state (kes.streams.config.durablestate): the snapshot changelog holds it, and each accepted
command publishes one change record (the new `Profile`) on `profile.events`, deleted after
`KES_STATE_CHANGES_RETENTION_MS`.

Rules: `SetProfile` needs a name (at most 200 characters) and a valid email; `ChangeEmail` needs
a profile set before and a valid email other than the current one. `changes` counts the
accepted commands, so a command applied twice, or lost, would show.

`profile-directory` keeps one row per customer: the email, the revision it reflects and how many
change records it applied (`seen`, which equals the revision while no change has expired
before the projection read it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kes.schemas.bank.v1 import bank_pb2
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
from kes.streams.core import Behavior, CommandContext, DurableStateBehavior, Rejection, reject
from kes.streams.projections import AnyProjection, Projection, RowWriter

__all__ = [
    "BEHAVIORS",
    "MAX_NAME",
    "PROJECTIONS",
    "DirectoryRow",
    "directory",
    "email_problem",
    "profile",
]

MAX_NAME = 200
"""The longest name a profile takes, in characters."""

profile: DurableStateBehavior[bank_pb2.Profile] = DurableStateBehavior(
    "profile",
    bank_pb2.Profile,
    initial_state=lambda entity_id: bank_pb2.Profile(customer_id=entity_id),
)
"""The `profile` aggregate: SetProfile and ChangeEmail; entity id = customer id."""


def email_problem(email: str) -> str | None:
    """Why `email` is not usable (None: it is): one `@` with text on both sides, a dot in the
    domain, no spaces, at most 254 characters."""
    local, at, domain = email.partition("@")
    if not at or not local or "@" in domain or "." not in domain.strip("."):
        return f"email {email!r} is not an address"
    if len(email) > 254 or any(c.isspace() for c in email):
        return "email is longer than 254 characters or has spaces"
    return None


@profile.command(bank_pb2.SetProfile)
def set_profile(
    state: bank_pb2.Profile, cmd: bank_pb2.SetProfile, ctx: CommandContext
) -> bank_pb2.Profile | Rejection:
    """Set name and email at once (the first command of a profile, or a later full update)."""
    name = cmd.name.strip()
    if not name or len(name) > MAX_NAME:
        return reject(f"name must have 1 to {MAX_NAME} characters")
    problem = email_problem(cmd.email)
    if problem:
        return reject(problem)
    state.name, state.email = name, cmd.email
    state.changes += 1
    return state


@profile.command(bank_pb2.ChangeEmail)
def change_email(
    state: bank_pb2.Profile, cmd: bank_pb2.ChangeEmail, ctx: CommandContext
) -> bank_pb2.Profile | Rejection:
    """Change the email of a profile that was set."""
    if not state.name:
        return reject("no profile: send SetProfile first")
    problem = email_problem(cmd.email)
    if problem:
        return reject(problem)
    if cmd.email == state.email:
        return reject("email unchanged")
    state.email = cmd.email
    state.changes += 1
    return state


@dataclass(frozen=True)
class DirectoryRow:
    """One customer in the `profile-directory` read model."""

    email: str
    revision: int
    seen: int

    def encode(self) -> bytes:
        """The row as compact JSON."""
        return json.dumps(
            {"email": self.email, "revision": self.revision, "seen": self.seen},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> DirectoryRow:
        """The inverse of encode."""
        return cls(**json.loads(data))


directory = Projection("profile-directory", ["profile"])
"""Email and revision per customer, from the profile's change records."""


@directory.on(bank_pb2.Profile)
def changed(event: EventEnvelope, payload: bank_pb2.Profile, rows: RowWriter) -> None:
    """A change: the new email and revision, one more change seen."""
    row = rows.get_as(event.entity_id, DirectoryRow.decode)
    seen = 1 if row is None else row.seen + 1
    new = DirectoryRow(payload.email, event.revision, seen)
    rows.put_as(event.entity_id, new, DirectoryRow.encode)


BEHAVIORS: list[Behavior[Any]] = [profile]
"""For `kes worker kes.examples.bank.profiles` and `kes topics apply kes.examples.bank.profiles`."""

PROJECTIONS: list[AnyProjection] = [directory]
"""For `kes projection run kes.examples.bank.profiles profile-directory`."""
