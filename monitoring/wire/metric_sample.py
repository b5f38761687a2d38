"""Single ``MetricSample`` messages read without fastavro once their series is known.

A ``MetricSample`` (current version, checked with ``same_layout``) is the series' name,
then the value (8 bytes) and the timestamp (a varint), then the rest of the series
(labels, kind, unit) and the source. The SDK writes those series bytes from a cache
(``sample_encoding.SampleEncoder``); this decoder reads them back the same way. The
first message of a series (name plus rest) goes through ``AvroCodec.decode`` and
``check_series``; its ``SeriesInfo``, or the reason it is invalid, is kept under those
bytes. Later messages cost a varint, a double and a dictionary lookup.

What it accepts and rejects, and the samples it returns, are those of
``AvroCodec.decode`` followed by ``SampleDecoder.samples`` (tested with hypothesis).

>>> from monitoring.wire.sample_encoding import SampleEncoder, make_series
>>> codec = AvroCodec.from_directory()
>>> series = make_series("up", {"job": "api"})
>>> data = SampleEncoder(codec).encode(series, 1_700_000_000_000, 1.0)
>>> s = MetricSampleDecoder(codec).decode(data, now_ms=1_700_000_000_000)
>>> s.series, s.timestamp_ms, s.value
('up{job="api"}', 1700000000000, 1.0)
"""

from __future__ import annotations

import struct
from typing import TypeGuard

from monitoring.metrics.samples import (
    CACHE_ENTRY_BYTES,
    SAMPLE,
    InvalidSample,
    Limits,
    Sample,
    SeriesInfo,
    check_point,
    check_series,
    series_key,
)
from monitoring.wire.avro_bytes import DOUBLE, Malformed, read_long, same_layout
from monitoring.wire.codec import HEADER_LEN, AvroCodec
from monitoring.wire.sample_encoding import SAMPLE_LAYOUT

_LIMITS = Limits()
_unpack_double = DOUBLE.unpack_from


class MetricSampleDecoder:
    """Reads current-version ``MetricSample`` messages into ``Sample`` values."""

    def __init__(
        self,
        codec: AvroCodec,
        limits: Limits = _LIMITS,
        max_series: int = 200_000,
        max_cache_bytes: int = 32 << 20,
    ) -> None:
        sv = codec.latest(SAMPLE)
        self.codec = codec
        self.limits = limits
        self.max_series = max_series
        self.max_cache_bytes = max_cache_bytes
        self._cache_bytes = 0
        self.header = sv.header if same_layout(SAMPLE_LAYOUT, sv.parsed) else None
        self._series: dict[bytes, SeriesInfo | InvalidSample] = {}

    def accepts(self, data: object) -> TypeGuard[bytes]:
        """Whether ``data`` names the current ``MetricSample`` version (and its layout
        is the one this decoder reads)."""
        return (
            self.header is not None and isinstance(data, bytes) and data[:HEADER_LEN] == self.header
        )

    def decode(self, data: bytes, now_ms: int) -> Sample:
        """The message's sample; raises ``DecodeError`` or ``InvalidSample`` as the
        codec and ``SampleDecoder`` would."""
        try:
            n, i = read_long(data, HEADER_LEN)
            if n < 0:
                raise IndexError
            j = i + n
            value = _unpack_double(data, j)[0]
            ts, k = read_long(data, j + 8)
        except (IndexError, Malformed, struct.error):
            return self._first(b"", data, now_ms)  # the codec says what is wrong
        key = data[HEADER_LEN:j] + data[k:]
        info = self._series.get(key)
        if info is None:
            return self._first(key, data, now_ms)
        if isinstance(info, InvalidSample):
            raise InvalidSample(info.reason, info.detail)
        check_point(ts, value, now_ms, self.limits)
        return Sample(info.key, info.name, info.labels, ts, value, info.kind, info.unit)

    def _first(self, key: bytes, data: bytes, now_ms: int) -> Sample:
        """A series not seen yet: the whole message through the codec, then checked."""
        record = self.codec.decode(data).record
        name, labels = record["name"], record["labels"]
        info: SeriesInfo | InvalidSample
        try:
            check_series(name, labels, self.limits)
            info = SeriesInfo(
                series_key(name, labels), name, labels, record["kind"], record["unit"]
            )
        except InvalidSample as e:
            info = e
        if key:
            cost = CACHE_ENTRY_BYTES + 3 * len(key)  # the bytes, and the key, name, labels
            if len(self._series) >= self.max_series or (
                self._cache_bytes + cost > self.max_cache_bytes
            ):
                self._series.clear()  # an accelerator: a miss costs one codec decode
                self._cache_bytes = 0
            self._series[key] = info
            self._cache_bytes += cost
        if isinstance(info, InvalidSample):
            raise InvalidSample(info.reason, info.detail)
        ts, value = record["timestamp_ms"], record["value"]
        check_point(ts, value, now_ms, self.limits)
        return Sample(info.key, info.name, info.labels, ts, value, info.kind, info.unit)
