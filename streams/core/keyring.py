"""Entity data keys: made on first use, wrapped by a master key, cached with a bound.

Each entity of an aggregate with personal fields (kes.schemas.personal) has its own 32-byte data
key. The worker makes it with the entity's first accepted command and writes it, wrapped by the
master key, in the same transaction as the events it seals: as a record on `<aggregate>.keys`
(compacted, key: entity id; what readers and `kes erase` use) and inside the entity's snapshot
(what the worker itself loads, so sealing costs no lookup). A transaction that aborts takes the
new key with it, and the batch is decided again with another; a committed event is never
without its key, and one entity never has two.

The master key is a port (`MasterKey`): `LocalMasterKey` holds 32 bytes from configuration
(`KES_MASTER_KEY`, base64, or `KES_MASTER_KEY_FILE`); a KMS implements the same two calls.
Pure: no Kafka here (kes.streams.kafka.keyreader reads the keys topic).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kes.schemas.errors import ConfigurationError, KeyUnavailableError
from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope, Snapshot
from kes.schemas.kes.v1.personal_pb2 import DataKey, Sealed
from kes.schemas.personal import NONCE_BYTES, open_sealed

__all__ = [
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE_ENV",
    "DataKeys",
    "EntityKey",
    "Keyring",
    "LocalMasterKey",
    "MasterKey",
    "master_key_from_env",
]

MASTER_KEY_ENV = "KES_MASTER_KEY"
"""The master key, 32 bytes in base64 (`openssl rand -base64 32`)."""
MASTER_KEY_FILE_ENV = "KES_MASTER_KEY_FILE"
"""A file holding the master key: 32 raw bytes, or their base64 on one line."""

_KEY_BYTES = 32


class MasterKey(Protocol):
    """Wraps and unwraps data keys; a KMS client can implement it (calls are per entity)."""

    @property
    def key_id(self) -> str:
        """Names this master key in the records it wraps (for rotation and for errors)."""
        ...

    def wrap(self, data_key: bytes, entity_id: str) -> bytes:
        """The data key encrypted, bound to its entity."""
        ...

    def unwrap(self, wrapped: bytes, entity_id: str) -> bytes:
        """The data key; raises KeyUnavailableError when `wrapped` was not made by this key."""
        ...


class LocalMasterKey:
    """A master key held in memory: AES-256-GCM over the data key, the entity id as AAD."""

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise ConfigurationError(f"the master key must be {_KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._id = hashlib.sha256(b"kes-master-key\x00" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"LocalMasterKey({self._id})"

    @property
    def key_id(self) -> str:
        """A fingerprint of the key (not the key)."""
        return self._id

    def wrap(self, data_key: bytes, entity_id: str) -> bytes:
        """Nonce, then the sealed data key."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, b"kes-data-key\x00" + entity_id.encode())

    def unwrap(self, wrapped: bytes, entity_id: str) -> bytes:
        """The inverse of wrap."""
        nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, sealed, b"kes-data-key\x00" + entity_id.encode())
        except (InvalidTag, ValueError) as exc:
            raise KeyUnavailableError(
                f"the data key of {entity_id!r} does not unwrap with master key {self._id}"
            ) from exc


def master_key_from_env(environ: Mapping[str, str] | None = None) -> LocalMasterKey | None:
    """The master key `KES_MASTER_KEY` or `KES_MASTER_KEY_FILE` names (None: neither is set)."""
    env = os.environ if environ is None else environ
    text = env.get(MASTER_KEY_ENV, "").strip()
    path = env.get(MASTER_KEY_FILE_ENV, "").strip()
    if text and path:
        raise ConfigurationError(f"set {MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV}, not both")
    if path:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"{MASTER_KEY_FILE_ENV}: cannot read {path}: {exc}") from exc
        if len(raw) == _KEY_BYTES:
            return LocalMasterKey(raw)
        text, source = raw.decode("ascii", "replace").strip(), MASTER_KEY_FILE_ENV
    else:
        source = MASTER_KEY_ENV
    if not text:
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"{source} is not base64 of {_KEY_BYTES} bytes") from exc
    return LocalMasterKey(key)


