"""Prometheus remote-write 1.0: a snappy-compressed ``prometheus.WriteRequest`` into
points for the samples topic. No I/O: the receiver hands the body and headers in.

* Headers: ``Content-Encoding: snappy``, ``Content-Type: application/x-protobuf``
  (remote-write 2.0's ``proto=io.prometheus.write.v2.Request`` answers 415) and
  ``X-Prometheus-Remote-Write-Version: 0.1.x``.
* Size: the snappy block's header (its uncompressed length) is read and checked
  against ``max_decompressed_bytes`` before anything is decompressed; series,
  samples and metadata entries per request are bounded.
* Series are validated as Prometheus does (a ``__name__`` that is a metric name, label
  names, no repeated label; an empty value is no label) plus the samples contract's
  bounds; a refused series drops its samples, counted by reason, and the rest of the
  request is kept (Prometheus's own receiver does the same).
* Staleness markers (Prometheus's stale NaN) are passed on as samples (and counted):
  the pipeline carries them, so PromQL stops a series at its marker as Prometheus does.
  Other NaN and ±Inf values are refused (``non-finite-value``), as timestamps outside
  the contract are.
* The kind of a series: from the request's metadata when the sender sends it (kept
  per metric family, bounded, since Prometheus sends metadata in requests of its own),
  else from the name's conventions (``_total`` counter, ``_bucket`` with ``le``, a
  ``quantile`` label, ``_sum``/``_count``); anything else is ``UNTYPED``.
"""

from __future__ import annotations

import math
import struct
from itertools import compress
from operator import itemgetter
from typing import Any

import cramjam
import numpy as np
from google.protobuf.message import DecodeError

from monitoring.ingest.prompb import RequestV2, TimeSeries, WriteRequestRaw
from monitoring.ingest.receiving import (
    MAX_UNIT_LEN,
    BadRequest,
    Converted,
    KeyBytes,
    RequestLimits,
    SeriesCache,
)
from monitoring.metrics.samples import InvalidSample

STALE_NAN_BITS = 0x7FF0000000000002  # Prometheus's value.StaleNaN
_DOUBLE = struct.Struct("<d")
_BITS = struct.Struct("<Q")
_INF = math.inf

# MetricMetadata.MetricType numbers -> what a family's series are
UNKNOWN, COUNTER, GAUGE, HISTOGRAM, GAUGEHISTOGRAM, SUMMARY, INFO, STATESET = range(8)


def is_stale_marker(v: float) -> bool:
    """Whether ``v`` is Prometheus's staleness marker (one NaN bit pattern).

    >>> is_stale_marker(_DOUBLE.unpack(_BITS.pack(STALE_NAN_BITS))[0]), is_stale_marker(math.nan)
    (True, False)
    """
    return _BITS.unpack(_DOUBLE.pack(v))[0] == STALE_NAN_BITS


def snappy_length(data: bytes) -> int:
    """The uncompressed length a snappy block declares (its leading varint, <= 32 bits).

    >>> snappy_length(bytes(cramjam.snappy.compress_raw(b"x" * 300)))
    300
    """
    n = shift = 0
    for i in range(min(5, len(data))):
        b = data[i]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n
        shift += 7
    raise BadRequest(400, "snappy: bad block header (the uncompressed length)", "bad-snappy")


V1, V2 = "prometheus.WriteRequest", "io.prometheus.write.v2.Request"


def check_headers(headers: Any) -> str:
    """The message a request carries (``V1`` or ``V2``, by ``Content-Type``'s ``proto``
    parameter); BadRequest unless the headers are remote-write 1.0's or 2.0's (a
    case-insensitive mapping, as Starlette's)."""
    ctype = headers.get("content-type", "")
    media, _, params = ctype.partition(";")
    if media.strip().lower() != "application/x-protobuf":
        raise BadRequest(415, f"Content-Type must be application/x-protobuf, not {ctype[:80]!r}")
    proto = V1
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "proto":
            proto = v.strip()
            if proto not in (V1, V2):
                raise BadRequest(415, f"proto={v[:80]!r} is not served (only {V1} and {V2})")
    enc = headers.get("content-encoding", "")
    if enc.strip().lower() != "snappy":
        raise BadRequest(415, f"Content-Encoding must be snappy, not {enc[:40]!r}")
    version = headers.get("x-prometheus-remote-write-version", "").strip()
    want = "0.1." if proto == V1 else "2."
    if not version:
        raise BadRequest(400, "X-Prometheus-Remote-Write-Version is missing")
    if not version.startswith(want):
        raise BadRequest(415, f"remote-write version {version[:40]!r} does not match {proto}")
    return proto


