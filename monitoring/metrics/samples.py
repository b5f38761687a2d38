"""Metric samples as values, the series key, and the validation every consumer applies.

Pure Python: no Kafka, no ClickHouse. The decoded Avro records (MetricSample or
MetricBatch) become ``Sample`` values here, or an ``InvalidSample`` naming the reason.

>>> series_key("cpu_usage", {"host": "a", "core": "0"})
'cpu_usage{core="0",host="a"}'
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from monitoring.metrics.prom_syntax import LABEL_NAME, METRIC_NAME

SAMPLE = "monitoring.MetricSample"
BATCH = "monitoring.MetricBatch"

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
"""Prometheus's staleness marker (``value.StaleNaN``): a NaN with exactly these bits
says the series ended (its target failed or stopped exposing it). It is the one
non-finite value the contract accepts; it is not a value: aggregation skips it, the
store keeps it, and PromQL's instant selectors stop at it."""


def is_stale(value: float) -> bool:
    """Whether ``value`` is the staleness marker (bitwise: any other NaN is not).

    >>> is_stale(STALE_NAN), is_stale(float("nan")), is_stale(1.0)
    (True, False, False)
    """
    return value != value and struct.pack("<d", value) == _STALE_BYTES


_STALE_BYTES = struct.pack("<Q", STALE_NAN_BITS)


def stale_mask(values: np.ndarray) -> np.ndarray:
    """Which of the float64 ``values`` are staleness markers."""
    return np.asarray(values, np.float64).view(np.uint64) == STALE_NAN_BITS


