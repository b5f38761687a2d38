"""Prometheus remote-write 1.0 receiver in-process: decoding, validation, kinds,
staleness, limits, backpressure and auth through the real ApiServer and Guard."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Iterator
from typing import Any

import cramjam
import pytest
from fixtures.receive import RW_HEADERS, World, key, snappy

from monitoring.ingest import remote_write
from monitoring.ingest.prompb import MetricMetadata, RequestV2, WriteRequest
from monitoring.ingest.receiving import RequestLimits
from monitoring.metrics.samples import is_stale

NOW = int(time.time() * 1000)
STALE = struct.unpack("<d", struct.pack("<Q", remote_write.STALE_NAN_BITS))[0]


def request(
    series: list[tuple[dict[str, str], list[tuple[float, int]]]],
    metadata: list[tuple[str, int]] = (),  # type: ignore[assignment]
) -> bytes:
    req = WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for n, v in sorted(labels.items()):
            ts.labels.add(name=n, value=v)
        for v, t in samples:
            ts.samples.add(value=v, timestamp=t)
    for family, mtype in metadata:
        req.metadata.add(metric_family_name=family, type=mtype)
    return snappy(req.SerializeToString())


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


def post(w: World, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return w.client.post("/api/v1/write", content=body, headers=headers or RW_HEADERS)


def test_samples_arrive_with_their_timestamps_and_labels(world: World) -> None:
    target = {"job": "node", "instance": "h:9100"}
    body = request(
        [
            ({"__name__": "node_load1", **target}, [(0.5, NOW - 2000), (0.75, NOW - 1000)]),
            ({"__name__": "up", **target}, [(1.0, NOW - 1000)]),
        ]
    )
    r = post(world, body)
    assert r.status_code == 204, r.text
    assert sorted((k, t, v) for k, _, t, v in world.collector.recorded) == [
        (key("node_load1", instance="h:9100", job="node"), NOW - 2000, 0.5),
        (key("node_load1", instance="h:9100", job="node"), NOW - 1000, 0.75),
        (key("up", instance="h:9100", job="node"), NOW - 1000, 1.0),
    ]
    assert world.metric("monitoring_receive_samples_total", receiver="remote_write") == 3
    assert (
        world.metric("monitoring_receive_requests_total", receiver="remote_write", code="204") == 1
    )


def test_kinds_from_metadata_else_from_name_conventions(world: World) -> None:
    t = NOW - 1000
    series = [
        ({"__name__": "http_requests_total"}, [(5.0, t)]),
        ({"__name__": "rpc_seconds_bucket", "le": "0.5"}, [(2.0, t)]),
        ({"__name__": "rpc_seconds_sum"}, [(1.5, t)]),
        ({"__name__": "rpc_seconds_count"}, [(3.0, t)]),
        ({"__name__": "lag", "quantile": "0.9"}, [(0.2, t)]),
        ({"__name__": "temperature"}, [(21.0, t)]),
        ({"__name__": "queue_total"}, [(7.0, t)]),
    ]
    assert post(world, request(series)).status_code == 204
    assert world.collector.kinds() == {
        "http_requests_total": "COUNTER",
        key("rpc_seconds_bucket", le="0.5"): "HISTOGRAM_BUCKET",
        "rpc_seconds_sum": "COUNTER",
        "rpc_seconds_count": "COUNTER",
        key("lag", quantile="0.9"): "SUMMARY",
        "temperature": "UNTYPED",
        "queue_total": "COUNTER",
    }
    # metadata comes in a request of its own (as Prometheus sends it) and holds after
    meta = request(
        [], [("temperature", MetricMetadata.GAUGE), ("queue_total", MetricMetadata.GAUGE)]
    )
    assert post(world, meta).status_code == 204
    world.collector.recorded.clear()
    assert post(world, request(series[-2:])).status_code == 204
    assert world.collector.kinds() == {"temperature": "GAUGE", "queue_total": "GAUGE"}


def test_stale_markers_are_passed_on_and_non_finite_values_refused(world: World) -> None:
    """Markers are samples of the pipeline (docs/ingest.md, Staleness): passed on with
    their bits, through the fast path (one sample per series) and the whole parse."""
    t = NOW - 1000
    body = request(
        [
            ({"__name__": "a"}, [(STALE, t)]),
            ({"__name__": "b"}, [(math.nan, t), (math.inf, t), (-math.inf, t), (1.0, t)]),
            ({"__name__": "c"}, [(1.0, t - 1), (STALE, t)]),
            ({"__name__": "old"}, [(STALE, 1000)]),  # before 2000: refused as any sample
        ]
    )
    assert post(world, body).status_code == 204
    values = world.collector.values()
    assert set(values) == {"a", "b", "c"} and values["b"] == 1.0
    assert is_stale(values["a"]) and is_stale(values["c"])
    assert world.metric("monitoring_receive_stale_markers_total", receiver="remote_write") == 2
    assert (
        world.metric(
            "monitoring_receive_rejected_total", receiver="remote_write", reason="timestamp-too-old"
        )
        == 1
    )
    assert (
        world.metric(
            "monitoring_receive_rejected_total", receiver="remote_write", reason="non-finite-value"
        )
        == 3
    )


def test_invalid_series_are_refused_and_the_rest_kept(world: World) -> None:
    t = NOW - 1000
    req = WriteRequest()
    for labels in (
        [("__name__", "ok"), ("a", "1"), ("b", "")],  # an empty value is no label
        [("__name__", "9bad")],
        [("a", "no name")],
        [("__name__", "dup"), ("a", "1"), ("a", "2")],
        [("__name__", "bad_label"), ("1x", "v")],
        [("__name__", "reserved"), ("__meta_x", "v")],
    ):
        ts = req.timeseries.add()
        for n, v in labels:
            ts.labels.add(name=n, value=v)
        ts.samples.add(value=1.0, timestamp=t)
    assert post(world, snappy(req.SerializeToString())).status_code == 204
    assert world.collector.values() == {key("ok", a="1"): 1.0}
    reasons = {
        r: world.metric("monitoring_receive_rejected_total", receiver="remote_write", reason=r)
        for r in ("bad-name", "duplicate-label", "bad-label-name")
    }
    assert reasons == {"bad-name": 2, "duplicate-label": 1, "bad-label-name": 2}


def test_timestamps_outside_the_contract_are_refused(world: World) -> None:
    now = int(time.time() * 1000)  # the receiver's clock, not the module's import
    body = request([({"__name__": "x"}, [(1.0, 5), (2.0, now + 2 * 3600_000), (3.0, now)])])
    assert post(world, body).status_code == 204
    assert world.collector.values() == {"x": 3.0}


def test_a_request_whose_every_sample_is_refused_is_a_400_with_the_reason(world: World) -> None:
    r = post(world, request([({"__name__": "bad-name"}, [(1.0, NOW)])]))
    assert r.status_code == 400
    assert "bad-name" in r.text


@pytest.mark.parametrize(
    ("headers", "status", "text"),
    [
        ({**RW_HEADERS, "Content-Encoding": "gzip"}, 415, "snappy"),
        ({k: v for k, v in RW_HEADERS.items() if k != "Content-Encoding"}, 415, "snappy"),
        ({k: v for k, v in RW_HEADERS.items() if not k.startswith("X-")}, 400, "Version"),
        (
            {**RW_HEADERS, "X-Prometheus-Remote-Write-Version": "2.0.0"},
            415,
            "'2.0.0' does not match",
        ),
        ({**RW_HEADERS, "Content-Type": "application/json"}, 415, "x-protobuf"),
        (
            {
                **RW_HEADERS,
                "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            },
            415,
            "does not match io.prometheus.write.v2.Request",  # 2.0 announced as 0.1.0
        ),
        (
            {**RW_HEADERS, "Content-Type": "application/x-protobuf;proto=other.Msg"},
            415,
            "other.Msg",
        ),
    ],
)
def test_headers_are_checked(world: World, headers: dict[str, str], status: int, text: str) -> None:
    r = post(world, request([({"__name__": "x"}, [(1.0, NOW)])]), headers)
    assert (r.status_code, text in r.text) == (status, True), r.text
    assert world.collector.recorded == []


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"", "empty"),
        (b"\xff\xff\xff\xff\xff\xff", "snappy"),
        (snappy(b"\x0a\xff\xff\xff\x0f garbage"), "protobuf"),
        (b"\x10\x00\x01\x02", "snappy"),  # declares 16 bytes, holds garbage
    ],
)
def test_garbage_is_a_400(world: World, body: bytes, text: str) -> None:
    r = post(world, body)
    assert r.status_code == 400 and text in r.text, r.text


def test_the_declared_length_is_checked_before_decompressing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World(limits=RequestLimits(max_decompressed_bytes=1000))
    calls: list[int] = []
    real = cramjam.snappy.decompress_raw
    monkeypatch.setattr(
        remote_write.cramjam.snappy, "decompress_raw", lambda d: calls.append(1) or real(d)
    )
    bomb = snappy(b"\0" * 100_000)  # 100 KB of zeros compress to ~5 KB
    r = post(w, bomb)
    assert r.status_code == 413 and "100000" in r.text
    assert calls == []
    w.close()


def test_bodies_over_the_guard_limit_are_413() -> None:
    w = World(max_body_bytes=2048)
    r = post(w, b"\x00" * 4096)
    assert r.status_code == 413
    w.close()


def test_series_and_sample_counts_are_bounded() -> None:
    w = World(limits=RequestLimits(max_series=2, max_samples=3))
    three = [({"__name__": f"s{i}"}, [(1.0, NOW)]) for i in range(3)]
    r = post(w, request(three))
    assert r.status_code == 400 and "3 series" in r.text
    many = [({"__name__": "s"}, [(float(i), NOW - i) for i in range(4)])]
    r = post(w, request(many))
    assert r.status_code == 400 and "3 samples" in r.text
    assert w.collector.recorded == []
    w.close()


def test_labels_per_series_are_bounded(world: World) -> None:
    labels = {"__name__": "wide", **{f"l{i}": "v" for i in range(40)}}
    r = post(world, request([(labels, [(1.0, NOW)]), ({"__name__": "ok"}, [(1.0, NOW)])]))
    assert r.status_code == 204
    assert world.collector.values() == {"ok": 1.0}
    assert (
        world.metric(
            "monitoring_receive_rejected_total", receiver="remote_write", reason="too-many-labels"
        )
        == 1
    )


def test_a_full_buffer_is_a_503_and_nothing_is_buffered(world: World) -> None:
    world.collector.occupied = world.collector.capacity - 1
    body = request([({"__name__": "x"}, [(1.0, NOW - 1), (2.0, NOW)])])
    r = post(world, body)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert world.collector.recorded == []
    world.collector.occupied = 0  # the broker caught up: the retry goes through whole
    assert post(world, body).status_code == 204
    assert sorted(v for _, _, _, v in world.collector.recorded) == [1.0, 2.0]


def test_the_token_is_required_when_set() -> None:
    w = World(token="s3cret")
    body = request([({"__name__": "x"}, [(1.0, NOW)])])
    assert post(w, body).status_code == 401
    assert post(w, body, {**RW_HEADERS, "Authorization": "Bearer wrong"}).status_code == 401
    assert post(w, body, {**RW_HEADERS, "Authorization": "Bearer s3cret"}).status_code == 204
    w.close()


def test_another_host_is_refused(world: World) -> None:
    r = post(world, b"", {**RW_HEADERS, "Host": "evil.example"})
    assert r.status_code == 421


def test_the_runtime_descriptors_write_prometheus_wire_bytes() -> None:
    """Field numbers and types as prompb's: bytes built by hand decode as expected."""
    label = b"\x0a\x08__name__\x12\x02up"  # Label{name=1, value=2}
    sample = b"\x09" + struct.pack("<d", 1.5) + b"\x10\xe8\x07"  # Sample{value=1, timestamp=2}
    series = b"\x0a" + bytes([len(label)]) + label + b"\x12" + bytes([len(sample)]) + sample
    meta = b"\x08\x02\x12\x02up\x22\x01h\x2a\x01s"  # type=GAUGE, family, help=4, unit=5
    raw = b"\x0a" + bytes([len(series)]) + series + b"\x1a" + bytes([len(meta)]) + meta
    req = WriteRequest.FromString(raw)
    ts = req.timeseries[0]
    assert (ts.labels[0].name, ts.labels[0].value) == ("__name__", "up")
    assert (ts.samples[0].value, ts.samples[0].timestamp) == (1.5, 1000)
    m = req.metadata[0]
    assert (m.type, m.metric_family_name, m.help, m.unit) == (MetricMetadata.GAUGE, "up", "h", "s")


