"""The receivers read as an attacker or a careless sender would: inputs that used to
crash a request (answered 500, which OTLP exporters drop and nobody counts), data
dropped silently, and per-series structures whose bytes were not bounded."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.receive import World
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

from monitoring.ingest.otlp import OtlpOptions
from monitoring.ingest.otlp_raw import RawExportRequest

NOW_NS = time.time_ns()
PB = {"Content-Type": "application/x-protobuf"}
DELTA, CUMULATIVE = m.AGGREGATION_TEMPORALITY_DELTA, m.AGGREGATION_TEMPORALITY_CUMULATIVE


@pytest.fixture
def world() -> Iterator[World]:
    w = World(options=OtlpOptions(scope_labels=False, target_info=False))
    yield w
    w.close()


def export(*metrics: m.Metric) -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="s")))
    rm.scope_metrics.add().metrics.extend(metrics)
    return req.SerializeToString()


def gauge(name: str, value: float, **attrs: str) -> m.Metric:
    p = m.NumberDataPoint(
        time_unix_nano=NOW_NS,
        as_double=value,
        attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()],
    )
    return m.Metric(name=name, gauge=m.Gauge(data_points=[p]))


def otlp(w: World, body: bytes, headers: dict[str, str] = PB) -> tuple[int, Any]:
    r = w.client.post("/v1/metrics", content=body, headers=headers)
    ok = r.status_code == 200
    return r.status_code, ExportMetricsServiceResponse.FromString(r.content) if ok else r.text


def recorded(w: World) -> set[str]:
    return {k for k, _, _, _ in w.collector.recorded}


@pytest.mark.parametrize("attribute", [b"\x0a\x02\xff\xfe", b"\x0a\x09ab"])
def test_an_attribute_that_is_not_a_key_value_refuses_its_point_only(
    world: World, attribute: bytes
) -> None:
    # a point's attributes are decoded lazily (otlp_raw.py): invalid UTF-8 or a
    # truncated KeyValue used to raise DecodeError out of the request (500)
    req = RawExportRequest.FromString(export(gauge("bad", 1.0, a="b"), gauge("good", 2.0)))
    req.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].attributes[0] = (
        attribute
    )
    status, resp = otlp(world, req.SerializeToString())
    assert status == 200
    assert resp.partial_success.rejected_data_points == 1
    assert resp.partial_success.error_message.startswith("bad-attributes")
    assert recorded(world) == {'good{job="s"}'}
    assert (
        world.metric("monitoring_receive_rejected_total", receiver="otlp", reason="bad-attributes")
        == 1
    )


@pytest.mark.parametrize(("scale", "offset"), [(0, 5000), (-10, 2), (0, -5000)])
def test_an_exponential_histogram_past_the_float_range_refuses_its_point(
    world: World, scale: int, offset: int
) -> None:
    # 2.0 ** (offset * 2**-scale) raised OverflowError (500); tiny bounds collapsed to 0.0
    p = m.ExponentialHistogramDataPoint(
        time_unix_nano=NOW_NS, scale=scale, count=2, sum=1.0,
        positive=m.ExponentialHistogramDataPoint.Buckets(offset=offset, bucket_counts=[1, 1]),
        negative=m.ExponentialHistogramDataPoint.Buckets(offset=offset, bucket_counts=[0]),
    )  # fmt: skip
    eh = m.ExponentialHistogram(data_points=[p], aggregation_temporality=CUMULATIVE)
    status, resp = otlp(world, export(m.Metric(name="size", exponential_histogram=eh)))
    assert status == 200
    assert resp.partial_success.rejected_data_points == 1
    assert resp.partial_success.error_message.startswith("bad-histogram")
    assert world.collector.recorded == []


def test_a_delta_total_that_overflows_is_refused_and_the_kept_total_unchanged(
    world: World,
) -> None:
    # the running sum of 1.5e308 + 1.5e308 is inf: the SDK's record_many refuses a
    # non-finite value for the whole request (500), and every later request with it
    t0 = NOW_NS - 5 * 10**9

    def delta(v: float, i: int) -> m.Metric:
        p = m.NumberDataPoint(
            start_time_unix_nano=t0 + i * 10**9, time_unix_nano=t0 + (i + 1) * 10**9, as_double=v
        )
        s = m.Sum(data_points=[p], is_monotonic=True, aggregation_temporality=DELTA)
        return m.Metric(name="big", sum=s)

    assert otlp(world, export(delta(1.5e308, 0)))[0] == 200
    status, resp = otlp(world, export(delta(1.5e308, 1), gauge("ok", 1.0)))
    assert status == 200 and resp.partial_success.rejected_data_points == 1
    assert "non-finite" in resp.partial_success.error_message
    assert otlp(world, export(delta(-1.0e308, 2)))[0] == 200
    assert [v for k, _, _, v in world.collector.recorded if k.startswith("big")] == [
        1.5e308,
        0.5e308,
    ]
    assert all(v - v == 0.0 for _, _, _, v in world.collector.recorded)


def test_every_gzip_member_is_read(world: World) -> None:
    # RFC 1952 allows several members; only the first was read, the rest dropped silently
    body = gzip.compress(export(gauge("first", 1.0))) + gzip.compress(export(gauge("second", 2)))
    status, _ = otlp(world, body, {**PB, "Content-Encoding": "gzip"})
    assert status == 200
    assert recorded(world) == {'first{job="s"}', 'second{job="s"}'}


def test_gzip_members_are_bounded_together() -> None:
    from monitoring.ingest.receiving import RequestLimits

    w = World(limits=RequestLimits(max_decompressed_bytes=3000))
    try:
        member = gzip.compress(b"\0" * 2000)
        status, text = otlp(w, member + member, {**PB, "Content-Encoding": "gzip"})
        assert status == 413, text
        status, text = otlp(w, member + b"junk", {**PB, "Content-Encoding": "gzip"})
        assert status == 400, text
    finally:
        w.close()


# -- per-series structures bounded in bytes, not only in entries --------------------------


def _rw(w: World, *series: bytes) -> int:
    from fixtures.receive import RW_HEADERS, snappy

    body = b"".join(b"\x0a" + _varint(len(s)) + s for s in series)  # WriteRequest.timeseries
    return w.client.post("/api/v1/write", content=snappy(body), headers=RW_HEADERS).status_code


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _series(labels: dict[str, str], padding: bytes = b"") -> bytes:
    from monitoring.ingest.prompb import TimeSeries

    ts = TimeSeries()
    for k, v in labels.items():
        ts.labels.add(name=k, value=v)
    head = ts.SerializeToString()
    if padding:  # an unknown field (15, bytes): ignored by a parse, part of the bytes
        head += b"\x7a" + _varint(len(padding)) + padding
    tail = TimeSeries()
    tail.samples.add(value=1.0, timestamp=NOW_NS // 10**6)
    return head + tail.SerializeToString()


def test_remote_write_label_caches_are_bounded_in_bytes(world: World) -> None:
    # the caches keyed by a series' labels bytes counted entries only: 100,000 keys of
    # a request's size each (unknown fields padding valid labels, or refused labels)
    rw = world.receiver.rw
    rw.by_labels_bytes.max_bytes = rw.refused_bytes.max_bytes = 1 << 20
    for i in range(40):
        pad = i.to_bytes(4, "big") * 25_000  # 100 kB
        assert _rw(world, _series({"__name__": "up", "i": str(i)}, pad)) == 204
        assert _rw(world, _series({"__name__": "bad", "v": str(i) * 5000})) == 400
    assert len(world.collector.recorded) == 40
    assert sum(map(len, rw.by_labels)) <= 1 << 20
    assert sum(map(len, rw.refused_labels)) <= 1 << 20


def test_otlp_attribute_cache_is_bounded_in_bytes(world: World) -> None:
    # a point's attributes were cached with their labels before the labels were checked
    o = world.receiver.otlp
    o.labels_bytes.max_bytes = 1 << 20
    for i in range(40):
        status, resp = otlp(world, export(gauge("g", 1.0, v=str(i) * 20_000)))
        assert status == 200 and resp.partial_success.rejected_data_points == 1
    assert sum(sum(map(len, k)) for k in o._labels) <= 1 << 20


def test_the_series_cache_is_bounded_in_bytes() -> None:
    from monitoring.ingest.receiving import SeriesCache, held
    from monitoring.wire.sample_encoding import make_series

    cache = SeriesCache(make_series, max_entries=1000, max_bytes=200_000)
    for i in range(100):
        cache.get(i, "m", {"v": f"{i:04d}" * 500}, "GAUGE")
    assert sum(map(held, cache.entries.values())) == cache.bytes <= 200_000
    assert len(cache.entries) < 100


def test_delta_state_is_bounded_in_bytes_and_keeps_no_refused_series() -> None:
    from monitoring.ingest.otlp_delta import DeltaState

    delta = DeltaState(max_series=1000, max_bytes=20_000)
    w = World(options=OtlpOptions(scope_labels=False, target_info=False), delta=delta)
    try:
        t0 = NOW_NS - 5 * 10**9
        refused = 0
        for i in range(40):
            p = m.NumberDataPoint(
                start_time_unix_nano=t0,
                time_unix_nano=t0 + 10**9,
                as_double=1.0,
                attributes=[KeyValue(key="v", value=AnyValue(string_value=f"{i:04d}" * 500))],
            )
            s = m.Sum(data_points=[p], is_monotonic=True, aggregation_temporality=DELTA)
            status, resp = otlp(w, export(m.Metric(name="c", sum=s)))
            assert status == 200
            refused += resp.partial_success.rejected_data_points
        assert refused and "delta-state-full" in resp.partial_success.error_message
        assert delta.bytes <= 20_000 and delta.bytes == sum(delta.sizes.values())
        # a delta histogram whose series the contract refuses keeps no state
        before = set(delta.series)
        p = m.HistogramDataPoint(
            time_unix_nano=t0 + 10**9, explicit_bounds=[1.0], bucket_counts=[1, 0], count=1,
            attributes=[KeyValue(key="x", value=AnyValue(string_value="y" * 5000))],
        )  # fmt: skip
        h = m.Histogram(data_points=[p], aggregation_temporality=DELTA)
        status, resp = otlp(w, export(m.Metric(name="h", histogram=h)))
        assert resp.partial_success.rejected_data_points == 1
        assert set(delta.series) == before
    finally:
        w.close()


def test_a_unit_past_the_bound_refuses_its_series(world: World) -> None:
    # the samples contract has no bound on a unit: every record of the series carries it
    long_unit = "{" + "x" * 5000 + "}"  # an annotation: not in the name
    g = gauge("g", 1.0)
    g.unit = long_unit
    status, resp = otlp(world, export(g, gauge("ok", 1.0)))
    assert status == 200 and resp.partial_success.rejected_data_points == 1
    assert resp.partial_success.error_message.startswith("unit-too-long")
    assert recorded(world) == {'ok{job="s"}'}


def test_remote_write_metadata_is_bounded_per_family(world: World) -> None:
    from monitoring.ingest.prompb import MetricMetadata

    md = [
        MetricMetadata(type=2, metric_family_name="n" * 300_000, unit="s"),
        MetricMetadata(type=2, metric_family_name="up", unit="u" * 300_000),
    ]
    body = b"".join(b"\x1a" + _varint(len(x)) + x for x in (m.SerializeToString() for m in md))
    from fixtures.receive import RW_HEADERS, snappy

    r = world.client.post("/api/v1/write", content=snappy(body), headers=RW_HEADERS)
    assert r.status_code == 204
    types = world.receiver.rw.families.types
    assert sum(len(k) + len(v[1]) for k, v in types.items()) < 1000
    assert _rw(world, _series({"__name__": "up"})) == 400  # its unit is too long


def test_a_request_over_the_sample_bound_is_refused_before_its_series_are_made() -> None:
    # data points were counted, not samples: each histogram point made a series per
    # bucket (under the receiver's lock) before the request was found too large
    from monitoring.ingest.receiving import RequestLimits

    w = World(limits=RequestLimits(max_samples=1000))
    try:
        made: list[Any] = []
        make = w.receiver.otlp.series.make

        def counting(*a: Any) -> Any:
            made.append(a)
            return make(*a)

        w.receiver.otlp.series.make = counting
        metrics = []
        for i in range(10):
            p = m.HistogramDataPoint(
                time_unix_nano=NOW_NS,
                explicit_bounds=[float(b) for b in range(900)],
                bucket_counts=[0] * 901,
            )
            h = m.Histogram(data_points=[p], aggregation_temporality=CUMULATIVE)
            metrics.append(m.Metric(name=f"h{i}", histogram=h))
        status, text = otlp(w, export(*metrics))
        assert status == 400 and "over 1000 samples" in text
        assert len(made) <= 1000
    finally:
        w.close()


def test_otlp_json_bodies_have_their_own_smaller_bound() -> None:
    # JSON decodes at ~0.6 CPU-us and ~20 bytes of memory per byte under the receiver's
    # lock (32 MB: 18 CPU-s, 614 MB, every other sender waiting); protobuf is not bounded
    # by it
    from monitoring.ingest.receiving import RequestLimits

    w = World(limits=RequestLimits(max_json_bytes=10_000), max_body_bytes=1 << 20)
    try:
        counts = ",".join(["0"] * 20_000)
        big = '{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"a","histogram":'
        big += '{"dataPoints":[{"bucketCounts":[' + counts + "]}]}}]}]}]}"
        json_headers = {"Content-Type": "application/json"}
        status, text = otlp(w, big.encode(), json_headers)
        assert status == 413 and "JSON body over 10000 bytes" in text
        gz = {**json_headers, "Content-Encoding": "gzip"}
        assert otlp(w, gzip.compress(big.encode()), gz)[0] == 413  # bounded decompressed
        many = export(*[gauge(f"g{i}", 1.0) for i in range(1000)])
        assert len(many) > 10_000 and otlp(w, many)[0] == 200
    finally:
        w.close()


@pytest.mark.parametrize(
    ("path", "ctype"),
    [("/api/v1/write", "application/x-protobuf"), ("/v1/metrics", "application/json")],
)
def test_a_body_not_received_in_time_is_a_503_the_sender_retries(path: str, ctype: str) -> None:
    # the Guard's 408: Prometheus retries only 5xx and 429 and OTLP exporters 429, 502,
    # 503 and 504, so a slow link lost the request's samples
    import socket

    from fixtures.receive import FakeCollector
    from prometheus_client import CollectorRegistry

    from monitoring.api.guard import Guard
    from monitoring.api.server import ApiServer
    from monitoring.ingest.receiver import Receiver

    collector, registry = FakeCollector(), CollectorRegistry()
    receiver = Receiver(collector, collector.capacity, registry)
    guard = Guard.for_bind("127.0.0.1", read_timeout_s=0.3)
    server = ApiServer(registry, "127.0.0.1", 0, guard=guard, mounts=receiver.routes(guard))
    server.start()
    try:
        host, port = server.address
        with socket.create_connection((host, port), timeout=10) as s:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
                "Content-Length: 100\r\n\r\n"
            )
            s.sendall(head.encode() + b"x" * 10)  # and then nothing more
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = s.recv(4096)
                assert chunk, answer
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] == b"503", answer
        assert b"retry-after: 1" in rest.lower()
        receiver_name = "remote_write" if path == "/api/v1/write" else "otlp"
        assert (
            registry.get_sample_value(
                "monitoring_receive_requests_total", {"receiver": receiver_name, "code": "503"}
            )
            == 1
        )
    finally:
        server.stop()


def test_attribute_keys_longer_than_a_label_name_are_not_cached(world: World) -> None:
    # label_name's lru_cache held 4,096 keys of any length (a sender's attribute keys)
    from monitoring.ingest import otlp_names

    cached = otlp_names._cached_label_name
    before = cached.cache_info().currsize
    for i in range(20):
        p = m.NumberDataPoint(
            time_unix_nano=NOW_NS,
            as_double=1.0,
            attributes=[KeyValue(key=f"{i:03d}" * 30_000, value=AnyValue(string_value="v"))],
        )
        status, resp = otlp(world, export(m.Metric(name="g", gauge=m.Gauge(data_points=[p]))))
        assert status == 200 and resp.partial_success.rejected_data_points == 1
        assert resp.partial_success.error_message.startswith("bad-label-name")
    assert cached.cache_info().currsize - before < 5


def test_the_attribute_cache_budget_counts_each_attribute_object(world: World) -> None:
    # a point of 20,000 empty attributes has labels {} (valid) and a key of 20,000 small
    # bytes objects: counting only their lengths let the cache hold ~4x its budget
    import sys

    o = world.receiver.otlp
    o.labels_bytes.max_bytes = 4 << 20
    for i in range(16):
        p = m.NumberDataPoint(
            time_unix_nano=NOW_NS,
            as_double=1.0,
            attributes=[KeyValue(key=f"k{i}_{j}", value=AnyValue()) for j in range(20_000)],
        )
        status, _ = otlp(world, export(m.Metric(name="g", gauge=m.Gauge(data_points=[p]))))
        assert status == 200
    held = sum(
        sys.getsizeof(k) + sum(map(sys.getsizeof, k)) + sys.getsizeof(v)
        for k, v in o._labels.items()
    )
    assert 0 < held <= 4 << 20
