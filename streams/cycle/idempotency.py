"""The outcome store's records: what a partition remembers per command id, and for how long.

Every routed command with an id leaves an outcome in its partition's state: accepted (revision,
event offsets) or the rejection. A retry of the same (entity, command id) inside the horizon is
answered from it, marked as a replay, and decided no second time. Outcomes live in the snapshot
changelog beside the snapshots, so they survive restarts and move with the partition:

- key: NUL, entity id, NUL, command id (entity and command ids never hold a NUL, so no entity's
  snapshot key and no checkpoint key can be an outcome key);
- value: when it was decided (8 bytes, ms since the epoch, big-endian), then the Reply message
  without the entity's state (a replay carries revision and event offsets, not the state).

Expired outcomes (older than the horizon, or the oldest ones past the per-partition count) are
removed by tombstones written in a later transaction of the partition. Pure: no I/O here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kes.schemas.kes.v1.envelopes_pb2 import Reply

__all__ = [
    "OUTCOME_PREFIX",
    "OutcomePolicy",
    "decode_outcome",
    "encode_outcome",
    "is_outcome_key",
    "outcome_key",
    "outcome_time",
]

OUTCOME_PREFIX = "\x00"
"""First character of every outcome key (no entity id starts with, or holds, a NUL)."""

_TIME = struct.Struct(">q")


@dataclass(frozen=True)
class OutcomePolicy:
    """How long outcomes are kept: by age and by count per partition (the first bound reached)."""

    horizon_ms: int = 7 * 24 * 3600 * 1000
    """Outcomes younger than this answer retries; 0 turns the store off."""
    max_per_partition: int = 1_000_000
    """At most this many outcomes per partition: beyond it, the oldest go first."""
    prune_batch: int = 1_000
    """At most this many tombstones per partition per transaction."""

    @property
    def enabled(self) -> bool:
        """False when retries are answered only from the entity's recent command ids."""
        return self.horizon_ms > 0 and self.max_per_partition > 0


def outcome_key(entity_id: str, command_id: str) -> str:
    """The changelog (and local store) key of one command's outcome."""
    return f"{OUTCOME_PREFIX}{entity_id}{OUTCOME_PREFIX}{command_id}"


def is_outcome_key(key: str) -> bool:
    """True for an outcome key, False for an entity's snapshot or the checkpoint."""
    return key.startswith(OUTCOME_PREFIX)


def encode_outcome(decided_ms: int, reply: Reply) -> bytes:
    """An outcome record's value: the decision time, then the reply (its state left out)."""
    stored = reply
    if reply.HasField("accepted") and reply.accepted.HasField("state"):
        stored = Reply()
        stored.CopyFrom(reply)
        stored.accepted.ClearField("state")
        stored.accepted.ClearField("sealed")
    return _TIME.pack(decided_ms) + stored.SerializeToString()


def outcome_time(value: bytes) -> int:
    """When an outcome was decided (ms since the epoch), read from its value."""
    return int(_TIME.unpack_from(value)[0])


def decode_outcome(value: bytes) -> tuple[int, Reply]:
    """`(decided at in ms, reply)` of an outcome record's value."""
    return outcome_time(value), Reply.FromString(value[_TIME.size :])
