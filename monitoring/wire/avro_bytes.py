"""The Avro binary primitives of the hand-written codecs, in one place.

fastavro spends most of a small record's time on per-call overhead; encoders that
cache the constant part of a record (a series' name and labels) and write the rest
with these, and decoders that slice one latin-1 view of a message, are faster: from
about as fast to six times (``monitoring bench codecs`` measures each). Each hand
codec checks, with ``same_layout``, that the newest schema still has the layout it
handles, and falls back to fastavro if not; tests compare its bytes and values with
fastavro's.

Readers take the message ``b`` and an index ``i`` and return the value and the index
after it. They raise IndexError when ``b`` ends inside an item, and ``Malformed`` for
what no Avro writer produces (a negative length, a varint longer than 10 bytes). The
string readers take ``text``, ``b`` decoded as latin-1 (one character per byte, so
indexes agree): an item is one slice of it, right as it is if ASCII; ``decode_utf8``
decodes the others again from their bytes.

>>> avro_long(-1), avro_long(64), avro_string("hi")
(b'\\x01', b'\\x80\\x01', b'\\x04hi')
>>> read_long(avro_long(1_700_000_000_000) + b"x", 0)
(1700000000000, 6)
>>> data = avro_string_array(["a", "é"])
>>> items, end = read_string_array(data, data.decode("latin-1"), 0)
>>> decode_utf8(items), items, end
([], ['a', 'é'], 7)
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

DOUBLE = struct.Struct("<d")
"""Avro ``double``: 8 bytes, little-endian IEEE 754."""


class Malformed(ValueError):
    """Bytes no Avro writer produces (a negative length, an over-long varint)."""


def same_layout(layout: dict[str, Any], parsed: Any) -> bool:
    """Whether schema ``layout`` has the canonical form of the parsed schema."""
    return bool(
        to_parsing_canonical_form(fastavro.parse_schema(layout))
        == to_parsing_canonical_form(parsed)
    )


# -- writing ------------------------------------------------------------------------
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


SMALL_LONGS = [avro_long(n) for n in range(64)]
"""``avro_long(n)`` for 0 <= n < 64 (one byte each): lengths and counts, mostly."""
_BY_ZIGZAG = [bytes((z,)) for z in range(128)]  # one-byte varints by zig-zag value
_SMALL_CHARS = [b.decode("latin-1") for b in SMALL_LONGS]
_RANGE = b"".join(avro_long(n) for n in range(4096))  # 0..4095: 1 byte below 64, then 2
_ZEROS = bytes(1 << 16)


def avro_string(s: str) -> bytes:
    """Avro ``string``: length, then UTF-8."""
    if not s:
        return b"\x00"
    b = s.encode()
    n = len(b)
    return (SMALL_LONGS[n] if n < 64 else avro_long(n)) + b


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


def avro_string_array(items: Sequence[str]) -> bytes:
    """Avro ``array<string>`` in one block (what fastavro writes)."""
    if not items:
        return b"\x00"
    n = len(items)
    count = SMALL_LONGS[n] if n < 64 else avro_long(n)
    if "".join(items).isascii():  # one byte per character: lengths from len(), one encode
        parts: list[str] = []
        append = parts.append
        for s in items:
            n = len(s)
            append(_SMALL_CHARS[n] if n < 64 else avro_long(n).decode("latin-1"))
            append(s)
        return b"".join((count, "".join(parts).encode("latin-1"), b"\x00"))
    out = [count]
    for s in items:
        out.append(avro_string(s))
    out.append(b"\x00")
    return b"".join(out)


def avro_long_array(items: Sequence[int]) -> bytes:
    """Avro ``array<long>`` (or ``int``) in one block; 0..n-1 (n <= 4096) is a slice
    of a table."""
    if not items:
        return b"\x00"
    n = len(items)
    if n <= 4096 and items[0] == 0 and items[-1] == n - 1 and _ascending(items):
        body = _RANGE[: n if n <= 64 else 64 + 2 * (n - 64)]
    else:
        body = b"".join([_varint(x) for x in items])
    return b"".join((SMALL_LONGS[n] if n < 64 else avro_long(n), body, b"\x00"))


def _varint(x: int) -> bytes:
    z = (x << 1) ^ (x >> 63)
    if z < 0x80:
        return _BY_ZIGZAG[z]
    if z < 0x4000:
        return bytes((z & 0x7F | 0x80, z >> 7))
    return avro_long(x)


def _ascending(items: Sequence[int]) -> bool:
    return isinstance(items, range) or all(a < b for a, b in itertools.pairwise(items))


# -- reading ------------------------------------------------------------------------
def read_long(b: bytes, i: int) -> tuple[int, int]:
    """Avro ``long``/``int`` at ``b[i]``: the value and the index after it."""
    x = b[i]
    if x < 0x80:
        return (x >> 1) ^ -(x & 1), i + 1
    y = b[i + 1]
    if y < 0x80:
        n = (x & 0x7F) | y << 7
        return (n >> 1) ^ -(n & 1), i + 2
    n = (x & 0x7F) | (y & 0x7F) << 7
    i += 2
    for shift in _SHIFTS:
        x = b[i]
        i += 1
        n |= (x & 0x7F) << shift
        if x < 0x80:
            return (n >> 1) ^ -(n & 1), i
    raise Malformed(f"varint longer than 10 bytes at byte {i - 10}")


_SHIFTS = tuple(range(14, 70, 7))  # bytes 3 to 10 of a varint


def read_block_count(b: bytes, i: int) -> tuple[int, int]:
    """The item count of an array or map block at ``b[i]`` (0 ends the array); a
    negative count is followed by the block's size in bytes, which is skipped."""
    count = b[i]
    if count < 0x80 and not count & 1:  # 0 to 63 items: one byte
        count >>= 1
        i += 1
    else:
        count, i = read_long(b, i)
        if count < 0:
            count = -count
            _, i = read_long(b, i)
    if count > len(b) - i:  # every item takes a byte at least
        raise IndexError(f"a block of {count} items, {len(b) - i} bytes left")
    return count, i


