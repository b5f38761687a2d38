"""Kafka's default partitioning in pure Python: murmur2, placement, grouping.

The SDK writes each ``MetricBatch`` to an explicit partition: the one its series keys
hash to, exactly where Kafka's default partitioner (and librdkafka's
``murmur2_random``) places a keyed record, so producers in every language agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitoring.wire.sample_encoding import Item


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (Java ``Utils.murmur2``, librdkafka ``rd_murmur2``), unsigned.

    The same function as ``aiokafka.partitioner.murmur2`` (a unit test checks both
    against Java's test vectors), written here with whole-word int ops so the SDK
    does not import asyncio-based aiokafka (170 ms) for twenty lines.

    >>> murmur2(b"21") - (1 << 32)  # Java: Utils.murmur2("21".getBytes()) == -973932308
    -973932308
    """
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length & ~3
    for i in range(0, n4, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h = ((h ^ data[n4]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_for(key: str | bytes, num_partitions: int) -> int:
    """Partition of a keyed record, as Kafka's default partitioner and librdkafka's
    ``murmur2_random`` place it: ``toPositive(murmur2(key)) % num_partitions``.

    >>> partition_for(b"abc", 1000)  # kafka-python's Java-compatibility vector
    107
    """
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % num_partitions


def group_by_partition(
    items: Iterable[Item], num_partitions: int, cache: dict[str, int] | None = None
) -> dict[int, list[Item]]:
    """Split samples by the partition their series key hashes to (order kept per group)."""
    if cache is None:
        cache = {}
    groups: dict[int, list[Item]] = {}
    for item in items:
        key = item[0].key
        p = cache.get(key)
        if p is None:
            p = cache[key] = partition_for(key, num_partitions)
        g = groups.get(p)
        if g is None:
            groups[p] = [item]
        else:
            g.append(item)
    return groups