def test_the_fast_path_agrees_with_a_full_parse(world: World) -> None:
    """Random requests (one or several samples per series, exemplars, stale markers,
    refused series, timestamps at the bounds) give what a full parse of each series does."""
    import random

    rng = random.Random(7)
    req = WriteRequest()
    expected = []
    now = int(time.time() * 1000)  # not NOW: the receiver's bound is an hour past its clock
    for i in range(400):
        ts = req.timeseries.add()
        name = rng.choice(["up", "node_cpu_seconds_total", "9bad", "x_bucket"])
        labels = {"__name__": name, "i": str(i % 37), "le": rng.choice(["", "1"])}
        for n, v in sorted(labels.items()):
            ts.labels.add(name=n, value=v)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            v = rng.choice([rng.random(), STALE, math.nan, 1e300, float(i)])
            t = rng.choice([now - rng.randrange(10**9), now + 7200_000, 1_000])
            ts.samples.add(value=v, timestamp=t)
            lab = {k: x for k, x in labels.items() if x and k != "__name__"}
            ok = name != "9bad" and (v == v or is_stale(v))
            if ok and 946_684_800_000 < t < now + 3600_000:  # markers are passed on too
                expected.append((key(name, **lab), t, "stale" if is_stale(v) else v))
        if rng.random() < 0.1:
            ts.exemplars.append(b"\x0a\x00")
    r = post(world, snappy(req.SerializeToString()))
    assert r.status_code == 204, r.text
    got = [(k, t, "stale" if is_stale(v) else v) for k, _, t, v in world.collector.recorded]
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    assert any(v == "stale" for _, _, v in got)
    rw = world.receiver.rw
    assert len(rw.by_labels) > 0  # the fast path was taken


V2_HEADERS = {
    **RW_HEADERS,
    "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    "X-Prometheus-Remote-Write-Version": "2.0.0",
}


def request_v2(series: list[tuple[dict[str, str], int, str, list[tuple[float, int]]]]) -> bytes:
    """A 2.0 request: (labels, metadata type, unit, samples) per series, strings interned."""
    req = RequestV2()
    symbols = {"": 0}

    def ref(text: str) -> int:
        if text not in symbols:
            symbols[text] = len(symbols)
        return symbols[text]

    for labels, mtype, unit, samples in series:
        ts = req.timeseries.add()
        for n, v in sorted(labels.items()):
            ts.labels_refs.extend([ref(n), ref(v)])
        ts.metadata.type = mtype
        ts.metadata.unit_ref = ref(unit)
        for v, t in samples:
            ts.samples.add(value=v, timestamp=t)
    req.symbols.extend(symbols)
    return snappy(req.SerializeToString())


def test_remote_write_2_0(world: World) -> None:
    t = NOW - 1000
    body = request_v2(
        [
            ({"__name__": "rpc_total", "job": "a"}, MetricMetadata.COUNTER, "", [(3.0, t)]),
            ({"__name__": "temp", "job": "a"}, MetricMetadata.GAUGE, "celsius", [(21.5, t)]),
            ({"__name__": "lat_bucket", "le": "1"}, MetricMetadata.HISTOGRAM, "s", [(4.0, t)]),
            ({"__name__": "lat_count"}, MetricMetadata.HISTOGRAM, "", [(4.0, t), (5.0, t + 1)]),
            ({"__name__": "plain"}, 0, "", [(1.0, t)]),
        ]
    )
    r = post(world, body, V2_HEADERS)
    assert r.status_code == 204, r.text
    assert r.headers["x-prometheus-remote-write-samples-written"] == "6"
    assert r.headers["x-prometheus-remote-write-histograms-written"] == "0"
    assert world.collector.kinds() == {
        key("rpc_total", job="a"): "COUNTER",
        key("temp", job="a"): "GAUGE",
        key("lat_bucket", le="1"): "HISTOGRAM_BUCKET",
        "lat_count": "COUNTER",
        "plain": "UNTYPED",
    }
    assert sorted(v for _, _, _, v in world.collector.recorded) == [1.0, 3.0, 4.0, 4.0, 5.0, 21.5]


