"""Which partition an entity lives on: Kafka's murmur2 partitioner, bit for bit.

kes routes every record of an entity (command, events, snapshot) by its entity id as the key, and
relies on every producer agreeing on the partition. The Java client's default partitioner,
aiokafka's `DefaultPartitioner` and librdkafka's `murmur2_random` all compute
`toPositive(murmur2(key)) % partitions`; this module computes the same, so kes can name the
partition of an entity without asking a client. librdkafka's own default (`consistent_random`,
CRC32) disagrees, which is why kes always configures `partitioner: murmur2_random`.
"""

from __future__ import annotations

import struct

from kes.schemas.errors import ConfigurationError

__all__ = ["MURMUR2_PARTITIONER", "murmur2", "partition_for"]

MURMUR2_PARTITIONER = "murmur2_random"
"""The librdkafka `partitioner` setting that agrees with `partition_for` (and the Java client)."""

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2(byte[])`: MurmurHash2, seed 0x9747b28c, as a signed 32-bit int."""
    length = len(data)
    h = _SEED ^ length
    blocks = length >> 2
    for k in struct.unpack_from(f"<{blocks}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = blocks << 2
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def partition_for(entity_id: str | bytes, num_partitions: int) -> int:
    """The partition a keyed record goes to: `(murmur2(key) & 0x7fffffff) % num_partitions`.

    A `str` id is encoded as UTF-8, as kes encodes keys on the wire.
    """
    if num_partitions < 1:
        raise ConfigurationError(f"num_partitions must be at least 1, got {num_partitions}")
    key = entity_id.encode() if isinstance(entity_id, str) else entity_id
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions
