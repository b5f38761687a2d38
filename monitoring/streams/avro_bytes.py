"""The few Avro binary primitives our hand-written hot-path encoders need.

fastavro spends most of a small record's time on per-call overhead; encoders that
cache the constant part of a record (a series' name and labels) and write the rest
with these are 3-5 times faster. Each such encoder checks, with ``same_layout``, that
the newest schema still has the layout it writes, and falls back to fastavro if not;
tests compare its bytes with fastavro's.

>>> avro_long(-1), avro_long(64), avro_string("hi")
(b'\\x01', b'\\x80\\x01', b'\\x04hi')
>>> read_long(avro_long(1_700_000_000_000) + b"x", 0)
(1700000000000, 6)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form


def same_layout(layout: dict[str, Any], parsed: Any) -> bool:
    """Whether schema ``layout`` has the canonical form of the parsed schema."""
    return bool(
        to_parsing_canonical_form(fastavro.parse_schema(layout))
        == to_parsing_canonical_form(parsed)
    )


def read_long(b: bytes, i: int) -> tuple[int, int]:
    """Avro ``long``/``int`` at ``b[i]``: the value and the index after it (IndexError
    if ``b`` ends inside it)."""
    x = b[i]
    i += 1
    if x < 0x80:
        return (x >> 1) ^ -(x & 1), i
    n, shift = x & 0x7F, 7
    while True:
        x = b[i]
        i += 1
        n |= (x & 0x7F) << shift
        if x < 0x80:
            return (n >> 1) ^ -(n & 1), i
        shift += 7


def avro_long(n: int) -> bytes:
    """Avro ``long``/``int``: zig-zag, then base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    if n >> 35 and not n >> 42:  # every ms timestamp from 1971 to 2109: six bytes
        return bytes(
            (n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80,
             n >> 21 & 0x7F | 0x80, n >> 28 & 0x7F | 0x80, n >> 35)
        )  # fmt: skip
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_string(s: str) -> bytes:
    """Avro ``string``: length, then UTF-8."""
    b = s.encode()
    return avro_long(len(b)) + b


def avro_string_map(m: Mapping[str, str]) -> bytes:
    """Avro ``map<string>`` in one block (what fastavro writes)."""
    if not m:
        return b"\x00"
    parts = [avro_long(len(m))]
    for k, v in m.items():
        parts.append(avro_string(k))
        parts.append(avro_string(v))
    parts.append(b"\x00")
    return b"".join(parts)
