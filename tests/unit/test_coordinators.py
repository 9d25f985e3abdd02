"""coordinator_partition hashes like the broker: `Utils.abs(String.hashCode) % partitions`."""

from __future__ import annotations

import pytest

from kes.topology.localcluster import coordinator_partition


@pytest.mark.parametrize(
    ("key", "java_hash"),
    [
        ("", 0),
        ("a", 97),
        ("hello", 99162322),
        ("Hello World", -862545276),
        ("polygenelubricants", -(2**31)),  # Utils.abs maps Integer.MIN_VALUE to 0
        ("\U0001f600", 0xD83D * 31 + 0xDE00),  # UTF-16 code units, as Java hashes
    ],
)
def test_the_partition_is_the_java_hash_code_modulo_the_partitions(
    key: str, java_hash: int
) -> None:
    expected = 0 if java_hash == -(2**31) else abs(java_hash) % 50
    assert coordinator_partition(key) == expected
    assert coordinator_partition(key, 7) == (0 if java_hash == -(2**31) else abs(java_hash) % 7)
