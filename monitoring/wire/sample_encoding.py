"""Series and sample encoding of the producer SDK.

``make_series`` validates a series once into a ``SeriesRef``; ``BatchEncoder`` writes
``MetricBatch`` (parallel arrays) with fastavro; ``SampleEncoder`` writes
``MetricSample`` from the series' Avro descriptor bytes (made at its first single
sample and cached by series), byte for byte fastavro's output, and falls back to
fastavro if the schema's layout changes. Batches never need the descriptor, so a series
first seen costs none (a third of a scraped series' first sight).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from monitoring.metrics.samples import (
    BATCH,
    SAMPLE,
    InvalidSample,
    Limits,
    check_series,
    series_key,
)
from monitoring.wire.avro_bytes import (
    DOUBLE,
    avro_long,
    avro_string,
    avro_string_map,
    same_layout,
)
from monitoring.wire.codec import AvroCodec

KIND_SYMBOLS = ("GAUGE", "COUNTER", "HISTOGRAM_BUCKET", "SUMMARY", "UNTYPED")
_KIND_INDEX = {k: i for i, k in enumerate(KIND_SYMBOLS)}
KINDS = frozenset(KIND_SYMBOLS)
DEFAULT_LIMITS = Limits()
_pack_double = DOUBLE.pack
SERIES_CACHE_MAX = 100_000  # series whose bytes an encoder (or a collector) caches


class SeriesRef(NamedTuple):
    """One series as the SDK sends it: key plus the descriptor fields of the contract."""

    key: str
    name: str
    labels: Mapping[str, str]
    kind: str = "GAUGE"
    unit: str = ""
    descriptor: bytes = b""  # Avro bytes of name, labels, kind, unit (made when first needed)


Item = tuple[SeriesRef, int, float]
"""A buffered sample: (series, timestamp_ms, value)."""


def batch_record(items: Sequence[Item], source: str = "") -> dict[str, Any]:
    """The ``MetricBatch`` record (parallel arrays) for samples of one partition."""
    keys: list[str] = []
    kinds: list[str] = []
    units: list[str] = []
    index_of: dict[str, int] = {}
    series_index: list[int] = []
    stamps: list[int] = []
    values: list[float] = []
    for s, ts, v in items:
        i = index_of.get(s.key)
        if i is None:
            i = index_of[s.key] = len(keys)
            keys.append(s.key)
            kinds.append(s.kind)
            units.append(s.unit)
        series_index.append(i)
        stamps.append(ts)
        values.append(v)
    return {
        "source": source,
        "series": keys,
        "kinds": kinds,
        "units": units,
        "series_index": series_index,
        "timestamps_ms": stamps,
        "values": values,
    }


class Described(Protocol):
    """What a ``MetricSample`` says of its series (a ``SeriesRef``, a ``Sample``)."""

    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def kind(self) -> str: ...
    @property
    def unit(self) -> str: ...


def sample_record(
    s: Described, timestamp_ms: int, value: float, source: str = ""
) -> dict[str, Any]:
    """The ``MetricSample`` record of one sample."""
    return {
        "name": s.name,
        "value": value,
        "timestamp_ms": timestamp_ms,
        "labels": s.labels,
        "kind": s.kind,
        "unit": s.unit,
        "source": source,
    }


SAMPLE_LAYOUT: dict[str, Any] = {  # MetricSample v2, which the fast paths read and write
    "type": "record", "name": "MetricSample", "namespace": "monitoring",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "value", "type": "double"},
        {"name": "timestamp_ms", "type": "long"},
        {"name": "labels", "type": {"type": "map", "values": "string"}},
        {"name": "kind", "type": {"type": "enum", "name": "MetricKind",
                                  "symbols": list(KIND_SYMBOLS)}},
        {"name": "unit", "type": "string"},
        {"name": "source", "type": "string"},
    ],
}  # fmt: skip


def encode_descriptor(name: str, labels: Mapping[str, str], kind: str, unit: str) -> bytes:
    """Avro bytes of a series' name, labels map, kind enum and unit (MetricSample's
    fields, in its order, with the value and timestamp cut out)."""
    return b"".join(
        (avro_string(name), avro_string_map(labels), avro_long(_KIND_INDEX[kind]),
         avro_string(unit))
    )  # fmt: skip


class BatchEncoder:
    """Single-object encoding of ``MetricBatch`` (fastavro; series go as key strings)."""

    def __init__(self, codec: AvroCodec) -> None:
        self._encode = functools.partial(codec.encode, BATCH)

    def encode(self, items: Sequence[Item], source: str = "") -> bytes:
        return self._encode(batch_record(items, source))


def make_series(
    name: str,
    labels: Mapping[str, Any] | None,
    kind: str = "GAUGE",
    unit: str = "",
    limits: Limits = DEFAULT_LIMITS,
) -> SeriesRef:
    """Validate a series (name, labels, kind) and build its ``SeriesRef``.

    Raises ``InvalidSample`` for a name or labels the contract rejects.
    """
    lab = {str(k): str(v) for k, v in labels.items()} if labels else {}
    check_series(name, lab, limits)
    if kind not in KINDS:
        raise InvalidSample("bad-kind", f"kind {kind!r} is not one of {sorted(KINDS)}")
    return SeriesRef(series_key(name, lab), name, lab, kind, unit)


class SampleEncoder:
    """Single-object encoding of ``MetricSample``: the series' bytes are cached, so a
    sample costs a double and a varint (byte-for-byte fastavro's output, tested)."""

    def __init__(self, codec: AvroCodec, source: str = "") -> None:
        sv = codec.latest(SAMPLE)
        self.header = sv.header
        self.source = source
        self._slow = functools.partial(codec.encode, SAMPLE)
        self._source = avro_string(source)
        self.fast = same_layout(SAMPLE_LAYOUT, sv.parsed)
        self._parts: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}

    def encode(self, s: SeriesRef, timestamp_ms: int, value: float) -> bytes:
        if not self.fast:
            return self._slow(sample_record(s, timestamp_ms, value, self.source))
        ck = (s.key, s.kind, s.unit)
        parts = self._parts.get(ck)
        if parts is None:
            d = s.descriptor or encode_descriptor(s.name, s.labels, s.kind, s.unit)
            n = len(avro_string(s.name))  # the descriptor starts with the name, as the sample does
            if len(self._parts) >= SERIES_CACHE_MAX:
                self._parts.clear()
            parts = self._parts[ck] = (self.header + d[:n], d[n:] + self._source)
        return b"".join((parts[0], _pack_double(value), avro_long(timestamp_ms), parts[1]))
