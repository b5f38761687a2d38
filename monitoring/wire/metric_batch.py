"""``MetricBatch`` messages decoded straight into numpy arrays (``MetricColumns``).

fastavro reads an array item by item through a file object and gives Python lists;
the aggregator works on numpy arrays per batch. For the current writer schema (v1,
checked with ``same_layout``) this decoder reads the message by hand: strings are
slices of one latin-1 view (items that are not ASCII decoded again as UTF-8), the
``int``/``long`` arrays are zig-zag varints decoded in bulk with numpy (a block of
``n`` items ends at its n-th byte below 0x80), ``values`` is ``np.frombuffer``.
Any other version or layout goes through fastavro (``AvroCodec.decode``) and is
converted to the same arrays.

Stricter than fastavro on malformed bodies (``DecodeError`` ``bad-body``): a varint
longer than 10 bytes or beyond 64 bits, and a negative enum index (which fastavro
reads as Python's negative list index). Like fastavro, an ``int`` item is not held
to 32 bits, and nothing is checked about meaning (array lengths, index range,
finite values): the caller does that on the arrays.

>>> codec = AvroCodec.from_directory()
>>> data = codec.encode(BATCH, {"source": "sdk", "series": ["up"], "kinds": ["GAUGE"],
...     "units": [""], "series_index": [0, 0], "timestamps_ms": [5, -6],
...     "values": [1.0, 0.5]})
>>> cols = MetricBatchDecoder(codec).decode(data)
>>> cols.series, cols.kinds, cols.timestamps_ms.tolist(), cols.values.tolist()
(['up'], ['GAUGE'], [5, -6], [1.0, 0.5])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeGuard

import numpy as np

from monitoring.metrics.samples import BATCH
from monitoring.wire.avro_bytes import (
    Malformed,
    decode_utf8,
    read_block_count,
    read_string_array,
    read_texts,
    same_layout,
)
from monitoring.wire.codec import HEADER_LEN, AvroCodec, DecodeError
from monitoring.wire.sample_encoding import KIND_SYMBOLS

_STRS = {"type": "array", "items": "string"}
_LAYOUT: dict[str, Any] = {
    "type": "record", "name": "MetricBatch", "namespace": "monitoring",
    "fields": [{"name": "source", "type": "string"}, {"name": "series", "type": _STRS},
               {"name": "kinds", "type": {"type": "array", "items": {
                   "type": "enum", "name": "MetricKind", "symbols": list(KIND_SYMBOLS)}}},
               {"name": "units", "type": _STRS},
               {"name": "series_index", "type": {"type": "array", "items": "int"}},
               {"name": "timestamps_ms", "type": {"type": "array", "items": "long"}},
               {"name": "values", "type": {"type": "array", "items": "double"}}],
}  # fmt: skip
_SYMBOLS = np.array(KIND_SYMBOLS, dtype=object)
_EMPTY_I64 = np.empty(0, np.int64)
_EMPTY_F64 = np.empty(0, np.float64)


class MetricColumns(NamedTuple):
    """One MetricBatch as columns: sample ``i`` is ``series[series_index[i]]`` at
    ``timestamps_ms[i]`` with ``values[i]``; ``kinds`` and ``units`` parallel ``series``
    (or empty)."""

    source: str
    series: list[str]
    kinds: list[str]  # enum symbols, e.g. "GAUGE"; [] when absent
    units: list[str]
    series_index: np.ndarray  # int64
    timestamps_ms: np.ndarray  # int64
    values: np.ndarray  # float64


def _bad(detail: str) -> DecodeError:
    return DecodeError("bad-body", f"MetricBatch: {detail}")


def _block_count(b: bytes, i: int, field: str) -> tuple[int, int]:
    """``read_block_count``, naming the field if the block runs past the end."""
    try:
        return read_block_count(b, i)
    except IndexError as e:
        raise IndexError(f"{field}: {e}") from None


def _strings(b: bytes, text: str, i: int, ascii: bool) -> tuple[list[str], int]:
    """An array of strings at ``i`` (none to decode again as UTF-8 if ``ascii``)."""
    out, i = read_string_array(b, text, i)
    if not ascii:
        decode_utf8(out)
    return out, i


# -- numpy arrays -------------------------------------------------------------------
def _varint_block(b: bytes, i: int, n: int, field: str) -> tuple[np.ndarray, int]:
    """``n`` (>= 1) zig-zag varints at ``b[i]`` as int64, and the index after them.

    All one byte (small indexes): a table. All as wide as the first, up to 7 bytes
    (ms timestamps take six from 1971 to 2109): a (n, width) view times powers of 128
    in float64 (exact below 2**53). Otherwise each item's end is the next byte below
    0x80: 8 bytes read at each start, masked to its length and packed (SWAR); items
    of 9-10 bytes by a reduction over their bytes.
    """
    head = np.frombuffer(b, np.uint8, n, i)
    if int(head.max()) < 0x80:
        return _ZIGZAG1[head], i + n
    avail = len(b) - i
    width = 1
    while width < 10 and b[i + width - 1] >= 0x80:
        width += 1
    if width <= 7 and width * n <= avail:
        arr = np.frombuffer(b, np.uint8, width * n, i)
        term = arr < 0x80
        if np.count_nonzero(term) == n and term[width - 1 :: width].all():
            rows = (arr.reshape(n, width) & 0x7F).astype(np.float64)
            return _zigzag((rows @ _POW128[:width]).astype(np.uint64)), i + width * n
    w = min(avail, 3 * n)  # most blocks end within 3 n bytes; else look up to 10 n
    ends = np.flatnonzero(np.frombuffer(b, np.uint8, w, i) < 0x80)[:n]
    if len(ends) < n and w < avail:
        w = min(avail, 10 * n)
        ends = np.flatnonzero(np.frombuffer(b, np.uint8, w, i) < 0x80)[:n]
    starts = np.concatenate((_ZERO, ends[:-1] + 1))
    lengths = ends + 1 - starts
    longest = int(lengths.max()) if len(ends) else 0
    if longest > 10 or (len(ends) < n and w < avail):  # (10 n bytes hold n varints)
        raise _bad(f"{field}: varint longer than 10 bytes")
    if len(ends) < n:
        raise IndexError(field)
    size = int(ends[-1]) + 1
    if longest <= 8:
        if size + 8 <= avail:  # 8 bytes from each offset
            words = np.ndarray((size,), "<u8", b, i, (1,))
        else:
            pad = np.zeros(size + 8, np.uint8)
            pad[:size] = np.frombuffer(b, np.uint8, size, i)
            words = np.ndarray((size,), "<u8", pad, 0, (1,))
        return _zigzag(_pack(words[starts] & _LOW7[lengths], longest)), i + size
    block = np.frombuffer(b, np.uint8, size, i)
    pos = np.arange(size) - np.repeat(starts, lengths)
    tenth = block[pos == 9]
    if len(tenth) and int(tenth.max()) > 1:  # a 10th byte holds bit 63 alone
        raise _bad(f"{field}: varint beyond 64 bits")
    parts = (block & 0x7F).astype(np.uint64) << (pos * 7).astype(np.uint64)
    return _zigzag(np.bitwise_or.reduceat(parts, starts)), i + size


_ZIGZAG1 = np.array([(z >> 1) ^ -(z & 1) for z in range(128)], np.int64)
_POW128 = np.array([128.0**k for k in range(8)])
_LOW7 = np.array([sum(0x7F << 8 * k for k in range(n)) for n in range(9)], np.uint64)
_ONE = np.uint64(1)
_ZERO = np.zeros(1, np.int64)


def _pack(x: np.ndarray, longest: int) -> np.ndarray:
    """The 7-bit groups in the low bytes of each uint64 (continuation bits cleared)
    packed together: 2 bytes -> 14 bits per 16, 4 -> 28 per 32, 8 -> 56 bits."""
    x = (x & np.uint64(0x007F007F007F007F)) | ((x >> np.uint64(1)) & np.uint64(0x3F803F803F803F80))
    if longest > 2:
        x = (x & np.uint64(0x00003FFF00003FFF)) | (
            (x >> np.uint64(2)) & np.uint64(0x0FFFC0000FFFC000)
        )
    if longest > 4:
        x = (x & np.uint64(0x000000000FFFFFFF)) | (
            (x >> np.uint64(4)) & np.uint64(0x00FFFFFFF0000000)
        )
    return x


def _zigzag(z: np.ndarray) -> np.ndarray:
    """Zig-zag decoded uint64 as int64."""
    sign = (z & _ONE).view(np.int64)
    np.negative(sign, out=sign)
    out = (z >> _ONE).view(np.int64)
    out ^= sign
    return out


def _double_block(b: bytes, i: int, n: int, field: str) -> tuple[np.ndarray, int]:
    """``n`` doubles at ``b[i]`` (a contiguous, aligned copy), and the index after them."""
    if 8 * n > len(b) - i:
        raise IndexError(field)
    return np.frombuffer(b, "<f8", n, i).astype(np.float64), i + 8 * n


BlockReader = Callable[[bytes, int, int, str], tuple[np.ndarray, int]]


def _array(
    b: bytes, i: int, field: str, read: BlockReader, empty: np.ndarray
) -> tuple[np.ndarray, int]:
    """An array at ``i`` as one numpy array, each block's items read by ``read``."""
    parts = []
    while True:
        count, i = _block_count(b, i, field)
        if count == 0:
            break
        part, i = read(b, i, count, field)
        parts.append(part)
    if not parts:
        return empty, i
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), i


