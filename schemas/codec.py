"""Bytes on the wire ↔ kes envelopes.

Commands arrive as protobuf binary or protobuf canonical JSON (`json_format`, `Any` carrying
`@type`), told apart by the `content-type` record header; a record without it is binary. Every
other envelope (events, replies, snapshots, dead letters) is binary only, written by kes itself.

Invariant: the decode functions raise `kes.schemas.errors.DecodeError` and nothing else, whatever
the bytes and headers, so a caller can route any bad record to a dead-letter topic by its `reason`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import TypeVar

from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from kes.schemas.errors import DeadLetterReason, DecodeError
from kes.schemas.kes.v1.envelopes_pb2 import (
    CommandEnvelope,
    DeadLetter,
    EventEnvelope,
    Header,
    Reply,
    Snapshot,
)

__all__ = [
    "CONTENT_TYPE_HEADER",
    "JSON",
    "MAX_ENTITY_ID_BYTES",
    "MAX_ID_BYTES",
    "MAX_METADATA_BYTES",
    "PROTOBUF",
    "REPLY_PARTITION_HEADER",
    "Headers",
    "check_entity_id",
    "content_type_of",
    "decode_command",
    "decode_dead_letter",
    "decode_event",
    "decode_reply",
    "decode_snapshot",
    "encode_command",
    "encode_dead_letter",
    "encode_event",
    "encode_reply",
    "encode_snapshot",
    "event_key",
    "new_command",
    "new_dead_letter",
    "pack",
    "parse_event_key",
    "type_name",
    "unpack",
    "unpack_as",
]

CONTENT_TYPE_HEADER = "content-type"
"""Record header naming a command's encoding (header keys match case-insensitively)."""
REPLY_PARTITION_HEADER = "kes-reply-partition"
"""Command header naming the replies partition the client reads (decimal); without it, or when
it names no partition of the replies topic, the reply goes to the command's own partition."""
PROTOBUF = "application/x-protobuf"
"""Protobuf binary: the default when a record has no content-type header."""
JSON = "application/json"
"""Protobuf canonical JSON, as `json_format.MessageToJson` writes it."""

MAX_ID_BYTES = 256
"""Longest command id, correlation id or aggregate name (UTF-8 bytes): each is copied into
every event, reply and snapshot the command leads to."""
MAX_ENTITY_ID_BYTES = 1024
"""Longest entity id (UTF-8 bytes): it is part of every event key."""
MAX_METADATA_BYTES = 16 * 1024
"""Most metadata a command may carry (keys and values, UTF-8 bytes): copied into its events."""

Headers = Sequence[tuple[str, bytes | None]]
"""Kafka record headers as both aiokafka and confluent-kafka hand them over."""

M = TypeVar("M", bound=Message)

