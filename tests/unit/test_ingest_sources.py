"""Sources of ``MetricsCollector.collect(sources=...)``: what each kind of source reads,
a failing source counted while the others are read, the bound per read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from monitoring.api.server import ApiServer
from monitoring.config import Settings
from monitoring.ingest import sources as src_mod
from monitoring.ingest.outlet import Outlet, Point
from monitoring.ingest.sources import (
    CallableSource,
    ScrapeSource,
    SourceSet,
    SystemSource,
    as_source,
    source_errors,
)


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, float, dict[str, str], int | None, str]] = []

    def record(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
        kind: str = "GAUGE",
        unit: str = "",
    ) -> bool:
        self.got.append((name, value, dict(labels or {}), timestamp_ms, kind))
        return True


def test_callable_shapes() -> None:
    assert CallableSource(lambda: {"queue_depth": 3}).read() == [
        Point("queue_depth", {}, "GAUGE", 3.0)
    ]
    got = CallableSource(
        lambda: [
            ("a", 1),
            ("b", 2, {"x": "y"}),
            ("c_total", 3, None, "COUNTER"),
            Point("d", {}, "GAUGE", 4.0),
        ]
    ).read()
    assert [(p.name, p.labels, p.kind, p.value) for p in got] == [
        ("a", {}, "GAUGE", 1.0),
        ("b", {"x": "y"}, "GAUGE", 2.0),
        ("c_total", {}, "COUNTER", 3.0),
        ("d", {}, "GAUGE", 4.0),
    ]
    with pytest.raises(TypeError, match="not a point"):
        CallableSource(lambda: [object()]).read()
    with pytest.raises(TypeError, match="not a mapping or list"):
        CallableSource(lambda: 3).read()


def test_as_source_kinds_and_refusals() -> None:
    settings = Settings.load(None)
    assert isinstance(as_source("http://127.0.0.1:9100/metrics", settings), ScrapeSource)
    assert isinstance(as_source(lambda: {}, settings), CallableSource)
    system = as_source("system", settings)
    assert isinstance(system, SystemSource)
    try:
        points = system.read()
        assert {p.labels["job"] for p in points} == {"node"}
        assert any(p.name == "node_memory_MemTotal_bytes" for p in points)
    finally:
        system.close()
    with pytest.raises(ValueError, match="unknown source"):
        as_source("disk", settings)
    with pytest.raises(TypeError, match="not a source"):
        as_source(3, settings)
    with pytest.raises(ValueError, match="not an http"):
        ScrapeSource("ftp://x/metrics")


def test_scrape_source_reads_a_real_metrics_page() -> None:
    own = CollectorRegistry()
    Counter("served", "Requests.", ["route"], registry=own).labels("/x").inc(2)
    api = ApiServer(own, "127.0.0.1", 0).start()
    host, port = api.address
    try:
        s = ScrapeSource(f"http://{host}:{port}/metrics", job="self")
        try:
            points = {p.name: p for p in s.read()}
        finally:
            s.close()
        down = ScrapeSource(f"http://{host}:{port}/nothing-here", job="self")
        try:
            down_points = {p.name: p for p in down.read()}
        finally:
            down.close()
    finally:
        api.stop()
    served = points["served_total"]
    assert served.value == 2.0 and served.kind == "COUNTER"
    assert served.labels == {"route": "/x", "job": "self", "instance": f"{host}:{port}"}
    assert points["up"].value == 1.0 and points["scrape_samples_scraped"].value >= 1
    assert down_points["up"].value == 0.0 and "served_total" not in down_points


def test_a_failing_source_is_counted_and_the_others_read(monkeypatch: Any) -> None:
    registry = CollectorRegistry()
    rec = Recorder()
    outlet = Outlet(rec, registry, "sources")

    def broken() -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(src_mod, "MAX_POINTS", 3)
    srcs = SourceSet(
        [broken, lambda: {"a": 1.0}, lambda: [(f"m{i}", i) for i in range(5)]],
        outlet,
        source_errors(registry),
        Settings.load(None),
    )
    assert srcs.collect(1_700_000_000_000) == 4
    assert [g[0] for g in rec.got] == ["a", "m0", "m1", "m2"]
    assert {g[3] for g in rec.got} == {1_700_000_000_000}
    assert (
        registry.get_sample_value("monitoring_ingest_source_errors_total", {"source": "broken"})
        == 1
    )
    assert (
        registry.get_sample_value(
            "monitoring_ingest_samples_total", {"source": "sources", "outcome": "unsent"}
        )
        == 2
    )


def test_scrape_source_inflates_within_its_limit() -> None:
    import gzip
    import tracemalloc

    import httpx

    bomb = gzip.compress(b"# " + b"x" * (64 << 20) + b"\n", 9)
    small = gzip.compress(b"fine 1\n")

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "gzip"
        body = bomb if request.url.path == "/bomb" else small
        return httpx.Response(
            200, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(body)
        )

    transport = httpx.MockTransport(handler)
    ok = ScrapeSource("http://t:1/metrics", max_body_bytes=1 << 20, transport=transport)
    bad = ScrapeSource("http://t:1/bomb", max_body_bytes=1 << 20, transport=transport)
    tracemalloc.start()
    try:
        bombed = {p.name: p for p in bad.read()}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        bad.close()
    assert bombed["up"].value == 0.0 and peak < 16 << 20
    try:
        assert {p.name: p.value for p in ok.read()}["fine"] == 1.0
    finally:
        ok.close()


def test_points_outside_the_contract_times_are_counted_not_sent() -> None:
    registry = CollectorRegistry()
    rec = Recorder()
    outlet = Outlet(rec, registry, "sources")
    now = 1_800_000_000_000
    srcs = SourceSet(
        [
            lambda: [
                Point("old", {}, "GAUGE", 1.0, 1000),
                Point("ahead", {}, "GAUGE", 1.0, now + 86_400_000),
                Point("fine", {}, "GAUGE", 1.0, now - 1000),
            ]
        ],
        outlet,
        source_errors(registry),
        Settings.load(None),
    )
    assert srcs.collect(now) == 1 and [g[0] for g in rec.got] == ["fine"]
    assert (
        registry.get_sample_value(
            "monitoring_ingest_samples_total", {"source": "sources", "outcome": "invalid"}
        )
        == 2
    )
