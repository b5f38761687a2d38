"""Single-object encoding of ``Aggregate`` records, each series' constant part cached.

An aggregate is published for every closed window (about one per ten samples of a
series scraped every second), and fastavro takes about 10 µs a record; this writes
the cached series, name and labels bytes plus four varints, eight doubles and the counter fields
(v2: two optional doubles and an optional long) in about 2 µs. Byte-for-byte fastavro's
output (a hypothesis test checks it); if the newest ``Aggregate`` schema has another
layout, it falls back to fastavro.

``AggregateDecoder`` is the reverse for the readers of every window (the alert
evaluator reads all of them): the series' name and labels are parsed once and then
recognised by their bytes, about 4 µs a record against fastavro's 20 µs plus the
``Aggregate`` construction; other schema versions (v1 records: their counter fields
None) go through the codec.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any

from monitoring.metrics.aggregator import Aggregate
from monitoring.wire.avro_bytes import (
    SMALL_LONGS,
    Malformed,
    avro_long,
    avro_string,
    avro_string_map,
    read_long,
    read_string,
    read_string_map,
    same_layout,
)
from monitoring.wire.codec import HEADER_LEN, AvroCodec, DecodeError

AGGREGATE = "monitoring.Aggregate"
CLOSED_THROUGH = "x-closed-through"
"""Header on the last aggregate of a close step when the aggregates topic is
co-partitioned with the samples topic: its partition now holds every window ending
at or before this time (ms, decimal), so a reader need not wait to know the close is
complete."""


def closed_through(headers: Any) -> int | None:
    """The ``x-closed-through`` mark among a record's headers (as confluent-kafka gives
    them: a list of pairs, a dict or None); None if absent. ValueError if malformed.

    >>> closed_through([("x-closed-through", b"20000")]), closed_through(None)
    (20000, None)
    """
    for k, v in headers.items() if isinstance(headers, dict) else headers or ():
        if k == CLOSED_THROUGH:
            if not isinstance(v, (bytes, str)):
                raise ValueError(f"{CLOSED_THROUGH}: {v!r}")
            return int(v)
    return None


_DOUBLES = struct.Struct("<8d")
_unpack_doubles = _DOUBLES.unpack_from
_COUNTER = struct.Struct("<BdBd")  # first and increase, both present (union index 1)
# the usual tail: the three present, resets below 64 (a one-byte varint)
_COUNTER_ALL = struct.Struct("<BdBdBB")
_pack_counter_all = _COUNTER_ALL.pack
_unpack_counter_all = _COUNTER_ALL.unpack_from
_unpack_double = struct.Struct("<d").unpack_from
_NULL, _PRESENT = 0, 2  # a union's branch index 0 or 1, zig-zag encoded
_LAYOUT: dict[str, Any] = {
    "type": "record", "name": "Aggregate", "namespace": "monitoring",
    "fields": [
        {"name": "series", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "labels", "type": {"type": "map", "values": "string"}},
        *({"name": f, "type": "long"}
          for f in ("window_ms", "window_start_ms", "window_end_ms", "count")),
        *({"name": f, "type": "double"}
          for f in ("sum", "min", "max", "mean", "last", "p50", "p90", "p99")),
        {"name": "closed_by", "type": "string"},
        {"name": "first", "type": ["null", "double"]},
        {"name": "increase", "type": ["null", "double"]},
        {"name": "resets", "type": ["null", "long"]},
    ],
}  # fmt: skip


def _counter_fields(first: float | None, increase: float | None, resets: int | None) -> bytes:
    """The three optional counter fields' bytes."""
    if first is not None and increase is not None:
        head = _COUNTER.pack(_PRESENT, first, _PRESENT, increase)
    else:
        head = b"".join(
            b"\x00" if v is None else b"\x02" + struct.pack("<d", v) for v in (first, increase)
        )
    if resets is None:
        return head + b"\x00"
    return head + b"\x02" + (SMALL_LONGS[resets] if 0 <= resets < 64 else avro_long(resets))


_NO_COUNTER = _counter_fields(None, None, None)


def _counter_tail(first: float | None, increase: float | None, resets: int | None) -> bytes:
    """``_counter_fields``, the two usual cases first."""
    if first is not None and increase is not None and resets is not None and 0 <= resets < 64:
        return _pack_counter_all(_PRESENT, first, _PRESENT, increase, _PRESENT, 2 * resets)
    if first is None and increase is None and resets is None:
        return _NO_COUNTER
    return _counter_fields(first, increase, resets)