@dataclass(frozen=True)
class EntityKey:
    """One entity's data key, unwrapped, with its wrapped form (what records carry)."""

    wrapped: bytes
    master_key_id: str
    aead: AESGCM = field(repr=False)


class DataKeys:
    """The worker's data keys: new ones made, stored ones unwrapped, at most `cache_size` kept."""

    def __init__(self, master: MasterKey, cache_size: int = 10_000) -> None:
        self.master = master
        self._cache: OrderedDict[str, EntityKey] = OrderedDict()
        self._cache_size = cache_size

    def new(self, entity_id: str) -> EntityKey:
        """A fresh random key for an entity (not cached: it exists once its transaction commits)."""
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = self.master.wrap(data_key, entity_id)
        return EntityKey(wrapped, self.master.key_id, AESGCM(data_key))

    def open(self, entity_id: str, wrapped: bytes, master_key_id: str = "") -> EntityKey:
        """The entity's key from its wrapped form (cached: unwrapping may be a KMS call)."""
        cached = self._cache.get(entity_id)
        if cached is not None and cached.wrapped == wrapped:
            self._cache.move_to_end(entity_id)
            return cached
        key = EntityKey(
            wrapped,
            master_key_id or self.master.key_id,
            AESGCM(self.master.unwrap(wrapped, entity_id)),
        )
        self._cache[entity_id] = key
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return key

    def forget(self, entity_id: str) -> None:
        """Drop an entity's key from the cache (it was erased)."""
        self._cache.pop(entity_id, None)

    def record(self, entity_id: str, key: EntityKey) -> DataKey:
        """The entity's record on the keys topic."""
        record = DataKey(
            entity_id=entity_id, wrapped_key=key.wrapped, master_key_id=key.master_key_id
        )
        record.created.GetCurrentTime()
        return record


class Keyring:
    """Opens sealed events and snapshots for readers (kes events, projections, verify, rebuild).

    `lookup(entity_id)` answers the entity's record on the keys topic (None: no record). An
    entity whose record says erased, or has none, reads without its personal fields. Without a
    master key nothing is opened (sealed parts are dropped, personal fields stay empty).
    """

    def __init__(self, master: MasterKey | None, lookup: Callable[[str], DataKey | None]) -> None:
        self.master = master
        self._lookup = lookup
        self._keys = DataKeys(master) if master is not None else None
        self.unreadable = 0
        """Sealed parts dropped because their entity has no key (erased) or no master key."""

    def key(self, entity_id: str) -> EntityKey | None:
        """The entity's key (None: erased, none, or no master key)."""
        if self._keys is None:
            return None
        record = self._lookup(entity_id)
        if record is None or record.erased or not record.wrapped_key:
            self._keys.forget(entity_id)
            return None
        return self._keys.open(entity_id, record.wrapped_key, record.master_key_id)

    def open_event(self, env: EventEnvelope) -> EventEnvelope:
        """The envelope with its personal fields back in its payload (in place)."""
        if not env.HasField("sealed"):
            return env
        self._open(env.payload, env.sealed, self.key(env.entity_id), env.entity_id)
        env.ClearField("sealed")
        return env

    def _open(self, packed: Any, sealed: Sealed, key: EntityKey | None, entity_id: str) -> None:
        """Append the opened private part to the packed message (nothing without a key)."""
        if key is None:
            self.unreadable += 1
            return
        packed.value = open_sealed(packed.value, sealed, key.aead, entity_id, packed.TypeName())

    def open_snapshot(self, snap: Snapshot) -> Snapshot:
        """The snapshot with its personal fields back in its state (in place)."""
        if not snap.HasField("sealed"):
            return snap
        key = None
        if self._keys is not None:
            key = self._keys.open(snap.entity_id, snap.wrapped_key, snap.master_key_id)
        self._open(snap.state, snap.sealed, key, snap.entity_id)
        snap.ClearField("sealed")
        return snap

    def forget(self, entity_id: str) -> None:
        """Drop a cached key (its entity was erased)."""
        if self._keys is not None:
            self._keys.forget(entity_id)