class InvalidSample(ValueError):
    """A sample breaks the contract; ``reason`` is a short machine-friendly cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Sample(NamedTuple):
    """One validated sample of one series."""

    series: str
    name: str
    labels: Mapping[str, str]
    timestamp_ms: int
    value: float
    kind: str = "GAUGE"
    unit: str = ""


CACHE_ENTRY_BYTES = 400  # a cached series' fixed cost (entry, SeriesInfo, labels dict)


class SeriesInfo(NamedTuple):
    """A validated series as a message names it."""

    key: str
    name: str
    labels: Mapping[str, str]
    kind: str = "GAUGE"
    unit: str = ""


class SampleBatch(NamedTuple):
    """Validated samples of one message as columns: sample ``i`` is
    ``series[index[i]]`` at ``timestamps_ms[i]`` with ``values[i]`` (int64, int64,
    float64 arrays). Entries of ``series`` that no sample points at may be None.

    >>> b = SampleBatch.from_samples([Sample("up", "up", {}, 5, 1.0)])
    >>> (b.series[0].key, b.series_index.tolist(), b.samples()[0].value)
    ('up', [0], 1.0)
    """

    series: list[SeriesInfo | None]
    series_index: np.ndarray
    timestamps_ms: np.ndarray
    values: np.ndarray

    @classmethod
    def from_samples(cls, samples: Iterable[Sample]) -> SampleBatch:
        """Columns of ``Sample`` values (a series' first sample gives its kind and unit)."""
        series: list[SeriesInfo | None] = []
        position: dict[str, int] = {}
        index: list[int] = []
        stamps: list[int] = []
        values: list[float] = []
        for s in samples:
            i = position.get(s.series)
            if i is None:
                i = position[s.series] = len(series)
                series.append(SeriesInfo(s.series, s.name, s.labels, s.kind, s.unit))
            index.append(i)
            stamps.append(s.timestamp_ms)
            values.append(s.value)
        return cls(series, _ints(index), _ints(stamps), np.array(values, np.float64))

    def samples(self) -> list[Sample]:
        """The batch as ``Sample`` values, in order."""
        out = []
        for i, ts, v in zip(
            self.series_index.tolist(),
            self.timestamps_ms.tolist(),
            self.values.tolist(),
            strict=True,
        ):
            d = self.series[i]
            assert d is not None
            out.append(Sample(d.key, d.name, d.labels, ts, v, d.kind, d.unit))
        return out


def without_stale(samples: Sequence[Sample] | SampleBatch) -> Sequence[Sample] | SampleBatch:
    """``samples`` without staleness markers (the same object when there are none); a
    batch's series that only markers pointed at become None.

    >>> up = [Sample("up", "up", {}, 5, STALE_NAN), Sample("up", "up", {}, 6, 1.0)]
    >>> without_stale(SampleBatch.from_samples(up)).values.tolist()
    [1.0]
    """
    if isinstance(samples, SampleBatch):
        values = samples.values
        if not len(values) or np.isfinite(values).all():
            return samples
        keep = ~stale_mask(values)
        if keep.all():
            return samples
        index = samples.series_index[keep]
        used = np.zeros(len(samples.series), bool)
        used[index] = True
        series = [d if u else None for d, u in zip(samples.series, used.tolist(), strict=True)]
        return SampleBatch(series, index, samples.timestamps_ms[keep], values[keep])
    if all(s.value == s.value for s in samples):
        return samples
    return [s for s in samples if not is_stale(s.value)]


def _ints(items: list[int]) -> np.ndarray:
    return np.array(items, np.int64) if items else np.zeros(0, np.int64)


@dataclass(frozen=True)
class Limits:
    """What a sample may carry; beyond these it goes to the dead-letter topic.

    Timestamps must lie in [min_timestamp_ms, now + max_future_skew_ms], where ``now``
    is what the caller passes as ``now_ms`` (``reference`` names it in the reason): the
    wall clock, or, for the aggregation agent, the timestamp of the Kafka record that
    carried the sample, so that the same record gets the same verdict on replay.
    """

    max_labels: int = 32
    max_label_name_len: int = 128
    max_label_value_len: int = 2048
    max_name_len: int = 256
    min_timestamp_ms: int = 946_684_800_000  # 2000-01-01
    max_future_skew_ms: int = 3_600_000
    reference: str = "now"


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """Prometheus-style series identity: ``name{k="v",...}`` with labels sorted by name."""
    if not labels:
        return name
    inner = ",".join(
        f'{k}="{v}"' if '"' not in v and "\\" not in v and "\n" not in v else f'{k}="{_escape(v)}"'
        for k, v in sorted(labels.items())
    )
    return f"{name}{{{inner}}}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def check_series(name: str, labels: Mapping[str, str], limits: Limits) -> None:
    """Raise InvalidSample if the metric name or labels break the contract."""
    if not name or len(name) > limits.max_name_len or not METRIC_NAME.match(name):
        raise InvalidSample(
            "bad-name", f"metric name {name[:80]!r} is not [a-zA-Z_:][a-zA-Z0-9_:]*"
        )
    if len(labels) > limits.max_labels:
        raise InvalidSample("too-many-labels", f"{len(labels)} labels, limit {limits.max_labels}")
    for k, v in labels.items():
        if len(k) > limits.max_label_name_len or not LABEL_NAME.match(k) or k.startswith("__"):
            raise InvalidSample("bad-label-name", f"label name {k[:80]!r}")
        if len(v) > limits.max_label_value_len:
            raise InvalidSample(
                "label-too-long",
                f"label {k} has {len(v)} chars, limit {limits.max_label_value_len}",
            )


def check_point(timestamp_ms: int, value: float, now_ms: int, limits: Limits) -> None:
    """Raise InvalidSample for non-finite values (but the staleness marker) or absurd
    timestamps."""
    if not math.isfinite(value) and not is_stale(value):
        raise InvalidSample("non-finite-value", f"value {value!r}")
    if timestamp_ms < limits.min_timestamp_ms:
        raise InvalidSample("timestamp-too-old", f"timestamp_ms {timestamp_ms} is before 2000")
    if timestamp_ms > now_ms + limits.max_future_skew_ms:
        raise InvalidSample(
            "timestamp-in-future",
            f"timestamp_ms {timestamp_ms} is {timestamp_ms - now_ms} ms ahead of "
            f"{limits.reference} (limit {limits.max_future_skew_ms} ms)",
        )


_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|\})')
_UNESCAPE = re.compile(r"\\(.)")