class AggregateEncoder:
    """``encode(aggregate) -> bytes``; caches up to ``max_series`` series prefixes."""

    def __init__(self, codec: AvroCodec, max_series: int = 100_000) -> None:
        sv = codec.latest(AGGREGATE)
        self.header = sv.header
        self.fast = same_layout(_LAYOUT, sv.parsed)
        self.max_series = max_series
        self._slow = functools.partial(codec.encode, AGGREGATE)
        self._prefix: dict[str, bytes] = {}
        self._closed_by = {r: avro_string(r) for r in ("watermark", "idle")}

    def encode(self, a: Aggregate) -> bytes:
        """The single-object encoded ``Aggregate`` record of ``a``."""
        return self.encode_all((a,))[0]

    def encode_all(self, aggregates: Sequence[Aggregate]) -> list[bytes]:
        """``encode`` of each aggregate; a close step's windows share their sizes and
        bounds, so their varints are written once per window rather than per record."""
        if not self.fast:
            return [self._slow(a.to_record()) for a in aggregates]
        prefixes: dict[str, bytes] = self._prefix
        bounds: dict[tuple[int, int, int], bytes] = {}
        closed_by = self._closed_by
        pack = _DOUBLES.pack
        out: list[bytes] = []
        for a in aggregates:
            prefix = prefixes.get(a.series) or self._series_prefix(a)
            window = (a.window_ms, a.window_start_ms, a.window_end_ms)
            bound = bounds.get(window)
            if bound is None:
                bound = bounds[window] = b"".join(map(avro_long, window))
            out.append(
                b"".join(
                    (
                        prefix,
                        bound,
                        avro_long(a.count),
                        pack(a.sum, a.min, a.max, a.mean, a.last, a.p50, a.p90, a.p99),
                        closed_by.get(a.closed_by) or avro_string(a.closed_by),
                        _counter_tail(a.first, a.increase, a.resets),
                    )
                )
            )
        return out

    def _series_prefix(self, a: Aggregate) -> bytes:
        if len(self._prefix) >= self.max_series:
            self._prefix.clear()
        prefix = self._prefix[a.series] = b"".join(
            (self.header, avro_string(a.series), avro_string(a.name), avro_string_map(a.labels))
        )
        return prefix


class AggregateDecoder:
    """``decode(bytes) -> Aggregate``; caches up to ``max_series`` series prefixes.

    Raises ``DecodeError`` (the codec's reasons, and ``wrong-record``).
    """

    def __init__(self, codec: AvroCodec, max_series: int = 100_000) -> None:
        sv = codec.latest(AGGREGATE)
        self.header = sv.header
        self.fast = same_layout(_LAYOUT, sv.parsed)
        self.codec = codec
        self.max_series = max_series
        # series key -> (prefix bytes through the labels, name, labels)
        self._series: dict[str, tuple[bytes, str, dict[str, str]]] = {}

    def decode(self, data: bytes | None) -> Aggregate:
        """The ``Aggregate`` of one single-object encoded record."""
        if self.fast and isinstance(data, bytes) and data[:HEADER_LEN] == self.header:
            try:
                return self._fast(data)
            except (IndexError, Malformed, UnicodeDecodeError, struct.error) as e:
                raise DecodeError("bad-body", f"Aggregate body: {e!r}") from None
        decoded = self.codec.decode(data)
        if decoded.name != AGGREGATE:
            raise DecodeError("wrong-record", f"{decoded.name} is not an Aggregate")
        return Aggregate(**decoded.record)

    def _fast(self, b: bytes) -> Aggregate:
        series, i = read_string(b, HEADER_LEN)
        labels: dict[str, str]
        hit = self._series.get(series)
        if hit is not None and b.startswith(hit[0]):
            prefix, name, labels = hit
            i = len(prefix)
        else:
            name, i = read_string(b, i)
            labels, i, _ = read_string_map(b, b.decode("latin-1"), i)
            if len(self._series) >= self.max_series:
                self._series.clear()
            self._series[series] = (b[:i], name, labels)
        window_ms, i = read_long(b, i)
        start, i = read_long(b, i)
        end, i = read_long(b, i)
        count, i = read_long(b, i)
        d = _unpack_doubles(b, i)
        closed_by, i = read_string(b, i + 64)
        first: float | None
        increase: float | None
        resets: int | None
        if len(b) - i == _COUNTER_ALL.size and b[i] == b[i + 9] == b[i + 18] == _PRESENT:
            _, first, _, increase, _, r = _unpack_counter_all(b, i)  # the usual tail
            if r & 0x80:
                raise Malformed(f"varint running past the end at byte {i + 19}")
            resets, i = (r >> 1) ^ -(r & 1), len(b)
        elif b[i:] == _NO_COUNTER:
            first = increase = resets = None
            i = len(b)
        else:
            first, i = _read_optional_double(b, i)
            increase, i = _read_optional_double(b, i)
            tag = b[i]
            if tag == _NULL:
                resets, i = None, i + 1
            elif tag == _PRESENT:
                resets, i = read_long(b, i + 1)
            else:
                raise Malformed(f"union branch {tag} at byte {i}")
        if i != len(b):
            raise DecodeError("trailing-bytes", f"{len(b) - i} bytes after an Aggregate body")
        return Aggregate(
            series, name, labels, window_ms, start, end, count,
            d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], closed_by, first, increase, resets,
        )  # fmt: skip


def _read_optional_double(b: bytes, i: int) -> tuple[float | None, int]:
    """An Avro ``["null", "double"]`` at ``i``: the value (None) and the next index."""
    tag = b[i]
    if tag == _NULL:
        return None, i + 1
    if tag != _PRESENT:
        raise Malformed(f"union branch {tag} at byte {i}")
    if i + 9 > len(b):
        raise IndexError("double past the end")
    return _unpack_double(b, i + 1)[0], i + 9