def decode(body: bytes, limits: RequestLimits, proto: str = V1) -> Any:
    """A ``WriteRequestRaw`` (each series still bytes), or a 2.0 ``RequestV2``, from a
    snappy block, within the limits (BadRequest otherwise)."""
    if not body:
        raise BadRequest(400, "empty body", "bad-snappy")
    declared = snappy_length(body)
    if declared > limits.max_decompressed_bytes:
        raise BadRequest(
            413,
            f"decompressed body of {declared} bytes over {limits.max_decompressed_bytes}",
            "too-large",
        )
    try:
        raw = cramjam.snappy.decompress_raw(body)
    except Exception as e:
        raise BadRequest(400, f"snappy: {e}", "bad-snappy") from None
    try:
        req = (WriteRequestRaw if proto == V1 else RequestV2).FromString(bytes(raw))
    except (DecodeError, RuntimeError, ValueError) as e:
        raise BadRequest(400, f"protobuf: not a {proto} ({e})", "bad-protobuf") from None
    if len(req.timeseries) > limits.max_series:
        raise BadRequest(
            400, f"{len(req.timeseries)} series, limit {limits.max_series}", "too-many-series"
        )
    if proto == V1 and len(req.metadata) > limits.max_metadata:
        raise BadRequest(
            400,
            f"{len(req.metadata)} metadata entries, limit {limits.max_metadata}",
            "too-many-metadata",
        )
    return req


