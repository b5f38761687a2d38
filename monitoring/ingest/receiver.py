"""``monitoring receive``'s HTTP side: Prometheus remote_write (``POST /api/v1/write``)
and OTLP/HTTP metrics (``POST /v1/metrics``) into the SDK's bounded buffer.

A request is decoded and converted whole (``remote_write.py``, ``otlp.py``), then
admitted whole or not at all: under one lock, if the SDK's buffer (buffered plus
unacknowledged samples) cannot take all its points, nothing is buffered and the answer
is 503 with ``Retry-After`` (both Prometheus and OTLP exporters retry it); a request
is never half buffered, so a retry does not duplicate samples. Bad requests answer
400 (or 413, 415) with the reason, which neither sender retries; refused series and
points are counted by reason on the process's ``/metrics``
(``monitoring_receive_rejected_total{receiver,reason}``) and, for OTLP, reported in
``partial_success``. Every route is behind the project's ``Guard`` (token, Host and
Origin checks, body size and read time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from prometheus_client import CollectorRegistry, Counter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from monitoring.api.guard import Guard, Refused
from monitoring.ingest import otlp, remote_write
from monitoring.ingest.otlp_delta import DeltaState
from monitoring.ingest.prompb import Status
from monitoring.ingest.receiving import (
    MAX_UNIT_LEN,
    BadRequest,
    Converted,
    RequestLimits,
    SeriesCache,
)
from monitoring.log import get_logger
from monitoring.metrics.samples import InvalidSample
from monitoring.sdk.sender import BufferFullError, ProducerClosedError
from monitoring.wire.sample_encoding import make_series

log = get_logger("receive")

REMOTE_WRITE_PATH = "/api/v1/write"
OTLP_PATH = "/v1/metrics"
_INVALID_ARGUMENT, _UNAVAILABLE = 3, 14  # google.rpc.Code
DEFAULT_LIMITS = RequestLimits()
DEFAULT_OPTIONS = otlp.OtlpOptions()


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers, body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    def response(self) -> Response:
        return Response(self.body, self.status, headers=dict(self.headers))


class Receiver:
    """Both receivers over one ``MetricsCollector`` (``collector``: its ``record_many``
    buffers a request's samples all or none)."""

    def __init__(
        self,
        collector: Any,
        capacity: int,
        registry: CollectorRegistry,
        limits: RequestLimits = DEFAULT_LIMITS,
        options: otlp.OtlpOptions = DEFAULT_OPTIONS,
        retry_after_s: int = 1,
        series_cache: int = 100_000,
        max_families: int = 100_000,
        delta: DeltaState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limits.max_samples > capacity:
            raise ValueError(
                f"max samples per request ({limits.max_samples}) over the buffer ({capacity})"
            )
        self.collector = collector
        self.capacity = capacity
        self.limits = limits
        self.retry_after = str(max(1, retry_after_s))
        self.clock = clock
        self.lock = threading.Lock()

        def make(name: str, labels: Mapping[str, str], kind: str, unit: str) -> Any:
            if len(unit) > MAX_UNIT_LEN:  # carried by every sample record of the series
                raise InvalidSample(
                    "unit-too-long", f"unit of {len(unit)} chars, {MAX_UNIT_LEN} max"
                )
            return make_series(name, labels, kind, unit, limits.series)

        cache = SeriesCache(make, series_cache)
        self.rw = remote_write.RemoteWrite(cache, remote_write.Families(max_families), limits)
        self.otlp = otlp.Otlp(SeriesCache(cache.make, series_cache), limits, options, delta)
        self.requests = Counter(
            "monitoring_receive_requests",
            "Requests by receiver and HTTP status.",
            ["receiver", "code"],
            registry=registry,
        )
        self.samples = Counter(
            "monitoring_receive_samples",
            "Samples admitted into the SDK's buffer, by receiver.",
            ["receiver"],
            registry=registry,
        )
        self.rejected = Counter(
            "monitoring_receive_rejected",
            "Refused by reason: samples (remote_write), data points (otlp), or whole "
            "requests (reason of a 4xx).",
            ["receiver", "reason"],
            registry=registry,
        )
        self.stale = Counter(
            "monitoring_receive_stale_markers",
            "Staleness markers received: remote_write's stale NaN (passed on as samples), "
            "OTLP's NO_RECORDED_VALUE points (gauges and sums passed on, others dropped).",
            ["receiver"],
            registry=registry,
        )
        self._last_log = 0.0

    # -- admission ---------------------------------------------------------------------

    def _admit(self, conv: Converted) -> bool:
        """Buffer every point, or none when the buffer cannot take them all (caller holds
        the lock, so staged delta state is kept only for admitted requests)."""
        try:
            self.collector.record_many(conv.points)
        except BufferFullError:
            return False
        if conv.commit is not None:
            conv.commit()
        return True

    def _count(self, receiver: str, conv: Converted) -> None:
        for reason, n in conv.rejected.items():
            self.rejected.labels(receiver, reason).inc(n)
        if conv.stale:
            self.stale.labels(receiver).inc(conv.stale)
        if conv.rejected:
            now = time.monotonic()
            if now - self._last_log >= 5.0:  # at most one line per 5 s
                self._last_log = now
                log.warning(
                    "receive_rejected",
                    receiver=receiver,
                    rejected=conv.rejected_total,
                    first=conv.first_error,
                )

    def _handle(
        self,
        receiver: str,
        decode: Callable[[], Any],
        convert: Callable[[Any, int], Converted],
        all_refused: int,
    ) -> tuple[int, Converted | None, str]:
        """(status, converted request or None, reason): 200, 400/413/415 or 503;
        ``all_refused`` when every point was refused."""
        try:
            with self.lock:  # one request decoded at a time: bounds memory, not throughput
                conv = convert(decode(), int(self.clock() * 1000))
                if not conv.points and conv.rejected_total:
                    self._count(receiver, conv)
                    return all_refused, conv, conv.first_error
                try:
                    if not self._admit(conv):  # counted when the retry is admitted
                        return 503, conv, "the ingest buffer is full: retry later"
                except ProducerClosedError as e:
                    return 503, conv, str(e)[:300]
                self._count(receiver, conv)
                self.samples.labels(receiver).inc(len(conv.points))
                return 200, conv, ""
        except BadRequest as e:
            self.rejected.labels(receiver, e.reason).inc()
            return e.status, None, e.message

    # -- remote_write ------------------------------------------------------------------

    def remote_write(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one remote-write request: 204 when admitted. A 2.0 request's answers
        carry ``X-Prometheus-Remote-Write-Samples-Written`` (and the histogram and
        exemplar counts, 0), and one with refused samples is a 400 naming them even
        though its valid samples were written (2.0's partial write)."""
        proto = [remote_write.V1]

        def decode() -> Any:
            proto[0] = remote_write.check_headers(headers)
            return remote_write.decode(body, self.limits, proto[0])

        def convert(req: Any, now_ms: int) -> Converted:
            if proto[0] == remote_write.V2:
                return self.rw.convert_v2(req, now_ms)
            return self.rw.convert(req, now_ms)

        status, conv, reason = self._handle("remote_write", decode, convert, 400)
        v2 = proto[0] == remote_write.V2
        written = len(conv.points) if conv is not None and status == 200 else 0
        if v2 and status == 200 and conv is not None and conv.rejected_total:
            status = 400
            reason = f"{conv.rejected_total} samples refused, {written} written; first: "
            reason += conv.first_error
        code = 204 if status == 200 else status
        self.requests.labels("remote_write", str(code)).inc()
        h: dict[str, str] = {}
        if v2:
            h["X-Prometheus-Remote-Write-Samples-Written"] = str(written)
            h["X-Prometheus-Remote-Write-Histograms-Written"] = "0"
            h["X-Prometheus-Remote-Write-Exemplars-Written"] = "0"
        if code == 204:
            return Answer(204, h)
        h["Content-Type"] = "text/plain; charset=utf-8"
        if code == 503:
            h["Retry-After"] = self.retry_after
        return Answer(code, h, (reason + "\n").encode())

    # -- OTLP --------------------------------------------------------------------------

    def otlp_metrics(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one OTLP/HTTP export (200 with ``partial_success`` when points were
        refused; 400 with a ``google.rpc.Status`` for a bad request; 503 when full)."""
        try:
            media = otlp.media_type(headers)
        except BadRequest as e:
            self.rejected.labels("otlp", e.reason).inc()
            self.requests.labels("otlp", str(e.status)).inc()
            return Answer(
                e.status, {"Content-Type": "text/plain; charset=utf-8"}, e.message.encode()
            )

        def decode() -> Any:
            return otlp.decode(body, headers, self.limits)[0]

        status, conv, reason = self._handle("otlp", decode, self.otlp.convert, 200)
        self.requests.labels("otlp", str(status)).inc()
        h = {"Content-Type": media}
        if status == 200:
            resp = ExportMetricsServiceResponse()
            if conv is not None and conv.rejected_total:
                resp.partial_success.rejected_data_points = conv.rejected_total
                resp.partial_success.error_message = conv.first_error
            return Answer(200, h, _serialise(resp, media))
        if status == 503:
            h["Retry-After"] = self.retry_after
        code = _UNAVAILABLE if status == 503 else _INVALID_ARGUMENT
        return Answer(status, h, _serialise(Status(code=code, message=reason), media))

    # -- HTTP --------------------------------------------------------------------------

    def routes(self, guard: Guard) -> list[BaseRoute]:
        """The two POST routes, reading bodies through ``guard``."""

        def endpoint(receiver: str, fn: Callable[[Mapping[str, str], bytes], Answer]) -> Any:
            async def handle(request: Request) -> Response:
                try:
                    body = await guard.body(request, json=False)
                except Refused as e:
                    if e.status != 408:
                        raise
                    # a slow link is transient: both senders drop a 408 (only 429 and
                    # 5xx are retried), so the body not read in time is a 503
                    return self._unavailable(receiver, request.headers, e.message).response()
                answer = await run_in_threadpool(fn, request.headers, body)
                return answer.response()

            return handle

        return [
            Route(REMOTE_WRITE_PATH, endpoint("remote_write", self.remote_write), methods=["POST"]),
            Route(OTLP_PATH, endpoint("otlp", self.otlp_metrics), methods=["POST"]),
        ]

    def _unavailable(self, receiver: str, headers: Mapping[str, str], reason: str) -> Answer:
        """503 with ``Retry-After``, in the receiver's error shape, counted."""
        self.requests.labels(receiver, "503").inc()
        h = {"Retry-After": self.retry_after}
        if receiver == "otlp":
            try:
                media = otlp.media_type(headers)
            except BadRequest:
                media = otlp.PROTOBUF
            h["Content-Type"] = media
            return Answer(503, h, _serialise(Status(code=_UNAVAILABLE, message=reason), media))
        h["Content-Type"] = "text/plain; charset=utf-8"
        return Answer(503, h, (reason + ": retry\n").encode())


def _serialise(msg: Any, media: str) -> bytes:
    if media == otlp.JSON:
        return json_format.MessageToJson(msg, indent=None).encode()
    return bytes(msg.SerializeToString())


def from_settings(settings: Any, collector: Any, registry: CollectorRegistry) -> Receiver:
    """A :class:`Receiver` with the ``receive`` section's bounds and choices over
    ``collector`` (whose buffer holds ``collection.buffer_size`` samples)."""
    from monitoring.metrics.samples import Limits

    r = settings.receive
    limits = RequestLimits(
        max_decompressed_bytes=r.max_decompressed_bytes,
        max_json_bytes=min(r.max_decompressed_bytes, DEFAULT_LIMITS.max_json_bytes),
        max_series=r.max_series,
        max_samples=r.max_samples,
        max_metadata=r.max_metadata,
        series=Limits(max_labels=r.max_labels),
    )
    options = otlp.OtlpOptions(
        promote=tuple(r.promote_resource_attributes),
        scope_labels=r.scope_labels,
        target_info=r.target_info,
    )
    return Receiver(
        collector,
        settings.collection.buffer_size,
        registry,
        limits,
        options,
        retry_after_s=int(r.retry_after.total_seconds()),
        series_cache=r.series_cache,
        max_families=r.max_families,
        delta=DeltaState(r.max_delta_series, int(r.delta_ttl.total_seconds() * 1e9)),
    )
