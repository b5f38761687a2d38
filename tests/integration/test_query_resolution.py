"""``max_source_resolution`` (Thanos's query parameter) on the store's Prometheus API: a
range query may be answered from aggregate windows up to that long whatever its step,
says so in its warnings, stays close to the raw answer, and bad values are refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from monitoring.promql import Engine
from monitoring.query.source import Part, StoreSource

pytestmark = pytest.mark.no_broker

HOUR = 3_600_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, int, str]]:
    from prometheus_client import CollectorRegistry

    from monitoring.bench.query import build
    from monitoring.config import QueryLimits, Settings
    from monitoring.query import prometheus_api
    from monitoring.sinks.clickhouse.connection import connect
    from monitoring.sinks.clickhouse.migrations import migrate
    from monitoring.sinks.clickhouse.query_server import QueryServer

    path: Path = tmp_path_factory.mktemp("resolution")
    storage = Settings.load(None).storage.model_copy(update={"dsn": f"chdb://{path}/chdb"})
    client = connect(storage.dsn)
    migrate(client, storage)
    now_s = int(time.time()) // 60 * 60
    build(client, 130, 0.25, 15, now_s)
    qs = QueryServer(
        client, CollectorRegistry(), "127.0.0.1", 0, limits=QueryLimits(),
        protocols=[prometheus_api.routes],
    ).start()  # fmt: skip
    try:
        yield client, now_s * 1000, "http://{}:{}".format(*qs.address)
    finally:
        qs.stop()
        client.close()


def test_the_plan_reads_windows_up_to_the_resolution(store: tuple[Any, int, str]) -> None:
    client, now, _ = store
    ids = list(range(1, 11))
    lo = now - 6 * HOUR
    raw = StoreSource(client, None, step_ms=60_000, now_ms=now)
    assert raw.plan(ids, lo, now) == [Part(0, lo, now)]
    assert raw.warnings == []
    one_min = StoreSource(client, None, step_ms=60_000, now_ms=now, max_resolution_ms=60_000)
    assert one_min.plan(ids, lo, now) == [Part(60_000, lo, now)]
    assert "max_source_resolution 1m allows 1m windows" in one_min.warnings[0]
    # below the smallest window: raw samples still
    small = StoreSource(client, None, step_ms=60_000, now_ms=now, max_resolution_ms=5_000)
    assert small.plan(ids, lo, now) == [Part(0, lo, now)]
    # a 2 min step reads 10 s windows by the step's rule (as many points as raw at a
    # 15 s scrape); half the step allows the 1 min ones
    step = StoreSource(client, None, step_ms=120_000, now_ms=now)
    assert step.plan(ids, lo, now) == [Part(10_000, lo, now)]
    half = StoreSource(client, None, step_ms=120_000, now_ms=now, max_resolution_ms=60_000)
    assert half.plan(ids, lo, now) == [Part(60_000, lo, now)]
    # the step's own rule wins when it allows a larger window
    long = StoreSource(client, None, step_ms=600_000, now_ms=now, max_resolution_ms=10_000)
    assert long.plan(ids, lo, now) == [Part(60_000, lo, now)]


@pytest.mark.parametrize(
    "query", ["rate(bench_requests_total[8m])", "bench_gauge", "sum(bench_gauge)"]
)
def test_windows_answer_close_to_raw(store: tuple[Any, int, str], query: str) -> None:
    client, now, _ = store
    start, end, step = now - 5 * HOUR, now - 7_000, 120_000
    # step_ms 0 tells the source nothing of the step: raw samples
    raw = Engine().range(StoreSource(client, None, step_ms=0, now_ms=now), query, start, end, step)
    win = Engine().range(
        StoreSource(client, None, step_ms=step, now_ms=now, max_resolution_ms=60_000),
        query, start, end, step,
    )  # fmt: skip
    assert [s[0] for s in raw.series] == [s[0] for s in win.series]
    assert len(raw.series) > 0
    for (_, ta, va), (_, tb, vb) in zip(raw.series, win.series, strict=True):
        both = np.intersect1d(ta, tb)
        assert len(both) >= 0.95 * len(ta)
        a = va[np.isin(ta, both)]
        b = vb[np.isin(tb, both)]
        rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-9)
        assert float(np.median(rel)) < 0.05, (query, float(np.median(rel)))


def test_the_api_takes_the_parameter(store: tuple[Any, int, str]) -> None:
    _, now, url = store
    form = {
        "query": "rate(bench_requests_total[8m])",
        "start": str((now - 6 * HOUR) / 1000),
        "end": str(now / 1000),
        "step": "120",
    }
    with httpx.Client(base_url=url, timeout=60) as c:
        plain = c.post("/api/v1/query_range", data={**form, "step": "60"}).json()
        assert plain["status"] == "success" and not plain.get("warnings")
        res = c.post(
            "/api/v1/query_range", data={**form, "step": "60", "max_source_resolution": "1m"}
        ).json()
        assert res["status"] == "success"
        assert any("max_source_resolution" in w for w in res["warnings"])
        assert len(res["data"]["result"]) == len(plain["data"]["result"]) == 100
        raw = {**form, "step": "60", "max_source_resolution": "raw"}
        assert c.post("/api/v1/query_range", data=raw).json().get("warnings") is None
        for bad in ("-1m", "soon", "1e400"):
            r = c.post("/api/v1/query_range", data={**form, "max_source_resolution": bad})
            assert r.status_code == 400, bad
            assert r.json()["errorType"] == "bad_data"
            assert "max_source_resolution" in r.json()["error"]