class Families:
    """Metadata per metric family (type, unit) as senders sent it; at most
    ``max_entries``, the oldest forgotten first. ``generation`` moves when a family's
    type or unit changes, so cached series re-derive their kind."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.types: dict[str, tuple[int, str]] = {}
        self.generation = 0

    def update(self, metadata: Any) -> None:
        types = self.types
        for m in metadata:
            name = m.metric_family_name
            if len(name) > 256:  # no series of it is valid (the contract's name length)
                continue
            entry = (int(m.type), m.unit[: MAX_UNIT_LEN + 1])  # kept too long to be refused
            old = types.get(name)
            if old == entry:
                continue
            if old is None and len(types) >= self.max_entries:
                del types[next(iter(types))]
            types[name] = entry
            self.generation += 1

    def kind(self, name: str, labels: dict[str, str]) -> tuple[str, str]:
        """(kind, unit) of a series by its family's metadata, else its name's conventions.

        >>> f = Families()
        >>> f.kind("http_requests_total", {}), f.kind("rpc_bucket", {"le": "1"}), f.kind("up", {})
        (('COUNTER', ''), ('HISTOGRAM_BUCKET', ''), ('UNTYPED', ''))
        """
        types = self.types
        if types:
            t = types.get(name)
            if t is not None:
                kind = _EXACT.get(t[0])
                if kind is not None:
                    return kind, t[1]
            base, _, suffix = name.rpartition("_")
            t = types.get(base) if base else None
            if t is not None:
                kind = _SUFFIXED.get((t[0], suffix))
                if kind is not None:
                    return kind, t[1]
        if name.endswith("_total"):
            return "COUNTER", ""
        if name.endswith("_bucket") and "le" in labels:
            return "HISTOGRAM_BUCKET", ""
        if "quantile" in labels:
            return "SUMMARY", ""
        if name.endswith(("_sum", "_count")):
            return "COUNTER", ""
        return "UNTYPED", ""


_EXACT = {
    COUNTER: "COUNTER",
    GAUGE: "GAUGE",
    SUMMARY: "SUMMARY",  # the quantile series carry the family's own name
    INFO: "GAUGE",
    STATESET: "GAUGE",
    UNKNOWN: "UNTYPED",
}
_SUFFIXED = {
    (COUNTER, "total"): "COUNTER",
    (COUNTER, "created"): "GAUGE",
    (HISTOGRAM, "bucket"): "HISTOGRAM_BUCKET",
    (HISTOGRAM, "sum"): "COUNTER",
    (HISTOGRAM, "count"): "COUNTER",
    (HISTOGRAM, "created"): "GAUGE",
    (SUMMARY, "sum"): "COUNTER",
    (SUMMARY, "count"): "COUNTER",
    (SUMMARY, "created"): "GAUGE",
    (GAUGEHISTOGRAM, "bucket"): "GAUGE",
    (GAUGEHISTOGRAM, "gsum"): "GAUGE",
    (GAUGEHISTOGRAM, "gcount"): "GAUGE",
    (INFO, "info"): "GAUGE",
}


# The last sample of a series as Prometheus writes it: Sample field (0x12, 16 bytes),
# value (0x09 + 8 bytes), timestamp (0x10 + a 6-byte varint: years 1971 to 2109).
_TAIL = 18
_TAIL_DTYPE = np.dtype(
    [("f", "u1"), ("n", "u1"), ("vt", "u1"), ("v", "<f8"), ("tt", "u1"), ("t", "u1", (6,))]
)
_HEAD = itemgetter(slice(None, -_TAIL))
_TAIL_OF = itemgetter(slice(-_TAIL, None))
_SHIFTS = np.arange(6, dtype=np.int64) * 7


class _Refused:
    """A cached verdict on a series that the contract refuses."""

    __slots__ = ("detail", "reason")

    def __init__(self, e: InvalidSample) -> None:
        self.reason, self.detail = e.reason, e.detail


class RemoteWrite:
    """Converts decoded requests; keeps the family metadata and the series caches.

    Fast path: a series with one sample (what Prometheus sends) is its labels' bytes
    followed by the 18-byte sample field. The labels' bytes are the cache key (checked
    once, by parsing them, to be labels and nothing else, so the split is the one a
    full parse makes), and the requests' sample tails are decoded together by numpy.
    Anything else (several samples, exemplars, an unusual encoding) is parsed whole.
    """

    def __init__(self, series: SeriesCache, families: Families, limits: RequestLimits) -> None:
        self.series = series
        self.families = families
        self.limits = limits
        # keyed by the sender's bytes: bounded in bytes too (unknown fields pad a key)
        self.by_labels: dict[bytes, Any] = {}
        self.refused_labels: dict[bytes, _Refused] = {}
        self.by_labels_bytes = KeyBytes(series.max_entries)
        self.refused_bytes = KeyBytes(series.max_entries)
        self._generation = families.generation

    def convert(self, req: Any, now_ms: int) -> Converted:
        """The request's points, or refusals by reason (BadRequest over the sample limit)."""
        out = Converted()
        if req.metadata:
            self.families.update(req.metadata)
        if self.families.generation != self._generation:
            self.by_labels.clear()  # kinds may have changed
            self.by_labels_bytes.bytes = 0
            self._generation = self.families.generation
        tss = req.timeseries
        heads = list(map(_HEAD, tss))
        hs = list(map(self.by_labels.get, heads))
        slow: list[bytes] = []
        if hs and None not in hs:  # every series seen before: no Python loop
            handles, whole = hs, list(tss)
        else:
            handles, whole = [], []
            refused = self.refused_labels
            for d, head, h in zip(tss, heads, hs, strict=True):
                if h is None:
                    no = refused.get(head)
                    if no is not None:
                        out.reject(no.reason, no.detail)
                        continue
                    h = self._labels_entry(head, out) if head else None
                    if h is None:
                        if head not in refused:
                            slow.append(d)
                        continue
                handles.append(h)
                whole.append(d)
        if len(handles) > self.limits.max_samples:
            raise BadRequest(
                400, f"over {self.limits.max_samples} samples in one request", "too-many-samples"
            )
        lim = self.limits.series
        lo, hi = lim.min_timestamp_ms, now_ms + lim.max_future_skew_ms
        if whole:
            slow.extend(self._tails(handles, whole, lo, hi, out))
        for d in slow:
            try:
                ts = TimeSeries.FromString(d)
            except (DecodeError, RuntimeError, ValueError) as e:
                raise BadRequest(400, f"protobuf: a bad TimeSeries ({e})", "bad-protobuf") from None
            self._series_samples(ts, lo, hi, out)
        return out

    def _tails(
        self, handles: list[Any], whole: list[bytes], lo: int, hi: int, out: Converted
    ) -> list[bytes]:
        """Decode the fast path's sample tails together; the series whose tails are not
        in Prometheus's shape come back to be parsed whole."""
        arr = np.frombuffer(b"".join(map(_TAIL_OF, whole)), _TAIL_DTYPE)
        t = arr["t"]
        shaped = (
            (arr["f"] == 0x12)
            & (arr["n"] == 16)
            & (arr["vt"] == 0x09)
            & (arr["tt"] == 0x10)
            & (t[:, :5] >= 0x80).all(axis=1)
            & (t[:, 5] < 0x80)
        )
        stamps = ((t.astype(np.int64) & 0x7F) << _SHIFTS).sum(axis=1)
        values = arr["v"]
        good = shaped & np.isfinite(values) & (stamps >= lo) & (stamps <= hi)
        ts_list, v_list = stamps.tolist(), values.tolist()
        if good.all():
            out.points.extend(zip(handles, ts_list, v_list, strict=True))
            return []
        g = good.tolist()
        out.points.extend(
            zip(compress(handles, g), compress(ts_list, g), compress(v_list, g), strict=True)
        )
        rest: list[bytes] = []
        ok = shaped.tolist()
        for i in np.flatnonzero(~good).tolist():
            ts, v = ts_list[i], v_list[i]
            if not ok[i]:
                rest.append(whole[i])
            elif (v != v or v == _INF or v == -_INF) and not is_stale_marker(v):
                out.reject("non-finite-value", f"value {v!r}")
            elif ts < lo:
                out.reject("timestamp-too-old", f"timestamp {ts} ms")
            elif ts > hi:
                out.reject("timestamp-in-future", f"timestamp {ts} ms is ahead of now")
            else:  # a staleness marker in the contract's time window: passed on
                out.stale += 1
                out.points.append((handles[i], ts, v))
        return rest

    def _labels_entry(self, labels: bytes, out: Converted) -> Any:
        """The handle of a series' labels bytes, cached; None when the bytes are not
        labels alone (the series is then parsed whole) or the series is refused (counted
        in ``out``, and remembered in ``refused_labels``)."""
        try:
            ts = TimeSeries.FromString(labels)
        except (DecodeError, RuntimeError, ValueError):
            return None
        if ts.samples or ts.exemplars or ts.histograms or not ts.labels:
            return None
        try:
            if len(ts.labels) > self.limits.series.max_labels + 1:
                raise InvalidSample("too-many-labels", f"{len(ts.labels)} labels")
            entry = self._series((0, *[(lab.name, lab.value) for lab in ts.labels]))
        except InvalidSample as e:
            if self.refused_bytes.charge(len(self.refused_labels), len(labels)):
                self.refused_labels.clear()
            self.refused_labels[labels] = _Refused(e)
            out.reject(e.reason, e.detail)
            return None
        if self.by_labels_bytes.charge(len(self.by_labels), len(labels)):
            self.by_labels.clear()
        self.by_labels[labels] = entry
        return entry

    def _series_samples(self, ts: Any, lo: int, hi: int, out: Converted) -> None:
        """The slow path: one fully parsed series."""
        samples = ts.samples
        if ts.histograms:
            out.reject("native-histogram", "native histograms are not served", len(ts.histograms))
        if not samples:
            return
        labels = ts.labels
        if len(labels) > self.limits.series.max_labels + 1:  # __name__ besides the contract's
            out.reject("too-many-labels", f"{len(labels)} labels", len(samples))
            return
        try:
            handle = self._series(
                (self.families.generation, *[(lab.name, lab.value) for lab in labels])
            )
        except InvalidSample as e:
            out.reject(e.reason, e.detail, len(samples))
            return
        if len(out.points) + len(samples) > self.limits.max_samples:
            raise BadRequest(
                400, f"over {self.limits.max_samples} samples in one request", "too-many-samples"
            )
        self._samples(handle, samples, lo, hi, out)

    def _series(self, key: tuple[Any, ...]) -> Any:
        name, labels = _name_and_labels(key[1:])
        kind, unit = self.families.kind(name, labels)
        return self.series.get((self.families.generation, *key[1:]), name, labels, kind, unit)

    def convert_v2(self, req: Any, now_ms: int) -> Converted:
        """A remote-write 2.0 request's points: labels from the symbols table, the kind
        from each series' metadata type (else the name's conventions), the unit from its
        ``unit_ref``. Native histograms and exemplars are not served (counted)."""
        out = Converted()
        symbols = req.symbols
        n_sym = len(symbols)
        lim = self.limits.series
        lo, hi = lim.min_timestamp_ms, now_ms + lim.max_future_skew_ms
        max_refs = 2 * (lim.max_labels + 1)
        for ts in req.timeseries:
            n = len(ts.samples)
            if ts.histograms:
                out.reject(
                    "native-histogram", "native histograms are not served", len(ts.histograms)
                )
            if not n:
                continue
            refs = ts.labels_refs
            try:
                if len(refs) > max_refs:
                    raise InvalidSample("too-many-labels", f"{len(refs) // 2} labels")
                if len(refs) % 2 or any(r >= n_sym for r in refs):
                    raise InvalidSample("bad-symbol-ref", "labels_refs odd or past the symbols")
                md = ts.metadata
                unit = symbols[md.unit_ref] if md.unit_ref < n_sym else ""
                key = (md.type, unit, *zip(*[iter([symbols[r] for r in refs])] * 2, strict=True))
                handle = self.series.entries.get(("v2", key))
                if handle is None:
                    handle = self._series_v2(key)
            except InvalidSample as e:
                out.reject(e.reason, e.detail, n)
                continue
            if len(out.points) + n > self.limits.max_samples:
                raise BadRequest(
                    400,
                    f"over {self.limits.max_samples} samples in one request",
                    "too-many-samples",
                )
            self._samples(handle, ts.samples, lo, hi, out)
        return out

    def _series_v2(self, key: tuple[Any, ...]) -> Any:
        mtype, unit, pairs = key[0], key[1], key[2:]
        name, labels = _name_and_labels(pairs)
        kind = _TYPED.get(mtype) or _typed_suffix(mtype, name, labels)
        if kind is None:
            kind = self.families.kind(name, labels)[0]
        return self.series.get(("v2", key), name, labels, kind, unit)

    def _samples(self, handle: Any, samples: Any, lo: int, hi: int, out: Converted) -> None:
        append = out.points.append
        for s in samples:
            v = s.value
            t = s.timestamp
            if (v != v or v == _INF or v == -_INF) and not is_stale_marker(v):
                out.reject("non-finite-value", f"value {v!r}")
            elif t < lo:
                out.reject("timestamp-too-old", f"timestamp {t} ms")
            elif t > hi:
                out.reject("timestamp-in-future", f"timestamp {t} ms is ahead of now")
            else:
                if v != v:  # a staleness marker: passed on, counted
                    out.stale += 1
                append((handle, t, v))