def test_remote_write_2_0_partial_write_is_a_400_naming_what_was_written(world: World) -> None:
    t = NOW - 1000
    body = request_v2(
        [
            ({"__name__": "ok"}, MetricMetadata.GAUGE, "", [(1.0, t)]),
            ({"__name__": "bad name"}, MetricMetadata.GAUGE, "", [(2.0, t)]),
        ]
    )
    r = post(world, body, V2_HEADERS)
    assert r.status_code == 400 and "bad-name" in r.text
    assert r.headers["x-prometheus-remote-write-samples-written"] == "1"
    assert world.collector.values() == {"ok": 1.0}


def test_remote_write_2_0_refs_past_the_symbols_are_refused(world: World) -> None:
    req = RequestV2()
    req.symbols.extend(["", "__name__", "x"])
    ts = req.timeseries.add()
    ts.labels_refs.extend([1, 7])
    ts.samples.add(value=1.0, timestamp=NOW)
    r = post(world, snappy(req.SerializeToString()), V2_HEADERS)
    assert r.status_code == 400 and "bad-symbol-ref" in r.text
    assert r.headers["x-prometheus-remote-write-samples-written"] == "0"


def test_remote_write_2_0_backpressure(world: World) -> None:
    world.collector.occupied = world.collector.capacity
    body = request_v2([({"__name__": "x"}, MetricMetadata.GAUGE, "", [(1.0, NOW)])])
    r = post(world, body, V2_HEADERS)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.headers["x-prometheus-remote-write-samples-written"] == "0"


def test_the_series_caches_and_metadata_are_bounded() -> None:
    w = World(series_cache=50, max_families=5)
    for r in range(4):
        good = [({"__name__": f"s{r}_{i}"}, [(1.0, NOW)]) for i in range(50)]
        bad = [({"__name__": f"{r}bad{i}"}, [(1.0, NOW)]) for i in range(30)]
        meta = [(f"s{r}_{i}", MetricMetadata.GAUGE) for i in range(20)]
        assert post(w, request(good + bad, meta)).status_code == 204
    rw = w.receiver.rw
    assert len(rw.by_labels) <= 50 and len(rw.refused_labels) <= 50
    assert len(rw.series.entries) <= 50
    assert len(rw.families.types) <= 5
    assert len(w.collector.recorded) == 200
    w.close()