_PROTOBUF_ALIASES = frozenset({PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"})
_REVISION_DIGITS = 20  # uint64 max has 20 digits, so fixed-width keys sort by revision.
_classes: dict[str, type[Message]] = {}  # full name -> class; registered types only, so bounded.

_U = DeadLetterReason.UNDECODABLE


# --- content type -------------------------------------------------------------------------------


def content_type_of(headers: Headers | None) -> str:
    """The media type a record's headers declare, lower-cased, without parameters.

    The last content-type header wins (as Kafka's `Headers.lastHeader`); no header, or an empty
    value, means `PROTOBUF`. Raises `DecodeError(WRONG_CONTENT_TYPE)` for a value that is not UTF-8.
    """
    raw: bytes | None = None
    try:
        for key, value in headers or ():
            name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            if name.lower() == CONTENT_TYPE_HEADER:
                raw = value
        if not raw:
            return PROTOBUF
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            DeadLetterReason.WRONG_CONTENT_TYPE, f"{CONTENT_TYPE_HEADER} header is not UTF-8"
        ) from exc
    except Exception as exc:
        raise DecodeError(
            DeadLetterReason.WRONG_CONTENT_TYPE, f"unreadable record headers: {exc!r}"
        ) from exc
    media_type = text.split(";", 1)[0].strip().lower()
    return media_type or PROTOBUF


# --- commands -----------------------------------------------------------------------------------


def decode_command(
    value: bytes | None, headers: Headers | None, *, max_bytes: int | None = None
) -> CommandEnvelope:
    """Decode a command record's value, binary or JSON as its headers say; parses the bytes once.

    The payload itself stays packed (see `unpack`), but its type must be registered in the default
    descriptor pool. Raises only `DecodeError`, whose reason is the dead-letter reason.
    """
    if not value:
        raise DecodeError(_U, "empty record value (no command)")
    if max_bytes is not None and len(value) > max_bytes:
        raise DecodeError(
            DeadLetterReason.TOO_LARGE, f"command is {len(value)} bytes, the limit is {max_bytes}"
        )
    media_type = content_type_of(headers)
    try:
        if media_type in _PROTOBUF_ALIASES:
            env = _parse_binary(CommandEnvelope, value, "command envelope")
        elif media_type == JSON:
            env = _parse_json_command(value)
        else:
            raise DecodeError(
                DeadLetterReason.WRONG_CONTENT_TYPE,
                f"unsupported {CONTENT_TYPE_HEADER} {media_type!r}: use {PROTOBUF} or {JSON}",
            )
        if not env.command_id:
            raise DecodeError(_U, "command envelope has no command_id")
        if not env.HasField("payload") or not env.payload.type_url:
            raise DecodeError(_U, "command envelope has no payload type_url")
        _check_sizes(env)
        _message_class(env.payload.type_url)
    except DecodeError:
        raise
    except Exception as exc:  # The boundary: nothing but DecodeError leaves.
        raise DecodeError(_U, f"cannot decode command: {exc!r}") from exc
    return env


def _check_sizes(env: CommandEnvelope) -> None:
    """Ids and metadata within their limits (they are copied into what the command writes)."""
    for name, text in (
        ("command_id", env.command_id),
        ("correlation_id", env.correlation_id),
        ("aggregate", env.aggregate),
    ):
        if len(text.encode()) > MAX_ID_BYTES:
            raise DecodeError(
                DeadLetterReason.TOO_LARGE,
                f"{name} is {len(text.encode())} bytes, the limit is {MAX_ID_BYTES}",
            )
    if "\x00" in env.command_id:
        raise DecodeError(_U, "command_id holds a NUL character")
    if env.entity_id:
        check_entity_id(env.entity_id)
    metadata = sum(len(k.encode()) + len(v.encode()) for k, v in env.metadata.items())
    if metadata > MAX_METADATA_BYTES:
        raise DecodeError(
            DeadLetterReason.TOO_LARGE,
            f"metadata is {metadata} bytes, the limit is {MAX_METADATA_BYTES}",
        )


def check_entity_id(entity_id: str) -> None:
    """Raise DecodeError for an entity id over MAX_ENTITY_ID_BYTES (TOO_LARGE) or holding a NUL
    (UNDECODABLE: NUL starts the keys of the partition's own records, such as outcomes)."""
    size = len(entity_id.encode())
    if size > MAX_ENTITY_ID_BYTES:
        raise DecodeError(
            DeadLetterReason.TOO_LARGE,
            f"entity id is {size} bytes, the limit is {MAX_ENTITY_ID_BYTES}",
        )
    if "\x00" in entity_id:
        raise DecodeError(_U, "entity id holds a NUL character")


def _parse_json_command(value: bytes) -> CommandEnvelope:
    """Parse canonical JSON, telling an unregistered `@type` apart from malformed JSON."""
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(_U, f"command is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodeError(_U, f"command JSON is a {type(obj).__name__}, not an object")
    payload = obj.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("@type"), str):
        _message_class(payload["@type"])
    env = CommandEnvelope()
    try:
        json_format.ParseDict(obj, env)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(_U, f"command JSON does not match kes.v1.CommandEnvelope: {exc}") from exc
    return env


def encode_command(
    env: CommandEnvelope, content_type: str = PROTOBUF
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Encode a command as a record value plus the headers that say how (`PROTOBUF` or `JSON`)."""
    if content_type == PROTOBUF:
        value = env.SerializeToString(deterministic=True)
    elif content_type == JSON:
        value = json_format.MessageToJson(env, indent=None).encode("utf-8")
    else:
        raise ValueError(f"content_type must be {PROTOBUF!r} or {JSON!r}, not {content_type!r}")
    return value, [(CONTENT_TYPE_HEADER, content_type.encode("ascii"))]


def new_command(
    entity_id: str,
    command_msg: Message,
    *,
    aggregate: str,
    command_id: str | None = None,
    expected_revision: int | None = None,
    reply_wanted: bool = False,
    correlation_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> CommandEnvelope:
    """Wrap a user's command message in an envelope stamped with the current time.

    `command_id` defaults to a fresh uuid4 hex; reuse it when retrying so the command applies once.
    `correlation_id` defaults to the command id. `expected_revision=None` leaves it unset (any
    revision); 0 means the entity must not exist yet.
    """
    cid = command_id if command_id is not None else uuid.uuid4().hex
    env = CommandEnvelope(
        command_id=cid,
        entity_id=entity_id,
        aggregate=aggregate,
        payload=pack(command_msg),
        reply_wanted=reply_wanted,
        correlation_id=correlation_id if correlation_id is not None else cid,
        metadata=dict(metadata or {}),
    )
    if expected_revision is not None:
        env.expected_revision = expected_revision
    env.timestamp.GetCurrentTime()
    return env


# --- Any ----------------------------------------------------------------------------------------


def _message_class(type_url: str) -> type[Message]:
    """The registered class of a type URL; raises `DecodeError(UNKNOWN_TYPE)` if there is none."""
    name = type_url.rpartition("/")[2]
    cls = _classes.get(name)
    if cls is not None:
        return cls
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(
            DeadLetterReason.UNKNOWN_TYPE,
            f"no message type {name!r} is registered (import its _pb2 module before decoding)",
        ) from exc
    cls = message_factory.GetMessageClass(descriptor)
    _classes[name] = cls
    return cls


def pack(msg: Message) -> any_pb2.Any:
    """Wrap a message in an `Any` with the standard `type.googleapis.com/` URL."""
    packed = any_pb2.Any()
    packed.Pack(msg, deterministic=True)
    return packed


def unpack(any_msg: any_pb2.Any) -> Message:
    """Decode an `Any` into its registered message class.

    Raises `DecodeError(UNKNOWN_TYPE)` for an unregistered type, `DecodeError(UNDECODABLE)` for bad
    bytes.
    """
    msg = _message_class(any_msg.type_url)()
    try:
        msg.ParseFromString(any_msg.value)
    except Exception as exc:
        raise DecodeError(_U, f"payload is not a valid {type_name(any_msg)}: {exc}") from exc
    return msg


def unpack_as(any_msg: any_pb2.Any, message_type: type[M]) -> M:
    """Decode an `Any` that must hold `message_type`; the typed variant of `unpack`."""
    expected = message_type.DESCRIPTOR.full_name
    if any_msg.TypeName() != expected:
        raise DecodeError(_U, f"expected a {expected}, got {any_msg.TypeName() or 'nothing'}")
    msg = message_type()
    try:
        msg.ParseFromString(any_msg.value)
    except Exception as exc:
        raise DecodeError(_U, f"payload is not a valid {expected}: {exc}") from exc
    return msg


def type_name(msg_or_any: Message) -> str:
    """Full protobuf name of a message, or of the message an `Any` holds (`bank.v1.OpenAccount`)."""
    if isinstance(msg_or_any, any_pb2.Any):
        return msg_or_any.TypeName()
    return msg_or_any.DESCRIPTOR.full_name


# --- event keys ---------------------------------------------------------------------------------


def event_key(entity_id: str, revision: int) -> bytes:
    """Record key of one event: unique per event, and one entity's keys sort by revision.

    The events topic is compacted; a key per event (not per entity) keeps the whole history.
    """
    if not 0 <= revision < 10**_REVISION_DIGITS:
        raise ValueError(f"revision out of range: {revision}")
    return f"{entity_id}@{revision:0{_REVISION_DIGITS}d}".encode()


def parse_event_key(key: bytes) -> tuple[str, int]:
    """Inverse of `event_key`: `(entity_id, revision)`; raises `DecodeError(UNDECODABLE)`."""
    entity, sep, digits = key.rpartition(b"@")
    if not sep or len(digits) != _REVISION_DIGITS or not digits.isdigit():
        raise DecodeError(_U, f"not an event key (entity@revision): {key[:80]!r}")
    try:
        return entity.decode("utf-8"), int(digits)
    except UnicodeDecodeError as exc:
        raise DecodeError(_U, f"event key entity id is not UTF-8: {key[:80]!r}") from exc


# --- binary envelopes ---------------------------------------------------------------------------


def _parse_binary(message_type: type[M], value: bytes | None, what: str) -> M:
    """Parse protobuf binary into a fresh `message_type`, raising only `DecodeError`."""
    if not value:
        raise DecodeError(_U, f"empty record value (no {what})")
    msg = message_type()
    try:
        msg.ParseFromString(value)
    except ProtobufDecodeError as exc:
        raise DecodeError(_U, f"not a valid {what}: {exc}") from exc
    except Exception as exc:
        raise DecodeError(_U, f"cannot decode {what}: {exc!r}") from exc
    return msg


def encode_event(env: EventEnvelope) -> bytes:
    """Serialize an event envelope (binary, deterministic)."""
    return env.SerializeToString(deterministic=True)


def decode_event(value: bytes | None) -> EventEnvelope:
    """Parse an event envelope; raises `DecodeError(UNDECODABLE)`."""
    return _parse_binary(EventEnvelope, value, "event envelope")


def encode_reply(reply: Reply) -> bytes:
    """Serialize a reply (binary, deterministic)."""
    return reply.SerializeToString(deterministic=True)


def decode_reply(value: bytes | None) -> Reply:
    """Parse a reply; raises `DecodeError(UNDECODABLE)`."""
    return _parse_binary(Reply, value, "reply")


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """Serialize a snapshot (binary, deterministic)."""
    return snapshot.SerializeToString(deterministic=True)


def decode_snapshot(value: bytes | None) -> Snapshot:
    """Parse a snapshot; raises `DecodeError(UNDECODABLE)`."""
    return _parse_binary(Snapshot, value, "snapshot")


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """Serialize a dead letter (binary, deterministic)."""
    return letter.SerializeToString(deterministic=True)


def decode_dead_letter(value: bytes | None) -> DeadLetter:
    """Parse a dead letter; raises `DecodeError(UNDECODABLE)`."""
    return _parse_binary(DeadLetter, value, "dead letter")


def new_dead_letter(
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    topic: str,
    partition: int,
    offset: int,
    reason: DeadLetterReason,
    error: str,
) -> DeadLetter:
    """Keep a bad record byte for byte with where it came from and why, stamped now.

    A missing key, value or header value is stored as empty bytes.
    """
    letter = DeadLetter(
        original_key=key or b"",
        original_value=value or b"",
        headers=[Header(key=k, value=v or b"") for k, v in headers or ()],
        topic=topic,
        partition=partition,
        offset=offset,
        reason=reason.value,
        error=error,
    )
    letter.timestamp.GetCurrentTime()
    return letter