def _name_and_labels(pairs: Any) -> tuple[str, dict[str, str]]:
    """The metric name and labels of (name, value) pairs, as Prometheus validates them."""
    name = ""
    labels: dict[str, str] = {}
    for n, v in pairs:
        if n == "__name__":
            if name:
                raise InvalidSample("duplicate-label", "__name__ repeated")
            name = v
        elif n in labels:
            raise InvalidSample("duplicate-label", f"label {n[:80]!r} repeated")
        else:
            labels[n] = v  # an empty value is no label (dropped below); repeats still caught
    if not name:
        raise InvalidSample("bad-name", "no __name__ label")
    return name, {k: v for k, v in labels.items() if v}


# remote-write 2.0's per-series metadata type -> kind (None: by the name's suffix)
_TYPED = {COUNTER: "COUNTER", GAUGE: "GAUGE", GAUGEHISTOGRAM: "GAUGE", INFO: "GAUGE",
          STATESET: "GAUGE"}  # fmt: skip


def _typed_suffix(mtype: int, name: str, labels: dict[str, str]) -> str | None:
    if mtype == HISTOGRAM:
        if name.endswith("_bucket"):
            return "HISTOGRAM_BUCKET"
        return "GAUGE" if name.endswith("_created") else "COUNTER"
    if mtype == SUMMARY:
        if "quantile" in labels:
            return "SUMMARY"
        return "GAUGE" if name.endswith("_created") else "COUNTER"
    return None
