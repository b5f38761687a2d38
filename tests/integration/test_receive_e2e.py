"""The receivers with their real clients and the real broker.

* Debian's Prometheus scrapes Debian's node_exporter every second and remote-writes to
  the receiver; the samples read back from the samples topic equal, sample for sample,
  what that Prometheus stored for the same interval (asked through its API).
* The OpenTelemetry Python SDK's OTLP/HTTP exporter sends a counter, an up-down
  counter, a gauge and a histogram (cumulative, then delta); the samples topic holds
  exactly what was recorded, under the Prometheus-compatibility names.

The receiver runs in-process (ApiServer + Guard on a real port, the real SDK
producer); Prometheus and node_exporter are processes this test starts and stops.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.prometheus import free_port
from fixtures.receive import TopicReader
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.api.server import ApiServer
from monitoring.config import Settings
from monitoring.ingest.receiver import Receiver, from_settings
from monitoring.metrics.samples import Sample, is_stale, series_key
from monitoring.sdk.producer import MetricsCollector
from monitoring.sdk.sender import BufferFullError

pytestmark = pytest.mark.integration


@dataclass
class Running:
    receiver: Receiver
    server: ApiServer
    collector: MetricsCollector
    registry: CollectorRegistry

    @property
    def url(self) -> str:
        return "http://{}:{}".format(*self.server.address)


@pytest.fixture
def running(settings_factory: Callable[..., Settings]) -> Iterator[tuple[Running, TopicReader]]:
    settings = settings_factory()
    registry = CollectorRegistry()
    collector = MetricsCollector(settings, source="receive-test", registry=registry, linger=0.05)
    receiver = from_settings(settings, collector, registry)
    guard = Guard.for_bind("127.0.0.1", max_body_bytes=settings.receive.max_body_bytes)
    server = ApiServer(registry, "127.0.0.1", 0, guard=guard, mounts=receiver.routes(guard))
    server.start()
    reader = TopicReader(settings)
    try:
        yield Running(receiver, server, collector, registry), reader
    finally:
        reader.close()
        server.stop()
        collector.close()


class Process:
    """A process this test starts (and stops by its own handle)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log_path = log
        self.log = log.open("w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.tail()}"
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{url} not ready: {self.tail()}"
            time.sleep(0.05)  # polling a condition

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def _binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    assert Path(path).exists(), f"{name} is missing: run `make prometheus node-exporter`"
    return path


class FullAtFirst:
    """The SDK collector, answering "buffer full" to the first ``n`` requests (the
    receiver then answers 503, which Prometheus must retry)."""

    def __init__(self, collector: MetricsCollector, n: int) -> None:
        self.collector = collector
        self.left = n
        self.refused = 0

    def record_many(self, items: list[Any]) -> None:
        if self.left:
            self.left -= 1
            self.refused += 1
            raise BufferFullError("full (test)")
        self.collector.record_many(items)


@pytest.mark.parametrize("full_at_first", [0, 3], ids=["admitted", "503-then-retried"])
def test_prometheus_remote_write_lands_exactly_what_prometheus_stored(
    running: tuple[Running, TopicReader], tmp_path: Path, full_at_first: int
) -> None:
    rx, reader = running
    gate = FullAtFirst(rx.collector, full_at_first)
    rx.receiver.collector = gate
    exporter_port, prom_port = free_port(), free_port()
    exporter = Process(
        [_binary("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{exporter_port}"],
        tmp_path / "node_exporter.log",
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:{exporter_port}"]
remote_write:
  - url: {rx.url}/api/v1/write
    queue_config:
      min_shards: 1
      max_shards: 1
      max_samples_per_send: 2000
      batch_send_deadline: 500ms
    metadata_config:
      send_interval: 1s
"""
    )
    prom = None
    try:
        exporter.wait_http(f"http://127.0.0.1:{exporter_port}/metrics")
        prom = Process(
            [_binary("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            tmp_path / "prometheus.log",
        )  # fmt: skip
        prom.wait_http(f"http://127.0.0.1:{prom_port}/-/ready")

        def up_times(samples: list[Sample]) -> list[int]:
            return sorted({s.timestamp_ms for s in samples if s.name == "up"})

        # one shard sends in WAL order: once scrape k+1 arrived, scrapes up to k did
        reader.until(lambda s: len(up_times(s)) >= 5, 60, "five scrapes remote-written")
        times = up_times(reader.samples)
        start, cut = times[0], times[3]
        in_span = [
            (s.series, s.timestamp_ms, s.value)
            for s in reader.samples
            if start <= s.timestamp_ms <= cut and not is_stale(s.value)
        ]  # staleness markers are passed on (a series gone); Prometheus's API shows none
        got = set(in_span)
        assert len(in_span) == len(got)  # each sample once
        stored, non_finite = _stored(prom_port, start, cut)
        assert got == stored
        assert len({t for _, t, _ in got}) == 4  # four scrapes
        assert len(got) > 500  # node_exporter's series, not a handful
        # what Prometheus holds as NaN or ±Inf was refused and counted, not sent
        refused = rx.registry.get_sample_value(
            "monitoring_receive_rejected_total",
            {"receiver": "remote_write", "reason": "non-finite-value"},
        )
        assert (refused or 0.0) >= non_finite
        # the 503s were retried by Prometheus: nothing lost, nothing twice (above)
        assert gate.refused == full_at_first
        assert rx.registry.get_sample_value(
            "monitoring_receive_requests_total", {"receiver": "remote_write", "code": "503"}
        ) == (float(full_at_first) if full_at_first else None)
        print(f"{len(got)} samples in 4 scrapes equal; {non_finite} non-finite refused")

        # kinds: counters by name at once; gauges once the family metadata arrived
        def kinds(samples: list[Sample]) -> dict[str, str]:
            return {s.name: s.kind for s in samples}

        reader.until(
            lambda s: kinds(s).get("node_memory_MemFree_bytes") == "GAUGE", 30, "metadata kinds"
        )
        k = kinds(reader.samples)
        assert k["node_cpu_seconds_total"] == "COUNTER"
        assert k["node_memory_MemFree_bytes"] == "GAUGE"
    finally:
        if prom is not None:
            prom.stop()
        exporter.stop()


def _stored(port: int, start_ms: int, end_ms: int) -> tuple[set[tuple[str, int, float]], int]:
    """Every raw sample Prometheus holds in [start_ms, end_ms] (finite ones) and the
    count of non-finite ones, through its query API."""
    span = end_ms - start_ms + 1
    r = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/query",
        params={"query": f'{{__name__=~".+"}}[{span}ms]', "time": f"{end_ms / 1000:.3f}"},
        timeout=30,
    )
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    out: set[tuple[str, int, float]] = set()
    non_finite = 0
    for series in body["data"]["result"]:
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        k = series_key(name, labels)
        for t, v in series["values"]:
            value = float(v)
            if value != value or value in (float("inf"), float("-inf")):
                non_finite += 1
                continue
            out.add((k, round(float(t) * 1000), value))
    return out, non_finite


def test_opentelemetry_sdk_export_lands_exactly_what_was_recorded(
    running: tuple[Running, TopicReader],
) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    rx, reader = running
    resource = Resource.create({"service.name": "checkout", "service.instance.id": "pod-7"})
    exporter = OTLPMetricExporter(endpoint=f"{rx.url}/v1/metrics", timeout=10)
    metric_reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=resource, metric_readers=[metric_reader])
    try:
        meter = provider.get_meter("shop.checkout", "1.2.3")
        requests = meter.create_counter("http.requests", unit="{request}")
        inflight = meter.create_up_down_counter("jobs.inflight")
        temperature = meter.create_gauge("room.temperature", unit="Cel")
        latency = meter.create_histogram(
            "rpc.latency", unit="s", explicit_bucket_boundaries_advisory=[0.5, 1.0, 5.0]
        )
        requests.add(5, {"route": "/cart"})
        requests.add(2, {"route": "/cart"})
        requests.add(1, {"route": "/pay"})
        inflight.add(3)
        inflight.add(-1)
        temperature.set(21.5, {"room": "a"})
        latency.record(0.3)
        latency.record(3.0)
        latency.record(0.7)
        t0 = time.time_ns() // 10**6
        assert provider.force_flush(10_000)
        t1 = time.time_ns() // 10**6

        ident = {"job": "checkout", "instance": "pod-7"}
        scope = {"otel_scope_name": "shop.checkout", "otel_scope_version": "1.2.3"}
        info = {
            k.replace(".", "_"): str(v)
            for k, v in resource.attributes.items()
            if k not in ("service.name", "service.instance.id")
        }
        expected = {
            series_key("http_requests_total", {"route": "/cart", **scope, **ident}): (
                7.0,
                "COUNTER",
            ),
            series_key("http_requests_total", {"route": "/pay", **scope, **ident}): (
                1.0,
                "COUNTER",
            ),
            series_key("jobs_inflight", {**scope, **ident}): (2.0, "GAUGE"),
            series_key("room_temperature_celsius", {"room": "a", **scope, **ident}): (
                21.5,
                "GAUGE",
            ),
            **{
                series_key("rpc_latency_seconds_bucket", {"le": le, **scope, **ident}): (
                    n,
                    "HISTOGRAM_BUCKET",
                )
                for le, n in (("0.5", 1.0), ("1.0", 2.0), ("5.0", 3.0), ("+Inf", 3.0))
            },
            series_key("rpc_latency_seconds_sum", {**scope, **ident}): (4.0, "COUNTER"),
            series_key("rpc_latency_seconds_count", {**scope, **ident}): (3.0, "COUNTER"),
            series_key("target_info", {**info, **ident}): (1.0, "GAUGE"),
        }
        reader.until(lambda s: len(s) >= len(expected), 30, "the export on the samples topic")
        reader.poll(1.0)  # and nothing more
        got = {s.series: (s.value, s.kind) for s in reader.samples}
        assert got == expected
        assert len(reader.samples) == len(expected)
        assert all(t0 - 1000 <= s.timestamp_ms <= t1 for s in reader.samples)
    finally:
        provider.shutdown()  # exports once more: after the checks


def test_opentelemetry_sdk_delta_exports_arrive_cumulative(
    running: tuple[Running, TopicReader],
) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource

    rx, reader = running
    delta = AggregationTemporality.DELTA
    exporter = OTLPMetricExporter(
        endpoint=f"{rx.url}/v1/metrics",
        preferred_temporality={Counter: delta, UpDownCounter: delta, Histogram: delta},
    )
    metric_reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": "batch"}), metric_readers=[metric_reader]
    )
    try:
        meter = provider.get_meter("jobs")
        done = meter.create_counter("jobs.done")
        queued = meter.create_up_down_counter("jobs.queued")
        size = meter.create_histogram("job.size", explicit_bucket_boundaries_advisory=[10.0])
        done.add(4)
        queued.add(5)
        size.record(3)
        assert provider.force_flush(10_000)
        done.add(6)
        queued.add(-2)
        size.record(30)
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    def series_values(name: str, **labels: str) -> list[float]:
        """Values of the samples of ``name`` carrying ``labels``, in time order."""
        ordered = sorted(reader.samples, key=lambda s: s.timestamp_ms)
        return [
            s.value
            for s in ordered
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    reader.until(lambda s: len(series_values("jobs_done_total")) >= 2, 30, "two delta exports")
    reader.poll(1.0)
    assert series_values("jobs_done_total") == [4.0, 10.0]
    assert series_values("jobs_queued") == [5.0, 3.0]
    assert series_values("job_size_count") == [1.0, 2.0]
    assert series_values("job_size_sum") == [3.0, 33.0]
    assert series_values("job_size_bucket", le="10.0") == [1.0, 1.0]
    assert series_values("job_size_bucket", le="+Inf") == [1.0, 2.0]
    assert rx.registry.get_sample_value(
        "monitoring_receive_samples_total", {"receiver": "otlp"}
    ) == float(len(reader.samples))