def _kinds(b: bytes, i: int) -> tuple[list[str], int]:
    """The enum array ``kinds`` as symbols."""
    out: list[str] = []
    while True:
        count, i = _block_count(b, i, "kinds")
        if count == 0:
            return out, i
        raw = b[i : i + count]
        if raw == raw[:1] * count and raw[0] < 2 * len(KIND_SYMBOLS) and not raw[0] & 1:
            out += [KIND_SYMBOLS[raw[0] >> 1]] * count  # all one kind
            i += count
            continue
        idx, i = _varint_block(b, i, count, "kinds")
        if int(idx.min()) < 0 or int(idx.max()) >= len(KIND_SYMBOLS):
            bad = int(idx[(idx < 0) | (idx >= len(KIND_SYMBOLS))][0])
            raise _bad(f"kinds: {bad} is not a MetricKind index (0-{len(KIND_SYMBOLS) - 1})")
        out += _SYMBOLS[idx].tolist()


# -- decoder ------------------------------------------------------------------------
class MetricBatchDecoder:
    """Decodes MetricBatch messages of any registered version into ``MetricColumns``."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        versions = [v for v in codec.versions() if v.name == BATCH]
        self.headers = frozenset(v.header for v in versions)
        reader = codec.latest(BATCH)
        v1 = [v for v in versions if v.version == 1]
        self._fast_header = (
            v1[0].header
            if v1 and reader.version == 1 and same_layout(_LAYOUT, v1[0].parsed)
            else None
        )

    def accepts(self, data: Any) -> TypeGuard[bytes]:
        """Whether ``data`` is bytes whose header names a MetricBatch version."""
        return isinstance(data, bytes) and data[:HEADER_LEN] in self.headers

    def decode(self, data: bytes) -> MetricColumns:
        """Raises DecodeError: the codec's reasons (``not-bytes``, ``bad-marker``,
        ``unknown-fingerprint``, ...), ``truncated``, ``bad-body``, ``trailing-bytes``,
        or ``not-metric-batch`` (another record)."""
        if isinstance(data, bytes) and data[:HEADER_LEN] == self._fast_header:
            try:
                return self._decode_v1(data)
            except IndexError as e:
                raise DecodeError("truncated", f"the MetricBatch body ends early ({e})") from None
            except Malformed as e:
                raise _bad(str(e)) from None
            except UnicodeDecodeError as e:
                raise _bad(f"invalid UTF-8 ({e.reason} at {e.start})") from None
        return self._fallback(data)

    def _decode_v1(self, b: bytes) -> MetricColumns:
        text = b.decode("latin-1")
        ascii = text.isascii() or text[HEADER_LEN:].isascii()
        source, i = read_texts(b, text, HEADER_LEN, 1)
        decode_utf8(source)
        series, i = _strings(b, text, i, ascii)
        kinds, i = _kinds(b, i)
        units, i = _strings(b, text, i, ascii)
        series_index, i = _array(b, i, "series_index", _varint_block, _EMPTY_I64)
        timestamps, i = _array(b, i, "timestamps_ms", _varint_block, _EMPTY_I64)
        values, i = _array(b, i, "values", _double_block, _EMPTY_F64)
        if i != len(b):
            raise DecodeError("trailing-bytes", f"{len(b) - i} bytes after a MetricBatch body")
        return MetricColumns(source[0], series, kinds, units, series_index, timestamps, values)

    def _fallback(self, data: bytes) -> MetricColumns:
        """fastavro (another version or layout), resolved to the newest version."""
        decoded = self.codec.decode(data)
        if decoded.name != BATCH:
            raise DecodeError("not-metric-batch", f"{decoded.name} v{decoded.version}")
        rec = decoded.record
        try:
            return MetricColumns(
                rec.get("source", ""),
                list(rec["series"]),
                list(rec.get("kinds", [])),
                list(rec.get("units", [])),
                np.array(rec["series_index"], dtype=np.int64),
                np.array(rec["timestamps_ms"], dtype=np.int64),
                np.array(rec["values"], dtype=np.float64),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise _bad(f"v{decoded.version} does not convert to columns: {e!r}") from e
