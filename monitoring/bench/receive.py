"""``monitoring bench receive``: the receivers' cost per CPU-second of their process.

A receiver (ApiServer + Guard on a loopback port, the real SDK producer, a fresh topic
prefix on the broker) runs in this process; a client process posts prebuilt requests
over HTTP keep-alive, retrying a 503 after its Retry-After, as Prometheus and OTLP
exporters do. The receiver's cost is this process's CPU time (every thread: HTTP,
decoding, conversion, the SDK's encoding and librdkafka) from the first request until
the last sample is acknowledged by the broker; the client's CPU is not counted. Before
it, every series is sent once in-process (not measured), as a long-running receiver
has seen them at the previous scrape.

* remote_write: ``series`` node_exporter-like series (job, instance, a few labels),
  requests of ``per_request`` samples (Prometheus's ``max_samples_per_send`` is 2000),
  one sample per series per request, snappy-compressed.
* OTLP: requests of ``per_request`` number data points (half gauges, half cumulative
  monotonic sums) with two attributes each, under one resource.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import cramjam
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.api.server import ApiServer
from monitoring.config import Settings
from monitoring.ingest.prompb import WriteRequest
from monitoring.ingest.receiver import from_settings
from monitoring.runtime.admin import delete_topics, ensure_topics, list_topics
from monitoring.sdk.producer import MetricsCollector

_CLIENT = r"""
import struct, sys, time, httpx
path, url, ctype, enc = sys.argv[1:5]
bodies = []
with open(path, "rb") as f:
    while head := f.read(4):
        bodies.append(f.read(struct.unpack("<I", head)[0]))
headers = {"Content-Type": ctype}
if enc:
    headers["Content-Encoding"] = enc
    headers["X-Prometheus-Remote-Write-Version"] = "0.1.0"
retries = 0
with httpx.Client(timeout=60) as c:
    for b in bodies:
        while True:
            r = c.post(url, content=b, headers=headers)
            if r.status_code in (200, 204):
                break
            if r.status_code != 503:
                sys.exit(f"status {r.status_code}: {r.text[:300]}")
            retries += 1
            time.sleep(float(r.headers.get("retry-after", "1")) / 20)
print(retries)
"""


@dataclass(frozen=True)
class Result:
    """One receiver's run."""

    receiver: str
    requests: int
    points: int  # samples (remote_write) or data points (OTLP) sent
    samples: int  # samples on the topic
    cpu_s: float
    wall_s: float
    retries: int

    @property
    def points_per_cpu_s(self) -> float:
        return self.points / self.cpu_s if self.cpu_s else 0.0