def read_string(b: bytes, i: int) -> tuple[str, int]:
    """Avro ``string`` at ``b[i]`` (UnicodeDecodeError if it is not UTF-8)."""
    n, i = read_long(b, i)
    j = i + n
    if n < 0:
        raise Malformed(f"negative string length {n} at byte {i}")
    if j > len(b):
        raise IndexError("string")
    return b[i:j].decode(), j


def read_texts(b: bytes, text: str, i: int, count: int) -> tuple[list[str], int]:
    """``count`` Avro strings one after the other at ``b[i]`` (record fields, or a
    block's items), each a slice of ``text`` (see ``decode_utf8``)."""
    out: list[str] = []
    append = out.append
    odd = 0  # a negative length is odd in zig-zag: checked once, after the loop
    for _ in range(count):
        n = b[i]
        if n < 0x80:  # lengths below 64: one byte
            i += 1
        elif b[i + 1] < 0x80:  # below 8192: two bytes
            n = (n & 0x7F) | b[i + 1] << 7
            i += 2
        else:
            n, i = read_long(b, i)
            if n < 0:
                raise Malformed(f"negative string length {n} before byte {i}")
            n <<= 1  # back to zig-zag, as the short lengths are
        odd |= n
        j = i + (n >> 1)
        append(text[i:j])
        i = j
    if odd & 1:
        raise Malformed(f"negative string length before byte {i}")
    if i > len(b):
        raise IndexError("string")
    return out, i


def read_string_array(b: bytes, text: str, i: int) -> tuple[list[str], int]:
    """Avro ``array<string>`` at ``b[i]``, items as ``read_texts`` gives them."""
    out: list[str] = []
    while True:
        count, i = read_block_count(b, i)
        if count == 0:
            return out, i
        if b[i : i + count] == _ZEROS[:count]:  # all empty (units, span ids, often)
            out += [""] * count
            i += count
            continue
        items, i = read_texts(b, text, i, count)
        out += items


def read_string_map(
    b: bytes, text: str, i: int, replace: bool = False
) -> tuple[dict[str, str], int, bool]:
    """Avro ``map<string>`` at ``b[i]``, strings decoded (``decode_utf8``); the bool
    says whether U+FFFD replaced invalid UTF-8."""
    m: dict[str, str] = {}
    start = i
    while True:
        count, i = read_block_count(b, i)
        if not count:
            break
        for _ in range(count):  # a key's length, its bytes, the value's length, its bytes
            n, i = read_long(b, i)
            if n < 0:
                raise Malformed(f"negative string length {n} in a map before byte {i}")
            v, j = read_long(b, i + n)
            if v < 0:
                raise Malformed(f"negative string length {v} in a map before byte {j}")
            m[text[i : i + n]] = text[j : j + v]
            i = j + v
    if i > len(b):
        raise IndexError("map")
    if text[start:i].isascii():  # the lengths too: most are one byte below 0x80
        return m, i, False
    kv = [s for pair in m.items() for s in pair]
    replaced = bool(decode_utf8(kv, replace))
    pairs = iter(kv)
    return dict(zip(pairs, pairs, strict=False)), i, replaced


def decode_utf8(items: list[str], replace: bool = False) -> list[int]:
    """Decode again, in place and as UTF-8, the items of a ``read_texts`` list that are
    not ASCII (they are latin-1 slices of the message). Invalid UTF-8 raises
    UnicodeDecodeError, or with ``replace`` is decoded with U+FFFD and its index
    returned."""
    bad: list[int] = []
    if "".join(items).isascii():
        return bad
    for k, v in enumerate(items):
        if not v.isascii():
            raw = v.encode("latin-1")  # the item's bytes again
            try:
                items[k] = raw.decode("utf-8")
            except UnicodeDecodeError:
                if not replace:
                    raise
                items[k] = raw.decode("utf-8", "replace")
                bad.append(k)
    return bad


def read_long_array(b: bytes, i: int) -> tuple[list[int], int]:
    """Avro ``array<long>`` (or ``int``) at ``b[i]``."""
    out: list[int] = []
    append = out.append
    while True:
        count, i = read_block_count(b, i)
        if count == 0:
            return out, i
        for _ in range(count):  # one and two bytes inline: a call per item doubles the cost
            x = b[i]
            if x < 0x80:
                append((x >> 1) ^ -(x & 1))
                i += 1
            elif b[i + 1] < 0x80:
                x = (x & 0x7F) | b[i + 1] << 7
                append((x >> 1) ^ -(x & 1))
                i += 2
            else:
                x, i = read_long(b, i)
                append(x)
