"""State records of any size on a compacted topic whose messages are capped.

A state value that fits goes out as one record, as before. A larger one is cut into
chunk records, then a manifest record under the value's own key names them (slot,
count, length and SHA-256 of the whole). Chunks alternate between two slots per key:
a new value's chunks go to the slot the manifest in force does not use, so a crash
half-way through writing them leaves the old manifest and its chunks intact; once the
new manifest is written, the old slot's chunks are tombstoned. Kafka keeps a
partition's order, so a reader that sees a manifest has seen its chunks before it.

Pure: :class:`ChunkedRecords` turns ``(key, value)`` into the records to produce, and
:func:`join` turns a table read back from the topic into the logical table.

>>> w = ChunkedRecords(max_bytes=64, overhead=0)
>>> out = w.expand(b"k", b"x" * 100)
>>> [(is_chunk_key(k), len(v)) for k, v in out][:2], out[-1][0]
([(True, 50), (True, 50)], b'k')
>>> join(dict(out)).table == {b"k": b"x" * 100}
True
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

MAGIC = b"\x00\xffchunked-state-v1\x00"
_HEAD = struct.Struct("<BIQ")  # slot, chunk count, total length
_SEP = b"\x00\xffchunk\x00"
OVERHEAD = 512  # headers and record framing the broker counts against the limit


def chunk_key(key: bytes, slot: int, index: int) -> bytes:
    """The key of chunk ``index`` of ``key``'s ``slot``."""
    return key + _SEP + bytes([slot]) + index.to_bytes(4, "big")


def is_chunk_key(key: bytes) -> bool:
    """Whether ``key`` names a chunk rather than a logical record."""
    return _SEP in key


@dataclass
class ChunkedRecords:
    """Expands state records so that none exceeds ``max_bytes``; remembers slots in force."""

    max_bytes: int
    overhead: int = OVERHEAD
    in_force: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # key -> slot, n

    def expand(self, key: bytes, value: bytes | None) -> list[tuple[bytes, bytes | None]]:
        """The records to produce, in order, for ``key`` to read back as ``value``."""
        old = self.in_force.pop(key, None)
        stale = [] if old is None else [(chunk_key(key, old[0], i), None) for i in range(old[1])]
        if value is None or (
            len(key) + len(value) + self.overhead <= self.max_bytes and not value.startswith(MAGIC)
        ):
            return [(key, value), *stale]
        slot = 1 - old[0] if old is not None else 0
        size = max(1, self.max_bytes - len(key) - len(_SEP) - 5 - self.overhead)
        n = (len(value) + size - 1) // size
        out: list[tuple[bytes, bytes | None]] = [
            (chunk_key(key, slot, i), value[i * size : (i + 1) * size]) for i in range(n)
        ]
        manifest = MAGIC + _HEAD.pack(slot, n, len(value)) + hashlib.sha256(value).digest()
        out.append((key, manifest))
        self.in_force[key] = (slot, n)
        return out + stale

    def learn(self, table: Mapping[bytes, bytes]) -> None:
        """Take the slots in force from a table read back (after a restart)."""
        for key, value in table.items():
            if is_chunk_key(key) or not value.startswith(MAGIC):
                continue
            try:
                slot, n, _ = _HEAD.unpack_from(value, len(MAGIC))
            except struct.error:
                continue
            # a manifest whose chunks are not there (garbage written to the topic) would
            # make the next write tombstone up to 2^32 keys: trust only one that is whole
            if 0 < n <= len(table) and slot in (0, 1) and chunk_key(key, slot, n - 1) in table:
                self.in_force[key] = (slot, n)


@dataclass(frozen=True)
class Joined:
    """A table read back: ``table`` the logical records, ``broken`` keys whose chunks are
    missing or do not hash to their manifest (left out of ``table``)."""

    table: dict[bytes, bytes]
    broken: list[bytes]


def join(raw: Mapping[bytes, bytes]) -> Joined:
    """The logical table of a compacted topic's latest records."""
    table: dict[bytes, bytes] = {}
    broken: list[bytes] = []
    for key, value in raw.items():
        if is_chunk_key(key):
            continue
        if not value.startswith(MAGIC):
            table[key] = value
            continue
        try:
            slot, n, length = _HEAD.unpack_from(value, len(MAGIC))
            digest = value[len(MAGIC) + _HEAD.size :]
            whole = b"".join(raw[chunk_key(key, slot, i)] for i in range(n))
        except (KeyError, struct.error):
            broken.append(key)
            continue
        if len(whole) != length or hashlib.sha256(whole).digest() != digest:
            broken.append(key)
            continue
        table[key] = whole
    return Joined(table, broken)