def remote_write_bodies(series: int, per_request: int, requests: int, t0_ms: int) -> list[bytes]:
    """Snappy-compressed WriteRequests as Prometheus batches them."""
    names = ["node_cpu_seconds_total", "node_network_receive_bytes_total", "node_memory_free"]
    keys = [
        (names[i % 3], {"job": "node", "instance": f"host-{i % 50}:9100",
                        "cpu": str(i % 64), "mode": ("user", "system", "idle")[i % 3],
                        "device": f"dev{i // 150}"})
        for i in range(series)
    ]  # fmt: skip
    out = []
    n = 0
    for r in range(requests):
        req = WriteRequest()
        for _ in range(per_request):
            name, labels = keys[n % series]
            ts = req.timeseries.add()
            ts.labels.add(name="__name__", value=name)
            for k in sorted(labels):
                ts.labels.add(name=k, value=labels[k])
            ts.samples.add(value=float(n), timestamp=t0_ms + (n // series) * 1000 + r % 1000)
            n += 1
        out.append(bytes(cramjam.snappy.compress_raw(req.SerializeToString())))
    return out


def otlp_bodies(per_request: int, requests: int, t0_ns: int) -> list[bytes]:
    """ExportMetricsServiceRequests of gauges and cumulative monotonic sums."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    out = []
    per_metric = 50
    for r in range(requests):
        req = ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        for k, v in (("service.name", "bench"), ("service.instance.id", "i-1")):
            rm.resource.attributes.append(KeyValue(key=k, value=AnyValue(string_value=v)))
        sm = rm.scope_metrics.add()
        sm.scope.name = "bench"
        for j in range(per_request // per_metric):
            metric = sm.metrics.add(name=f"app.metric.{j}", unit="ms")
            data = metric.gauge if j % 2 else metric.sum
            if not j % 2:
                metric.sum.is_monotonic = True
                metric.sum.aggregation_temporality = m.AGGREGATION_TEMPORALITY_CUMULATIVE
            for i in range(per_metric):
                p = data.data_points.add(time_unix_nano=t0_ns + r * 1_000_000, as_double=r + i)
                p.attributes.append(KeyValue(key="route", value=AnyValue(string_value=f"/r{i}")))
                p.attributes.append(KeyValue(key="code", value=AnyValue(int_value=200 + i % 3)))
        out.append(req.SerializeToString())
    return out


def _run(
    settings: Settings,
    receiver_name: str,
    bodies: list[bytes],
    warmup: list[bytes],
    points: int,
    path: str,
    ctype: str,
    enc: str,
) -> Result:
    registry = CollectorRegistry()
    collector = MetricsCollector(settings, source="bench-receive", registry=registry)
    receiver = from_settings(settings, collector, registry)
    guard = Guard.for_bind("127.0.0.1", max_body_bytes=settings.receive.max_body_bytes)
    server = ApiServer(registry, "127.0.0.1", 0, guard=guard, mounts=receiver.routes(guard))
    server.start()
    url = "http://{}:{}{}".format(*server.address, path)
    # warm up in-process (not measured): the series caches fill as in a long-running
    # receiver, where each series is seen again every scrape
    handle = receiver.remote_write if receiver_name == "remote_write" else receiver.otlp_metrics
    headers = {"content-type": ctype, "content-encoding": enc}
    if enc:
        headers["x-prometheus-remote-write-version"] = "0.1.0"
    for body in warmup:
        while handle(headers, body).status == 503:
            collector.flush(0.05)
    collector.flush(30)
    key = ("monitoring_receive_samples_total", {"receiver": receiver_name})
    before = registry.get_sample_value(*key) or 0.0
    with tempfile.NamedTemporaryFile(delete=False) as f:
        for b in bodies:
            f.write(struct.pack("<I", len(b)) + b)
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _CLIENT, f.name, url, ctype, enc],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"client failed: {done.stderr[-2000:]}")
        left = collector.flush(60)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if left:
            raise RuntimeError(f"{left} samples not acknowledged")
        sent = int((registry.get_sample_value(*key) or 0.0) - before)
        return Result(receiver_name, len(bodies), points, sent, cpu, wall, int(done.stdout))
    finally:
        os.unlink(f.name)
        server.stop()
        collector.close()


def run(
    settings: Settings,
    rw_series: int = 10_000,
    rw_per_request: int = 2_000,
    rw_requests: int = 250,
    otlp_per_request: int = 1_000,
    otlp_requests: int = 200,
    progress: Callable[[str], None] = lambda _m: None,
) -> tuple[Result, Result]:
    """Both receivers on a fresh topic prefix (deleted afterwards)."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
    s = settings.model_copy(update={"kafka": kafka})
    ensure_topics(s)
    try:
        now_ms = time.time_ns() // 10**6 - 600_000
        progress("building remote_write requests")
        rw = remote_write_bodies(rw_series, rw_per_request, rw_requests, now_ms)
        progress(f"remote_write: {len(rw)} requests of {rw_per_request} samples")
        warm = -(-rw_series // rw_per_request)  # requests to see every series once
        r1 = _run(s, "remote_write", rw[warm:], rw[:warm], (rw_requests - warm) * rw_per_request,
                  "/api/v1/write",
                  "application/x-protobuf", "snappy")  # fmt: skip
        progress("building OTLP requests")
        ot = otlp_bodies(otlp_per_request, otlp_requests, now_ms * 10**6)
        progress(f"otlp: {len(ot)} requests of {otlp_per_request} data points")
        r2 = _run(s, "otlp", ot[1:], ot[:1], (otlp_requests - 1) * otlp_per_request, "/v1/metrics",
                  "application/x-protobuf", "")  # fmt: skip
        return r1, r2
    finally:
        delete_topics(settings.kafka, list_topics(settings.kafka, prefix=prefix))


def report(rw: Result, ot: Result) -> str:
    """The runs as text; the last line is ``key=value`` pairs."""
    lines = []
    for r, unit in ((rw, "samples"), (ot, "data points")):
        lines.append(
            f"{r.receiver}: {r.points:,} {unit} in {r.requests} requests, "
            f"{r.cpu_s:.2f} CPU-s, {r.wall_s:.2f} s wall, {r.retries} retried (503), "
            f"{r.samples:,} samples buffered and acknowledged: "
            f"{r.points_per_cpu_s:,.0f} {unit} per CPU-second"
        )
    lines.append(
        f"remote_write_samples_per_cpu_s={rw.points_per_cpu_s:.0f} "
        f"otlp_points_per_cpu_s={ot.points_per_cpu_s:.0f}"
    )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - python -m monitoring.bench.receive
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    print(report(*run(Settings.load(None), progress=lambda m: print(m, file=sys.stderr))))
