"""OTLP/HTTP metrics receiver in-process: every point type, OpenTelemetry's
Prometheus-compatibility names and labels, delta accumulation, bodies (protobuf, JSON,
gzip), refusals and backpressure through the real ApiServer and Guard."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.receive import World, key
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

from monitoring.ingest.otlp import OtlpOptions
from monitoring.ingest.prompb import Status
from monitoring.metrics.samples import is_stale

NOW_NS = time.time_ns()
T = NOW_NS // 1_000_000
PB = {"Content-Type": "application/x-protobuf"}
DELTA, CUMULATIVE = m.AGGREGATION_TEMPORALITY_DELTA, m.AGGREGATION_TEMPORALITY_CUMULATIVE


def kv(k: str, v: Any) -> KeyValue:
    if isinstance(v, bool):
        return KeyValue(key=k, value=AnyValue(bool_value=v))
    if isinstance(v, int):
        return KeyValue(key=k, value=AnyValue(int_value=v))
    return KeyValue(key=k, value=AnyValue(string_value=v))


def export(*metrics: m.Metric, resource: dict[str, Any] | None = None, scope: str = "") -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for k, v in (resource if resource is not None else {"service.name": "svc"}).items():
        rm.resource.attributes.append(kv(k, v))
    sm = rm.scope_metrics.add()
    sm.scope.name = scope
    sm.metrics.extend(metrics)
    return req.SerializeToString()


def gauge(name: str, value: float, unit: str = "", t_ns: int = NOW_NS, **attrs: Any) -> m.Metric:
    p = m.NumberDataPoint(
        time_unix_nano=t_ns, as_double=value, attributes=[kv(k, v) for k, v in attrs.items()]
    )
    return m.Metric(name=name, unit=unit, gauge=m.Gauge(data_points=[p]))


def sum_(
    name: str, value: float, monotonic: bool, temporality: int = CUMULATIVE,
    start_ns: int = 0, t_ns: int = NOW_NS, unit: str = "", **attrs: Any,
) -> m.Metric:  # fmt: skip
    p = m.NumberDataPoint(
        start_time_unix_nano=start_ns,
        time_unix_nano=t_ns,
        attributes=[kv(k, v) for k, v in attrs.items()],
    )
    if float(value).is_integer():
        p.as_int = int(value)
    else:
        p.as_double = value
    s = m.Sum(data_points=[p], is_monotonic=monotonic, aggregation_temporality=temporality)
    return m.Metric(name=name, unit=unit, sum=s)


def histogram(
    name: str, bounds: list[float], counts: list[int], total: float, temporality: int = CUMULATIVE,
    t_ns: int = NOW_NS, unit: str = "",
) -> m.Metric:  # fmt: skip
    p = m.HistogramDataPoint(
        time_unix_nano=t_ns,
        explicit_bounds=bounds,
        bucket_counts=counts,
        count=sum(counts),
        sum=total,
    )
    h = m.Histogram(data_points=[p], aggregation_temporality=temporality)
    return m.Metric(name=name, unit=unit, histogram=h)


@pytest.fixture
def world() -> Iterator[World]:
    w = World(options=OtlpOptions(scope_labels=False, target_info=False))
    yield w
    w.close()


def post(w: World, body: bytes, headers: dict[str, str] = PB) -> Any:
    return w.client.post("/v1/metrics", content=body, headers=headers)


def response(r: Any) -> ExportMetricsServiceResponse:
    return ExportMetricsServiceResponse.FromString(r.content)


def test_gauges_and_cumulative_sums(world: World) -> None:
    body = export(
        gauge("queue.depth", 7, route="/a"),
        gauge("cpu.utilization", 0.25, unit="1"),
        sum_("http.server.requests", 12, monotonic=True, unit="{request}", status_code=200),
        sum_("active.jobs", 3, monotonic=False),
        sum_("sent", 1024, monotonic=True, unit="By"),
    )
    r = post(world, body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert not response(r).HasField("partial_success")
    job = {"job": "svc"}
    assert world.collector.values() == {
        key("queue_depth", route="/a", **job): 7.0,
        key("cpu_utilization_ratio", **job): 0.25,
        key("http_server_requests_total", status_code="200", **job): 12.0,
        key("active_jobs", **job): 3.0,
        key("sent_bytes_total", **job): 1024.0,
    }
    assert (
        world.collector.kinds()[key("http_server_requests_total", status_code="200", **job)]
        == "COUNTER"
    )
    assert world.collector.kinds()[key("active_jobs", **job)] == "GAUGE"
    assert {t for _, _, t, _ in world.collector.recorded} == {T}


def test_delta_sums_accumulate_per_series(world: World) -> None:
    t0 = NOW_NS - 3_000_000_000
    for i, (v, up_down) in enumerate(((2, 5), (3, -2), (1, 1))):
        start, end = t0 + i * 10**9, t0 + (i + 1) * 10**9
        body = export(
            sum_("jobs", v, True, DELTA, start, end),
            sum_("inflight", up_down, False, DELTA, start, end),
        )
        assert post(world, body).status_code == 200
    rec = [(k, v) for k, _, _, v in world.collector.recorded]
    assert [v for k, v in rec if k.startswith("jobs_total")] == [2.0, 5.0, 6.0]
    assert [v for k, v in rec if k.startswith("inflight")] == [5.0, 3.0, 4.0]
    # a repeat of the last delta is refused, not counted twice
    r = post(world, export(sum_("jobs", 1, True, DELTA, t0 + 2 * 10**9, t0 + 3 * 10**9)))
    ps = response(r).partial_success
    assert (ps.rejected_data_points, "delta-out-of-order" in ps.error_message) == (1, True)


def test_a_request_refused_for_backpressure_does_not_count_its_deltas(world: World) -> None:
    body = export(sum_("jobs", 2, True, DELTA, NOW_NS - 2 * 10**9, NOW_NS - 10**9))
    world.collector.occupied = world.collector.capacity
    r = post(world, body)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert Status.FromString(r.content).code == 14
    world.collector.occupied = 0
    assert post(world, body).status_code == 200  # the retry
    assert world.collector.values() == {key("jobs_total", job="svc"): 2.0}


def test_explicit_histograms_become_cumulative_buckets(world: World) -> None:
    r = post(world, export(histogram("rpc.duration", [0.1, 1.0], [1, 2, 3], 7.5, unit="s")))
    assert r.status_code == 200
    b = "rpc_duration_seconds_bucket"
    job = {"job": "svc"}
    assert world.collector.values() == {
        key(b, le="0.1", **job): 1.0,
        key(b, le="1.0", **job): 3.0,
        key(b, le="+Inf", **job): 6.0,
        key("rpc_duration_seconds_sum", **job): 7.5,
        key("rpc_duration_seconds_count", **job): 6.0,
    }
    assert world.collector.kinds()[key(b, le="0.1", **job)] == "HISTOGRAM_BUCKET"
    assert world.collector.kinds()[key("rpc_duration_seconds_count", **job)] == "COUNTER"


def test_delta_histograms_accumulate(world: World) -> None:
    for i, counts in enumerate(([1, 0, 0], [0, 2, 1])):
        body = export(histogram("lat", [1.0, 2.0], counts, 1.0, DELTA, NOW_NS - (2 - i) * 10**9))
        assert post(world, body).status_code == 200
    assert world.collector.values() == {
        key("lat_bucket", le="1.0", job="svc"): 1.0,
        key("lat_bucket", le="2.0", job="svc"): 3.0,
        key("lat_bucket", le="+Inf", job="svc"): 4.0,
        key("lat_sum", job="svc"): 2.0,
        key("lat_count", job="svc"): 4.0,
    }


def test_exponential_histograms_become_classic_buckets(world: World) -> None:
    p = m.ExponentialHistogramDataPoint(
        time_unix_nano=NOW_NS, scale=0, count=7, sum=9.0, zero_count=1,
        positive=m.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[2, 3]),
        negative=m.ExponentialHistogramDataPoint.Buckets(offset=1, bucket_counts=[1]),
    )  # fmt: skip
    eh = m.ExponentialHistogram(data_points=[p], aggregation_temporality=CUMULATIVE)
    assert post(world, export(m.Metric(name="size", exponential_histogram=eh))).status_code == 200
    # base 2: negative bucket 1 is [-4, -2), zero bucket, positive (1, 2] and (2, 4]
    assert world.collector.values() == {
        key("size_bucket", le="-2.0", job="svc"): 1.0,
        key("size_bucket", le="0.0", job="svc"): 2.0,
        key("size_bucket", le="2.0", job="svc"): 4.0,
        key("size_bucket", le="4.0", job="svc"): 7.0,
        key("size_bucket", le="+Inf", job="svc"): 7.0,
        key("size_sum", job="svc"): 9.0,
        key("size_count", job="svc"): 7.0,
    }


def test_exponential_histograms_are_downscaled_to_the_bucket_bound() -> None:
    w = World(options=OtlpOptions(scope_labels=False, target_info=False, max_exponential_buckets=2))
    p = m.ExponentialHistogramDataPoint(
        time_unix_nano=NOW_NS, scale=1, count=8,
        positive=m.ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[1] * 8),
    )  # fmt: skip
    eh = m.ExponentialHistogram(data_points=[p], aggregation_temporality=CUMULATIVE)
    assert post(w, export(m.Metric(name="x", exponential_histogram=eh))).status_code == 200
    les = sorted(
        float(k.split('le="')[1].split('"')[0])
        for k in w.collector.values()
        if "le=" in k and "+Inf" not in k
    )
    assert les == [
        0.0,
        4.0,
        16.0,
    ]  # 8 buckets at scale 1 -> 2 at scale -1 (base 4): (1, 4], (4, 16]
    assert w.collector.values()[key("x_bucket", le="+Inf", job="svc")] == 8.0
    w.close()


def test_summaries(world: World) -> None:
    p = m.SummaryDataPoint(
        time_unix_nano=NOW_NS, count=10, sum=4.5,
        quantile_values=[m.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.4)],
    )  # fmt: skip
    body = export(m.Metric(name="rt", unit="s", summary=m.Summary(data_points=[p])))
    assert post(world, body).status_code == 200
    assert world.collector.values() == {
        key("rt_seconds", quantile="0.5", job="svc"): 0.4,
        key("rt_seconds_sum", job="svc"): 4.5,
        key("rt_seconds_count", job="svc"): 10.0,
    }


def test_resource_attributes_job_instance_target_info_and_scope() -> None:
    w = World(options=OtlpOptions(promote=("deployment.environment",)))
    resource = {
        "service.name": "checkout",
        "service.namespace": "shop",
        "service.instance.id": "pod-1",
        "deployment.environment": "prod",
        "host.name": "h1",
    }
    body = export(
        gauge("g", 1, job="overridden", **{"http.route": "/x"}), resource=resource, scope="my.lib"
    )
    assert post(w, body).status_code == 200
    ident = {"job": "shop/checkout", "instance": "pod-1"}
    assert w.collector.values() == {
        key(
            "g", http_route="/x", deployment_environment="prod", otel_scope_name="my.lib", **ident
        ): 1.0,
        key("target_info", deployment_environment="prod", host_name="h1", **ident): 1.0,
    }
    w.close()


def test_names_and_labels_are_sanitised_and_clashes_joined(world: World) -> None:
    body = export(gauge("1st.metric-name", 1, **{"a.b": "x", "a-b": "y", "9z": "z", "_p": "q"}))
    assert post(world, body).status_code == 200
    assert world.collector.values() == {
        key("_1st_metric_name", a_b="y;x", key_9z="z", key_p="q", job="svc"): 1.0  # "a-b" < "a.b"
    }


def test_json_bodies_answer_in_json(world: World) -> None:
    req = ExportMetricsServiceRequest.FromString(export(gauge("g", 2)))
    text = json_format.MessageToJson(req)
    r = post(world, text.encode(), {"Content-Type": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {}
    assert world.collector.values() == {key("g", job="svc"): 2.0}


def test_gzip_bodies(world: World) -> None:
    r = post(world, gzip.compress(export(gauge("g", 3))), {**PB, "Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert world.collector.values() == {key("g", job="svc"): 3.0}


def test_gzip_bombs_are_413() -> None:
    from monitoring.ingest.receiving import RequestLimits

    w = World(limits=RequestLimits(max_decompressed_bytes=10_000))
    r = post(w, gzip.compress(b"\0" * 1_000_000), {**PB, "Content-Encoding": "gzip"})
    assert r.status_code == 413
    w.close()


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\xff\xff\xff", PB, 400),
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b'{"resourceMetrics": 5}', {"Content-Type": "application/json"}, 400),
        (b"x", {"Content-Type": "text/plain"}, 415),
        (b"x", {**PB, "Content-Encoding": "br"}, 415),
        (b"\x1f\x8b garbage", {**PB, "Content-Encoding": "gzip"}, 400),
    ],
)
def test_bad_bodies(world: World, body: bytes, headers: dict[str, str], status: int) -> None:
    r = post(world, body, headers)
    assert r.status_code == status, r.text
    if status == 400 and headers["Content-Type"] == PB["Content-Type"]:
        assert Status.FromString(r.content).code == 3
    assert world.collector.recorded == []
    assert world.metric("monitoring_receive_requests_total", receiver="otlp", code=str(status)) == 1


def test_refused_points_are_reported_in_partial_success(world: World) -> None:
    nan_gauge = gauge("g", float("nan"))
    old = gauge("old", 1, t_ns=10)
    unspecified = sum_("s", 1, True, m.AGGREGATION_TEMPORALITY_UNSPECIFIED)
    bad_hist = histogram("h", [1.0], [1, 2, 3], 1.0)  # 3 counts for 1 bound
    r = post(world, export(nan_gauge, old, unspecified, bad_hist, gauge("ok", 1)))
    assert r.status_code == 200
    ps = response(r).partial_success
    assert ps.rejected_data_points == 4 and ps.error_message.startswith("non-finite-value")
    assert world.collector.values() == {key("ok", job="svc"): 1.0}
    for reason in ("non-finite-value", "timestamp-too-old", "bad-temporality", "bad-histogram"):
        assert (
            world.metric("monitoring_receive_rejected_total", receiver="otlp", reason=reason) == 1
        )


def test_no_recorded_value_is_a_staleness_marker(world: World) -> None:
    """A flagged gauge or sum point is passed on as Prometheus's stale NaN (the spec's
    mapping; the pipeline carries it); a delta sum's total is not moved by it; a flagged
    histogram point is dropped (its bucket series are not known from it)."""
    flag = m.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
    g = gauge("g", 1)
    g.gauge.data_points[0].flags = flag
    d1 = sum_("d", 5, True, DELTA, start_ns=NOW_NS - 2_000_000_000, t_ns=NOW_NS - 1_000_000_000)
    d2 = sum_("d", 0, True, DELTA, start_ns=NOW_NS - 1_000_000_000, t_ns=NOW_NS)
    d2.sum.data_points[0].flags = flag
    h = histogram("h", [1.0], [1, 0], 0.5)
    h.histogram.data_points[0].flags = flag
    r = post(world, export(g, d1, d2, h))
    assert r.status_code == 200 and not response(r).HasField("partial_success")
    got = [(k, v) for k, _, _, v in world.collector.recorded]
    assert [k for k, v in got if is_stale(v)] == [key("g", job="svc"), key("d_total", job="svc")]
    assert [v for k, v in got if not is_stale(v)] == [5.0]
    assert world.metric("monitoring_receive_stale_markers_total", receiver="otlp") == 3
    d3 = sum_("d", 2, True, DELTA, start_ns=NOW_NS, t_ns=NOW_NS + 1_000_000)
    assert post(world, export(d3)).status_code == 200
    assert world.collector.recorded[-1][3] == 7.0  # the marker did not move the total


def test_delta_state_is_bounded() -> None:
    from monitoring.ingest.otlp_delta import DeltaState

    w = World(
        options=OtlpOptions(scope_labels=False, target_info=False), delta=DeltaState(max_series=2)
    )
    body = export(*(sum_(f"c{i}", 1, True, DELTA, NOW_NS - 10**9, NOW_NS) for i in range(3)))
    ps = response(post(w, body)).partial_success
    assert (ps.rejected_data_points, "delta-state-full" in ps.error_message) == (1, True)
    assert len(w.collector.recorded) == 2
    w.close()


def test_the_token_is_required_when_set() -> None:
    w = World(token="t0k")
    assert post(w, export(gauge("g", 1))).status_code == 401
    assert post(w, export(gauge("g", 1)), {**PB, "Authorization": "Bearer t0k"}).status_code == 200
    w.close()


def test_the_series_caches_are_bounded() -> None:
    from monitoring.ingest.receiving import RequestLimits

    w = World(
        options=OtlpOptions(scope_labels=False, target_info=False),
        limits=RequestLimits(),
        series_cache=50,
    )
    for i in range(20):  # 20 x 10 metrics, most without points, 10 series each request
        empty = [m.Metric(name=f"e{i}_{j}", gauge=m.Gauge()) for j in range(10)]
        body = export(*empty, *(gauge(f"g{j}", i, k=str(i)) for j in range(10)))
        assert post(w, body).status_code == 200
    otlp = w.receiver.otlp
    assert otlp._context_entries <= 50 and len(otlp._contexts) <= 50
    assert len(otlp._labels) <= 50
    assert len(w.collector.recorded) == 200
    w.close()