def parse_series_key(key: str) -> tuple[str, dict[str, str]]:
    """Inverse of ``series_key``: the name and labels of a canonical series key.

    >>> parse_series_key('cpu{core="0",host="a"}')
    ('cpu', {'core': '0', 'host': 'a'})

    Raises InvalidSample("bad-series-key") unless ``key`` is exactly what
    ``series_key`` writes (labels sorted, escapes as in Prometheus' text format).
    """
    brace = key.find("{")
    if brace < 0:
        return key, {}
    name, pos, labels = key[:brace], brace + 1, {}
    while True:
        m = _PAIR.match(key, pos)
        if m is None:
            raise InvalidSample("bad-series-key", f"cannot parse labels at {pos} of {key[:120]!r}")
        value = m.group(2)
        labels[m.group(1)] = _UNESCAPE.sub(_unescape_one, value) if "\\" in value else value
        pos = m.end()
        if m.group(3) == "}":
            break
    if pos != len(key) or series_key(name, labels) != key:
        raise InvalidSample("bad-series-key", f"{key[:120]!r} is not canonical (sorted labels)")
    return name, labels


def _unescape_one(m: re.Match[str]) -> str:
    return "\n" if m.group(1) == "n" else m.group(1)


class BatchResult(NamedTuple):
    """Valid samples of one event, and (index, InvalidSample) for the rejected ones."""

    samples: list[Sample]
    rejected: list[tuple[int, InvalidSample]]


class ColumnsResult(NamedTuple):
    """``BatchResult`` as columns: the valid samples, and the rejected ones by index."""

    batch: SampleBatch
    rejected: list[tuple[int, InvalidSample]]


