"""murmur2 and partition_for agree with Kafka's Java client, bit for bit."""

from __future__ import annotations

import random

import pytest

from kes.schemas.errors import ConfigurationError
from kes.topology.partitioning import murmur2, partition_for

# org.apache.kafka.common.utils.UtilsTest.testMurmur2
JAVA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("data", "expected"), JAVA_VECTORS)
def test_murmur2_matches_kafka_utils_test(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_murmur2_non_ascii_bytes_and_every_tail_length() -> None:
    # Generated offline with the JVM client (sarama's murmur2 test vectors).
    assert murmur2(bytes([12, 42, 56, 24, 109, 111])) == 274204207
    # 0..3 trailing bytes take distinct paths; results stay signed 32-bit as in Java.
    for n in range(9):
        assert -(2**31) <= murmur2(b"\xff" * n) < 2**31


def test_murmur2_agrees_with_aiokafka_on_every_length() -> None:
    from aiokafka.partitioner import murmur2 as aiokafka_murmur2  # unsigned 32-bit result

    rng = random.Random(7)
    for n in range(70):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert murmur2(data) & 0xFFFFFFFF == aiokafka_murmur2(data)


def test_partition_for_agrees_with_aiokafka_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(12))
    for i in range(500):
        key = f"account-{i}".encode()
        assert partition_for(key, 12) == DefaultPartitioner()(key, partitions, partitions)


@pytest.mark.parametrize(("data", "expected"), JAVA_VECTORS)
def test_partition_for_is_java_to_positive_modulo(data: bytes, expected: int) -> None:
    for partitions in (1, 3, 12, 48):
        assert partition_for(data, partitions) == (expected & 0x7FFFFFFF) % partitions


def test_partition_for_encodes_str_ids_as_utf8() -> None:
    assert partition_for("foobar", 12) == partition_for(b"foobar", 12)
    assert partition_for("kontø-ü", 12) == partition_for("kontø-ü".encode(), 12)


def test_partition_for_stays_in_range() -> None:
    assert {partition_for(f"account-{i}", 12) for i in range(1000)} == set(range(12))


def test_partition_for_rejects_zero_partitions() -> None:
    with pytest.raises(ConfigurationError):
        partition_for("a", 0)


def test_partition_for_agrees_with_confluent_kafka_murmur2_when_available() -> None:
    import confluent_kafka

    java_murmur2 = getattr(confluent_kafka, "murmur2", None)  # only in newer releases
    if java_murmur2 is None:
        pytest.skip("this confluent-kafka has no murmur2 helper")
    for i in range(500):
        key = f"account-{i}".encode()
        assert partition_for(key, 12) == java_murmur2(key, 12)
