"""Personal data in the user's messages: which fields are marked, and their sealed form.

A field is personal when the user's .proto marks it (`string email = 2 [(kes.v1.personal) =
true];`, the option is in `schemas/kes/v1/personal.proto`) or when `mark_personal` lists it.
Marks on the fields of a singular sub-message count too; a repeated or map field of messages
with marked fields inside must itself be marked (ConfigurationError otherwise).

Sealing a message splits it in two, per field, not the whole payload: consumers without the key
still read everything that is not personal (amounts, types, revisions), and a message type with
no marked field costs nothing (its plan is empty and is looked up once per type):
 1. the public part: a copy with the personal fields cleared (it goes where the message went);
 2. the private part: a message of the same type holding only the personal fields, serialized
    and encrypted with AES-256-GCM under the entity's data key, with a fresh 12-byte nonce and
    `<entity id> NUL <type name>` as associated data, so a sealed part cannot be moved to
    another entity or type (`kes.v1.Sealed`).
Opening appends the decrypted private bytes to the public message's bytes: protobuf's binary
merge of two messages of one type is their concatenation, so no type lookup is needed.

Pure: no Kafka here. Raises `DecodeError(UNDECODABLE)` for a sealed part that does not decrypt.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from kes.schemas.errors import ConfigurationError, DeadLetterReason, DecodeError
from kes.schemas.kes.v1 import personal_pb2
from kes.schemas.kes.v1.personal_pb2 import Sealed

__all__ = [
    "NONCE_BYTES",
    "associated_data",
    "has_personal",
    "mark_personal",
    "open_sealed",
    "personal_fields",
    "seal",
]

NONCE_BYTES = 12
"""AES-GCM nonce length: random per sealed part (2^32 parts per key keep collisions negligible)."""

_Plan = tuple[tuple[str, "_Plan | None"], ...]
"""Per field to split: its name, and None (the whole field is personal) or its sub-plan."""

_plans: dict[str, _Plan] = {}
_listed: dict[str, frozenset[str]] = {}


def mark_personal(message_type: type[Message], *fields: str) -> None:
    """List fields of a message type as personal, for types whose .proto cannot be changed.

    Call it where the app module is imported, before a worker or reader starts.
    """
    descriptor = message_type.DESCRIPTOR
    unknown = [f for f in fields if f not in descriptor.fields_by_name]
    if unknown:
        raise ConfigurationError(f"{descriptor.full_name} has no field {unknown[0]!r}")
    name = descriptor.full_name
    _listed[name] = _listed.get(name, frozenset()) | frozenset(fields)
    _plans.clear()


def _is_marked(field: FieldDescriptor, listed: frozenset[str]) -> bool:
    if field.name in listed:
        return True
    return bool(field.GetOptions().Extensions[personal_pb2.personal])


def _plan(descriptor: Any, visiting: frozenset[str] = frozenset()) -> _Plan:
    name = descriptor.full_name
    found = _plans.get(name)
    if found is not None:
        return found
    if name in visiting:  # a recursive type: its marks are found where the recursion began
        return ()
    listed = _listed.get(name, frozenset())
    steps: list[tuple[str, _Plan | None]] = []
    for field in descriptor.fields:
        if _is_marked(field, listed):
            steps.append((field.name, None))
            continue
        sub = field.message_type
        if sub is None:
            continue
        is_map = sub.GetOptions().map_entry
        nested = _plan(sub, visiting | {name})
        if not nested:
            continue
        if field.is_repeated or is_map:
            raise ConfigurationError(
                f"{name}.{field.name} holds messages with personal fields: mark the field "
                f"itself [(kes.v1.personal) = true]"
            )
        steps.append((field.name, nested))
    plan = tuple(steps)
    _plans[name] = plan
    return plan


def personal_fields(message_type: type[Message]) -> list[str]:
    """The personal fields of a message type, as dotted paths (empty: nothing to seal)."""

    def paths(plan: _Plan, prefix: str) -> Iterable[str]:
        for name, nested in plan:
            if nested is None:
                yield prefix + name
            else:
                yield from paths(nested, f"{prefix}{name}.")

    return list(paths(_plan(message_type.DESCRIPTOR), ""))


def has_personal(message_types: Iterable[type[Message]]) -> bool:
    """True when any of the message types has a personal field."""
    return any(_plan(t.DESCRIPTOR) for t in message_types)


def associated_data(entity_id: str, type_name: str) -> bytes:
    """What a sealed part is bound to: the entity and the message type."""
    return f"{entity_id}\x00{type_name}".encode()


def _split(public: Message, private: Message, plan: _Plan) -> None:
    """Clear the plan's fields in `public`; clear every other field in `private`."""
    keep = dict(plan)
    for field in public.DESCRIPTOR.fields:
        name = field.name
        if name not in keep:
            private.ClearField(name)
            continue
        nested = keep[name]
        if nested is None:
            public.ClearField(name)
        elif public.HasField(name):
            _split(getattr(public, name), getattr(private, name), nested)


def seal(message: Message, aead: AESGCM, entity_id: str) -> tuple[Message, Sealed | None]:
    """`(public part, sealed private part)`; `(message, None)` when no personal field is set."""
    descriptor = message.DESCRIPTOR
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        plan = _plan(descriptor)
    if not plan:
        return message, None
    public = type(message)()
    public.CopyFrom(message)
    private = type(message)()
    private.CopyFrom(message)
    _split(public, private, plan)
    secret = private.SerializeToString(deterministic=True)
    if not secret:
        return message, None
    nonce = os.urandom(NONCE_BYTES)
    aad = associated_data(entity_id, descriptor.full_name)
    return public, Sealed(nonce=nonce, ciphertext=aead.encrypt(nonce, secret, aad))


def open_sealed(
    public: bytes, sealed: Sealed, aead: AESGCM, entity_id: str, type_name: str
) -> bytes:
    """The whole message's bytes: the public part's, then the decrypted private part's."""
    try:
        secret = aead.decrypt(
            sealed.nonce, sealed.ciphertext, associated_data(entity_id, type_name)
        )
    except (InvalidTag, ValueError) as exc:
        raise DecodeError(
            DeadLetterReason.UNDECODABLE,
            f"{entity_id}: the personal fields of a {type_name} do not decrypt with its key",
        ) from exc
    return public + secret