class SampleDecoder:
    """Turns decoded MetricSample / MetricBatch records into validated samples.

    Parsed and checked series keys of batches are cached (up to ``max_series`` keys and
    about ``max_cache_bytes``; the cache is emptied when full), so a series' name and
    labels are validated once per process, not once per batch.

    >>> d = SampleDecoder()
    >>> rec = {"series": ['up{job="api"}'], "kinds": [], "units": [], "series_index": [0],
    ...        "timestamps_ms": [1_700_000_000_000], "values": [1.0]}
    >>> d.samples(BATCH, rec, now_ms=1_700_000_000_000).samples[0].labels
    {'job': 'api'}
    """

    def __init__(
        self, limits: Limits = Limits(), max_series: int = 200_000, max_cache_bytes: int = 32 << 20
    ) -> None:
        self.limits = limits
        self.max_series = max_series
        self.max_cache_bytes = max_cache_bytes
        self._cache_bytes = 0  # estimated: keys are the variable part
        # parsed and checked series keys (the last kind and unit seen), or why not valid
        self._series: dict[str, SeriesInfo | InvalidSample] = {}

    def samples(self, record_name: str, record: dict[str, Any], now_ms: int) -> BatchResult:
        """Samples of one event; see ``samples_from_record``."""
        if record_name == SAMPLE:
            return self._sample(record, now_ms)
        if record_name == BATCH:
            result = self.columns(BATCH, record, now_ms)
            return BatchResult(result.batch.samples(), result.rejected)
        raise InvalidSample("wrong-record", f"{record_name} is not a metric sample or batch")

    def columns(self, record_name: str, record: Mapping[str, Any], now_ms: int) -> ColumnsResult:
        """``samples`` as a ``SampleBatch``, the same samples accepted and rejected. A
        batch's arrays may be lists or numpy arrays (``wire.metric_batch``); the
        checks on timestamps and values run over whole arrays."""
        if record_name == SAMPLE:
            return ColumnsResult(SampleBatch.from_samples(self._sample(record, now_ms).samples), [])
        if record_name != BATCH:
            raise InvalidSample("wrong-record", f"{record_name} is not a metric sample or batch")
        keys, kinds, units = record["series"], record["kinds"], record["units"]
        index = np.asarray(record["series_index"], np.int64)
        stamps = np.asarray(record["timestamps_ms"], np.int64)
        values = np.asarray(record["values"], np.float64)
        n_series = self._check_lengths(keys, kinds, units, index, stamps, values)
        if len(index):
            wrong = (index < 0) | (index >= n_series)
            if wrong.any():
                i = int(np.flatnonzero(wrong)[0])
                raise InvalidSample(
                    "bad-series-index", f"sample {i} points at series {index[i]} of {n_series}"
                )
        cache, parse = self._series, self._parse
        series: list[SeriesInfo | None] = []
        invalid: dict[int, InvalidSample] = {}
        for j, key in enumerate(keys):
            info = cache.get(key) or parse(key)
            if isinstance(info, InvalidSample):
                series.append(None)
                invalid[j] = info
                continue
            kind, unit = kinds[j] if kinds else "GAUGE", units[j] if units else ""
            if info.kind != kind or info.unit != unit:
                info = cache[key] = info._replace(kind=kind, unit=unit)
            series.append(info)
        lo, hi = self.limits.min_timestamp_ms, now_ms + self.limits.max_future_skew_ms
        finite = np.isfinite(values)
        if not finite.all():
            finite |= stale_mask(values)
        ok = (stamps >= lo) & (stamps <= hi) & finite
        if invalid:
            bad_series = np.zeros(n_series, bool)
            bad_series[list(invalid)] = True
            ok &= ~bad_series[index]
        rejected: list[tuple[int, InvalidSample]] = []
        if not ok.all():
            for i in np.flatnonzero(~ok).tolist():
                reason = invalid.get(int(index[i]))
                if reason is None:
                    try:
                        check_point(int(stamps[i]), float(values[i]), now_ms, self.limits)
                    except InvalidSample as e:
                        reason = e
                assert reason is not None
                rejected.append((i, reason))
            index, stamps, values = index[ok], stamps[ok], values[ok]
        return ColumnsResult(SampleBatch(series, index, stamps, values), rejected)

    @staticmethod
    def _check_lengths(keys: Sized, kinds: Sized, units: Sized,
                       index: Sized, stamps: Sized, values: Sized) -> int:  # fmt: skip
        if not (len(index) == len(stamps) == len(values)):
            raise InvalidSample(
                "batch-length-mismatch",
                f"series_index {len(index)}, timestamps_ms {len(stamps)}, values {len(values)}",
            )
        n_series = len(keys)
        if len(kinds) not in (0, n_series) or len(units) not in (0, n_series):
            raise InvalidSample(
                "batch-length-mismatch",
                f"series {n_series}, kinds {len(kinds)}, units {len(units)}",
            )
        return n_series

    def _sample(self, record: Mapping[str, Any], now_ms: int) -> BatchResult:
        name, labels = record["name"], record["labels"]
        check_series(name, labels, self.limits)
        ts, value = record["timestamp_ms"], record["value"]
        check_point(ts, value, now_ms, self.limits)
        s = Sample(
            series_key(name, labels), name, labels, ts, value, record["kind"], record["unit"]
        )
        return BatchResult([s], [])

    def _parse(self, key: str) -> SeriesInfo | InvalidSample:
        try:
            name, labels = parse_series_key(key)
            check_series(name, labels, self.limits)
            parsed: SeriesInfo | InvalidSample = SeriesInfo(key, name, labels)
        except InvalidSample as e:
            parsed = e
        cost = CACHE_ENTRY_BYTES + 2 * len(key)  # the key, and name and labels from it
        if len(self._series) >= self.max_series or (
            self._cache_bytes + cost > self.max_cache_bytes
        ):
            self._series.clear()  # an accelerator: a miss costs one parse
            self._cache_bytes = 0
        self._series[key] = parsed
        self._cache_bytes += cost
        return parsed


def samples_from_record(
    record_name: str, record: dict[str, Any], now_ms: int, limits: Limits = Limits()
) -> BatchResult:
    """Turn a decoded MetricSample or MetricBatch into samples, rejecting bad ones.

    A batch whose arrays disagree in length, or that points at a missing series, is
    rejected whole (``InvalidSample`` raised); bad points inside a good batch are
    returned in ``rejected`` and the rest are kept. Long-lived consumers keep a
    ``SampleDecoder`` instead, which caches parsed series.
    """
    return SampleDecoder(limits).samples(record_name, record, now_ms)
