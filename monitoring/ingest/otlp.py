"""OTLP/HTTP metrics (``ExportMetricsServiceRequest``) into points for the samples
topic, by OpenTelemetry's Prometheus-compatibility rules (``otlp_names.py``). No I/O.

Bodies: ``application/x-protobuf`` or ``application/json`` (protobuf's JSON mapping,
unknown fields ignored as the OTLP spec asks), optionally ``Content-Encoding: gzip``
(decompressed within ``max_decompressed_bytes``).

Per data point type:

* Gauge -> ``GAUGE`` (unit ``1`` -> ``_ratio``).
* Sum: cumulative monotonic -> ``COUNTER`` ``<name>_total``; cumulative non-monotonic
  -> ``GAUGE``; delta monotonic -> accumulated (``otlp_delta.py``) into a ``COUNTER``;
  delta non-monotonic (an up-down counter exported as deltas) -> accumulated into a
  ``GAUGE`` (the spec drops these; their running sum is exactly the instrument's value).
* Histogram (explicit buckets) -> ``<name>_bucket{le}`` (``HISTOGRAM_BUCKET``,
  cumulative counts, ``+Inf`` = count), ``_sum`` (when present) and ``_count``
  (``COUNTER``); delta histograms accumulated.
* Exponential histogram (cumulative) -> the same classic shape: one ``le`` per bucket
  upper bound (``-base**i`` for negative buckets, the zero threshold, ``base**(i+1)``
  for positive ones, ``base = 2**2**-scale``), downscaled until at most
  ``max_exponential_buckets`` buckets remain; delta exponential histograms are refused
  (as the spec says).
* Summary -> ``<name>{quantile}`` (``SUMMARY``), ``_sum``, ``_count``.

Labels: the point's attributes; ``otel_scope_name``/``otel_scope_version``;
resource attributes named in ``promote`` where the point has no such label; ``job``
from ``service.namespace``/``service.name`` and ``instance`` from
``service.instance.id``. The other resource attributes go on one ``target_info``
gauge (value 1) per resource and request, with ``job`` and ``instance``.
A gauge or sum point flagged ``NO_RECORDED_VALUE`` is a staleness marker, passed on as
Prometheus's stale NaN (counted); other flagged points are dropped and counted.
Refused points are counted per data point (``partial_success.rejected_data_points``).
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from prometheus_client.utils import floatToGoString

from monitoring.ingest.otlp_delta import DeltaState, Staged
from monitoring.ingest.otlp_names import labels_of, metric_name, value_text
from monitoring.ingest.otlp_raw import KeyValue, RawExportRequest
from monitoring.ingest.receiving import (
    ENTRY_OVERHEAD,
    BadRequest,
    Converted,
    KeyBytes,
    RequestLimits,
    SeriesCache,
    held,
)
from monitoring.metrics.samples import STALE_NAN, InvalidSample

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DELTA, CUMULATIVE = 1, 2
NO_RECORDED_VALUE = 1
_INF = math.inf


@dataclass(frozen=True)
class OtlpOptions:
    """Mapping choices: resource attributes copied onto every series (``promote``),
    the scope labels, ``target_info``, and the exponential histogram bound."""

    promote: tuple[str, ...] = ()
    scope_labels: bool = True
    target_info: bool = True
    max_exponential_buckets: int = 160


def media_type(headers: Mapping[str, str]) -> str:
    """``PROTOBUF`` or ``JSON`` from Content-Type (BadRequest 415 otherwise)."""
    ctype = headers.get("content-type", "")
    media = ctype.partition(";")[0].strip().lower()
    if media not in (PROTOBUF, JSON):
        raise BadRequest(
            415, f"Content-Type must be {PROTOBUF} or {JSON}, not {ctype[:80]!r}", "media-type"
        )
    return media


def decode(body: bytes, headers: Mapping[str, str], limits: RequestLimits) -> tuple[Any, str]:
    """The request (as ``RawExportRequest``: points' attributes left as bytes) and its
    media type (BadRequest for anything else)."""
    media = media_type(headers)
    enc = headers.get("content-encoding", "").strip().lower()
    if enc == "gzip":
        body = _gunzip(body, limits.max_decompressed_bytes)
    elif enc not in ("", "identity"):
        raise BadRequest(
            415, f"Content-Encoding {enc[:40]!r} is not served (gzip is)", "media-type"
        )
    elif len(body) > limits.max_decompressed_bytes:
        raise BadRequest(413, f"body over {limits.max_decompressed_bytes} bytes", "too-large")
    if media == JSON and len(body) > limits.max_json_bytes:
        raise BadRequest(
            413,
            f"JSON body over {limits.max_json_bytes} bytes (protobuf is served to "
            f"{limits.max_decompressed_bytes})",
            "too-large",
        )
    try:
        if media == PROTOBUF:
            req = RawExportRequest.FromString(body)
        else:
            std = ExportMetricsServiceRequest()
            json_format.Parse(body.decode("utf-8"), std, ignore_unknown_fields=True)
            req = RawExportRequest.FromString(std.SerializeToString())
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as e:
        what = "protobuf" if media == PROTOBUF else "JSON"
        raise BadRequest(
            400, f"{what}: not an ExportMetricsServiceRequest ({str(e)[:200]})", "bad-payload"
        ) from None
    return req, media


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every gzip member of ``body`` (RFC 1952 allows several, as Go's reader and
    ``gzip.decompress`` read them), within ``limit`` bytes in all."""
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        d = zlib.decompressobj(wbits=31)
        try:
            out = d.decompress(rest, limit - size + 1)
        except zlib.error as e:
            raise BadRequest(400, f"gzip: {e}", "bad-payload") from None
        size += len(out)
        if size > limit:
            raise BadRequest(413, f"decompressed body over {limit} bytes", "too-large")
        if not d.eof:
            raise BadRequest(400, "gzip: truncated body", "bad-payload")
        parts.append(out)
        rest = d.unused_data
        if not rest:
            return b"".join(parts)


def _ms(ns: int) -> int:
    return ns // 1_000_000


class Otlp:
    """Converts decoded requests; keeps the series cache and the delta state."""

    def __init__(
        self,
        series: SeriesCache,
        limits: RequestLimits,
        options: OtlpOptions = OtlpOptions(),
        delta: DeltaState | None = None,
    ) -> None:
        self.series = series
        self.limits = limits
        self.options = options
        self.delta = delta if delta is not None else DeltaState()
        # keyed by the sender's bytes and strings: bounded in bytes as well as entries
        self._labels: dict[tuple[bytes, ...], dict[str, str]] = {}
        self.labels_bytes = KeyBytes(series.max_entries)
        self._contexts: dict[tuple[Any, ...], dict[tuple[bytes, ...], Any]] = {}
        self._context_entries = 0
        self._context_bytes = 0
        self._context: tuple[Any, ...] = ()

    def convert(self, req: Any, now_ms: int) -> Converted:
        """The request's points; refused data points counted by reason."""
        out = Converted()
        staged = self.delta.stage()
        lim = self.limits.series
        bounds = (lim.min_timestamp_ms, now_ms + lim.max_future_skew_ms)
        points = 0
        for rm in req.resource_metrics:
            under, ident, info = self._resource(rm.resource.attributes)
            newest = 0
            for sm in rm.scope_metrics:
                over = {}
                scope = sm.scope
                if self.options.scope_labels:
                    if scope.name:
                        over["otel_scope_name"] = scope.name
                    if scope.version:
                        over["otel_scope_version"] = scope.version
                over.update(ident)
                self._context = (tuple(under.items()), tuple(over.items()))
                for metric in sm.metrics:
                    n, t = self._metric(metric, (under, over), out, staged, bounds)
                    points += n
                    newest = max(newest, t)
                    if (
                        points > self.limits.max_samples
                        or len(out.points) > self.limits.max_samples
                    ):
                        raise BadRequest(
                            400, f"over {self.limits.max_samples} data points", "too-many-samples"
                        )
            if info and newest:
                self._emit(out, "target_info", info, "GAUGE", "", newest, 1.0)
        if len(out.points) > self.limits.max_samples:
            raise BadRequest(400, f"over {self.limits.max_samples} samples", "too-many-samples")
        out.commit = staged.commit
        return out

    def _resource(self, attributes: Any) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """(promoted attributes, job and instance, target_info's labels or {})."""
        attrs = {kv.key: value_text(kv.value) for kv in attributes}
        labels: dict[str, str] = {}
        name, ns = attrs.get("service.name", ""), attrs.get("service.namespace", "")
        if name:
            labels["job"] = f"{ns}/{name}" if ns else name
        if attrs.get("service.instance.id"):
            labels["instance"] = attrs["service.instance.id"]
        promoted = {}
        if self.options.promote:
            wanted = set(self.options.promote)
            promoted = labels_of(kv for kv in attributes if kv.key in wanted)
        info: dict[str, str] = {}
        if self.options.target_info:
            rest = [
                kv
                for kv in attributes
                if kv.key not in ("service.name", "service.namespace", "service.instance.id")
            ]
            if rest:
                info = {**labels_of(rest), **labels}
        return promoted, labels, info

    def _emit(
        self,
        out: Converted,
        name: str,
        labels: dict[str, str],
        kind: str,
        unit: str,
        ts_ms: int,
        value: float,
    ) -> None:
        out.points.append((self._handle(name, labels, kind, unit), ts_ms, value))

    def _room(self, out: Converted, more: int) -> None:
        """BadRequest when ``more`` samples would take the request past its bound: raised
        before they are made (a point of 50,000 buckets makes as many series)."""
        if len(out.points) + more > self.limits.max_samples:
            raise BadRequest(400, f"over {self.limits.max_samples} samples", "too-many-samples")

    def _handle(self, name: str, labels: dict[str, str], kind: str, unit: str) -> Any:
        """The validated series (cached): InvalidSample when the contract refuses it."""
        key = (kind, name, *labels.items())
        handle = self.series.entries.get(key)
        if handle is None:
            handle = self.series.get(key, name, labels, kind, unit)
        return handle

    def _metric(
        self,
        metric: Any,
        base: tuple[dict[str, str], dict[str, str]],
        out: Converted,
        staged: Staged,
        bounds: tuple[int, int],
    ) -> tuple[int, int]:
        """Convert one metric's points; (data points seen, newest timestamp ms)."""
        which = metric.WhichOneof("data")
        if which is None:
            return 0, 0
        data = getattr(metric, which)
        unit = metric.unit
        monotonic = which == "sum" and data.is_monotonic
        temporality = getattr(data, "aggregation_temporality", CUMULATIVE)
        name = metric_name(metric.name, unit, counter=monotonic, gauge=which in ("gauge", "sum"))
        if which in ("gauge", "sum") and name:
            return self._numbers(
                data, name, unit, monotonic, temporality, base, out, staged, bounds
            )
        newest = 0
        for p in data.data_points:
            try:
                if not name:
                    raise InvalidSample("bad-name", f"metric name {metric.name[:80]!r}")
                if p.flags & NO_RECORDED_VALUE:
                    out.stale += 1
                    continue
                ts = _ms(p.time_unix_nano)
                if ts < bounds[0]:
                    raise InvalidSample("timestamp-too-old", f"time_unix_nano {p.time_unix_nano}")
                if ts > bounds[1]:
                    raise InvalidSample("timestamp-in-future", f"time_unix_nano {p.time_unix_nano}")
                if which not in ("gauge", "summary") and temporality not in (DELTA, CUMULATIVE):
                    raise InvalidSample("bad-temporality", f"{metric.name[:80]}: unspecified")
                labels = self._point_labels(p.attributes)
                for k, v in base[0].items():
                    labels.setdefault(k, v)
                labels.update(base[1])
                mark = len(out.points)
                try:
                    self._point(
                        which, p, name, labels, unit, monotonic, temporality, ts, out, staged
                    )
                except InvalidSample:
                    del out.points[mark:]
                    raise
                newest = max(newest, ts)
            except InvalidSample as e:
                out.reject(e.reason, e.detail)
        return len(data.data_points), newest

    def _point_labels(self, attributes: Any) -> dict[str, str]:
        """A point's own labels from its attributes' bytes (cached per attribute set)."""
        key = tuple(attributes)
        labels = self._labels.get(key)
        if labels is None:
            # the bytes and the labels decoded from them, and each object's own overhead
            size = 2 * sum(map(len, key)) + 100 * len(key)
            try:  # attributes are bytes until here: a bad one refuses its point only
                labels = labels_of([KeyValue.FromString(a) for a in key])
            except DecodeError:
                raise InvalidSample("bad-attributes", "an attribute is not a KeyValue") from None
            if self.labels_bytes.charge(len(self._labels), size):
                self._labels.clear()
            self._labels[key] = labels
        return dict(labels)

    def _numbers(
        self,
        data: Any,
        name: str,
        unit: str,
        monotonic: bool,
        temporality: int,
        base: tuple[dict[str, str], dict[str, str]],
        out: Converted,
        staged: Staged,
        bounds: tuple[int, int],
    ) -> tuple[int, int]:
        """Gauge and sum points: series by attribute bytes within this metric and
        resource/scope context; (data points seen, newest timestamp ms)."""
        kind = "COUNTER" if monotonic else "GAUGE"
        if data.DESCRIPTOR.name == "Sum" and temporality not in (DELTA, CUMULATIVE):
            out.reject("bad-temporality", f"{name}: unspecified", len(data.data_points))
            return len(data.data_points), 0
        delta = data.DESCRIPTOR.name == "Sum" and temporality == DELTA
        ctx_key = (name, kind, unit, self._context)
        refs = self._contexts.get(ctx_key)
        if refs is None:
            size = len(name) + len(unit) + _text_bytes(self._context) + ENTRY_OVERHEAD
            if (
                self._context_entries >= self.series.max_entries
                or self._context_bytes + size > self.series.max_bytes
            ):
                self._contexts.clear()
                self._context_entries = self._context_bytes = 0
            refs = self._contexts[ctx_key] = {}
            self._context_entries += 1  # a metric with no points still takes room
            self._context_bytes += size
        lo, hi = bounds
        newest = 0
        append = out.points.append
        for p in data.data_points:
            t_ns = p.time_unix_nano
            ts = t_ns // 1_000_000
            if ts < lo or ts > hi:
                reason = "timestamp-too-old" if ts < lo else "timestamp-in-future"
                out.reject(reason, f"{name}: time_unix_nano {t_ns}")
                continue
            stale = p.flags & NO_RECORDED_VALUE
            vk = "stale" if stale else p.WhichOneof("value")
            if stale:  # the spec's staleness marker: Prometheus's stale NaN, passed on
                out.stale += 1
                v = STALE_NAN
            elif vk == "as_double":
                v = p.as_double
            elif vk == "as_int":
                v = float(p.as_int)
            else:
                out.reject("no-value", f"{name}: a number point without a value")
                continue
            if v - v != 0.0 and not stale:
                out.reject("non-finite-value", f"{name}: value {v!r}")
                continue
            attrs = tuple(p.attributes)
            ref = refs.get(attrs)
            try:
                if ref is None:
                    labels = self._point_labels(attrs)
                    for k, x in base[0].items():
                        labels.setdefault(k, x)
                    labels.update(base[1])
                    ref = self.series.make(name, labels, kind, unit)
                    refs[attrs] = ref
                    self._context_entries += 1
                    self._context_bytes += sum(map(len, attrs)) + 50 * len(attrs) + held(ref)
                if delta and not stale:
                    v = staged.add_sum((ctx_key, attrs), p.start_time_unix_nano, t_ns, v)
            except InvalidSample as e:
                out.reject(e.reason, e.detail)
                continue
            append((ref, ts, v))
            if ts > newest:
                newest = ts
        return len(data.data_points), newest

    def _point(
        self,
        which: str,
        p: Any,
        name: str,
        labels: dict[str, str],
        unit: str,
        monotonic: bool,
        temporality: int,
        ts: int,
        out: Converted,
        staged: Staged,
    ) -> None:
        if which in ("gauge", "sum"):
            v = float(p.as_int) if p.WhichOneof("value") == "as_int" else float(p.as_double)
            if p.WhichOneof("value") is None:
                raise InvalidSample("no-value", f"{name}: a number point without a value")
            _finite(name, v)
            kind = "COUNTER" if monotonic else "GAUGE"
            if which == "sum" and temporality == DELTA:
                key = (name, *sorted(labels.items()))
                v = staged.add_sum(key, p.start_time_unix_nano, p.time_unix_nano, v)
            self._emit(out, name, labels, kind, unit, ts, v)
        elif which == "histogram":
            self._histogram(p, name, labels, unit, temporality, ts, out, staged)
        elif which == "exponential_histogram":
            if p.HasField("sum"):
                _finite(name, p.sum)
            if temporality == DELTA:
                raise InvalidSample(
                    "delta-exponential-histogram", f"{name}: delta exponential histograms"
                )
            bounds, counts = self._exponential(name, p)
            self._buckets(name, labels, unit, ts, bounds, counts, p.count, out)
            self._sum_count(
                name, labels, unit, ts, p.sum if p.HasField("sum") else None, p.count, out
            )
        elif which == "summary":
            self._room(out, len(p.quantile_values) + 2)
            for q in p.quantile_values:
                _finite(name, q.value)
                if not 0.0 <= q.quantile <= 1.0:
                    raise InvalidSample("bad-summary", f"{name}: quantile {q.quantile}")
                ql = {**labels, "quantile": floatToGoString(q.quantile)}
                self._emit(out, name, ql, "SUMMARY", unit, ts, q.value)
            _finite(name, p.sum)
            self._sum_count(name, labels, unit, ts, p.sum, p.count, out)
        else:
            raise InvalidSample("unsupported-type", f"{name}: {which}")

    def _histogram(
        self,
        p: Any,
        name: str,
        labels: dict[str, str],
        unit: str,
        temporality: int,
        ts: int,
        out: Converted,
        staged: Staged,
    ) -> None:
        self._room(out, len(p.explicit_bounds) + 3)  # before any series is made
        bounds = list(p.explicit_bounds)
        counts = list(p.bucket_counts)
        if counts and len(counts) != len(bounds) + 1:
            raise InvalidSample(
                "bad-histogram", f"{name}: {len(counts)} bucket counts for {len(bounds)} bounds"
            )
        if any(not math.isfinite(b) for b in bounds) or any(
            a >= b for a, b in itertools.pairwise(bounds)
        ):
            raise InvalidSample("bad-histogram", f"{name}: bounds not finite and increasing")
        if counts and sum(counts) != p.count:
            raise InvalidSample("bad-histogram", f"{name}: buckets hold {sum(counts)} of {p.count}")
        total = p.sum if p.HasField("sum") else None
        if total is not None:
            _finite(name, total)
        count = p.count
        if temporality == DELTA:
            # its series validated before its state is staged: a refused one keeps none
            self._handle(f"{name}_count", labels, "COUNTER", "")
            self._handle(f"{name}_bucket", {**labels, "le": "+Inf"}, "HISTOGRAM_BUCKET", unit)
            key = ("histogram", name, *sorted(labels.items()))
            acc, s, count = staged.add_histogram(
                key,
                p.time_unix_nano,
                bounds,
                counts or [0] * (len(bounds) + 1),
                total or 0.0,
                count,
            )
            counts, total = acc, (s if total is not None else None)
        if not counts:
            bounds = []
        self._buckets(name, labels, unit, ts, bounds, counts[:-1] if counts else [], count, out)
        self._sum_count(name, labels, unit, ts, total, count, out)

    def _exponential(self, name: str, p: Any) -> tuple[list[float], list[int]]:
        """Upper bounds and per-bucket counts (without +Inf) of an exponential histogram."""
        scale = p.scale
        n = len(p.negative.bucket_counts) + len(p.positive.bucket_counts)
        if n > self.limits.max_samples:  # not downscaled in Python, not made into lists
            raise InvalidSample("bad-histogram", f"{name}: {n} buckets")
        neg = (p.negative.offset, list(p.negative.bucket_counts))
        pos = (p.positive.offset, list(p.positive.bucket_counts))
        if not -10 <= scale <= 20:
            raise InvalidSample("bad-histogram", f"{name}: scale {scale}")
        limit = self.options.max_exponential_buckets
        while len(neg[1]) + len(pos[1]) > limit and scale > -10:
            neg, pos, scale = _down(neg), _down(pos), scale - 1
        if len(neg[1]) + len(pos[1]) > limit:
            raise InvalidSample("bad-histogram", f"{name}: more than {limit} buckets")
        held = sum(neg[1]) + sum(pos[1]) + p.zero_count
        if held != p.count:
            raise InvalidSample("bad-histogram", f"{name}: buckets hold {held} of {p.count}")
        exp = 2.0**-scale
        bounds: list[float] = []
        counts: list[int] = []
        try:  # offsets are the sender's: a bound past the float range refuses the point
            off, cs = neg
            for i in range(len(cs) - 1, -1, -1):  # most negative first: (-base**(j+1), -base**j]
                bounds.append(-(2.0 ** ((off + i) * exp)))
                counts.append(cs[i])
            bounds.append(p.zero_threshold)
            counts.append(p.zero_count)
            off, cs = pos
            for i, c in enumerate(cs):
                bounds.append(2.0 ** ((off + i + 1) * exp))
                counts.append(c)
        except OverflowError:
            raise InvalidSample("bad-histogram", f"{name}: bucket bounds past +-1.8e308") from None
        if any(not a < b for a, b in itertools.pairwise(bounds)) or not all(
            map(math.isfinite, bounds)
        ):  # offsets so small that bounds collapse to 0, or a NaN/inf zero threshold
            raise InvalidSample("bad-histogram", f"{name}: bucket bounds not increasing")
        return bounds, counts

    def _buckets(
        self,
        name: str,
        labels: dict[str, str],
        unit: str,
        ts: int,
        bounds: list[float],
        counts: list[int],
        count: int,
        out: Converted,
    ) -> None:
        bucket = f"{name}_bucket"
        acc = 0
        for b, c in zip(bounds, counts, strict=True):
            acc += c
            le = {**labels, "le": floatToGoString(b)}
            self._emit(out, bucket, le, "HISTOGRAM_BUCKET", unit, ts, float(acc))
        self._emit(
            out, bucket, {**labels, "le": "+Inf"}, "HISTOGRAM_BUCKET", unit, ts, float(count)
        )

    def _sum_count(
        self,
        name: str,
        labels: dict[str, str],
        unit: str,
        ts: int,
        total: float | None,
        count: int,
        out: Converted,
    ) -> None:
        if total is not None:
            self._emit(out, f"{name}_sum", labels, "COUNTER", unit, ts, float(total))
        self._emit(out, f"{name}_count", labels, "COUNTER", "", ts, float(count))


def _text_bytes(context: tuple[Any, ...]) -> int:
    """Characters in a context key's label pairs ((promoted, over) pairs of pairs)."""
    return sum(len(k) + len(v) for part in context for k, v in part)


def _down(buckets: tuple[int, list[int]]) -> tuple[int, list[int]]:
    """Buckets at the next lower scale: index i -> i >> 1, counts merged.

    >>> _down((3, [1, 2, 3]))
    (1, [1, 5])
    """
    off, cs = buckets
    if not cs:
        return off >> 1, []
    new_off = off >> 1
    out = [0] * (((off + len(cs) - 1) >> 1) - new_off + 1)
    for i, c in enumerate(cs):
        out[((off + i) >> 1) - new_off] += c
    return new_off, out


def _finite(name: str, v: float) -> None:
    if v != v or v == _INF or v == -_INF:
        raise InvalidSample("non-finite-value", f"{name}: value {v!r}")
