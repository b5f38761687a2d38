"""From the middleware to a verdict: a Starlette app with the RED middleware on a real
uvicorn sends its series through the real broker, the store writes them to chDB, and
`analyze_service` reads them back through the store's query protocols and finds the
slowdown that was injected (and nothing else)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fixtures.perf import serve_asgi
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from monitoring.config import Settings
from monitoring.perf import store_io
from monitoring.perf.asgi import PerfMiddleware
from monitoring.perf.tracking import HttpMetrics
from monitoring.query.client import local_store
from monitoring.sdk.producer import MetricsCollector
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer

pytestmark = pytest.mark.integration
STEP_MS = 15_000
BASELINE_STEPS = 120  # 30 min
CURRENT_STEPS = 40  # 10 min
PER_STEP = 3


def test_an_injected_slowdown_travels_from_the_middleware_to_the_verdict(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    base = settings_factory()
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'chdb'}"})
    settings = base.model_copy(update={"storage": storage})
    delay = {"s": 0.001}

    async def work(_request: Request) -> Response:
        await asyncio.sleep(delay["s"])
        return PlainTextResponse("ok")

    mc = MetricsCollector(settings, source="perf-pipeline")
    metrics = HttpMetrics(mc, {"service": "shop"}, instance="it:1", process=False)
    app = Starlette(
        routes=[Route("/work/{n:int}", work)],
        middleware=[Middleware(PerfMiddleware, metrics=metrics)],
    )
    end_ms = (int(time.time() * 1000) // 60_000 - 1) * 60_000
    start_ms = end_ms - (BASELINE_STEPS + CURRENT_STEPS) * STEP_MS
    sent = 0
    with serve_asgi(app) as url, httpx.Client(base_url=url) as http:
        # the app's time is simulated: each step's requests, then a collection stamped
        # with the step's time (what mc.start() does every interval)
        for k in range(1, BASELINE_STEPS + CURRENT_STEPS + 1):
            delay["s"] = 0.001 if k <= BASELINE_STEPS else 0.03
            for i in range(PER_STEP):
                assert http.get(f"/work/{i}").status_code == 200
            sent += mc.collect(timestamp_ms=start_ms + k * STEP_MS)
    assert mc.close() == 0

    client = connect(settings.storage.dsn)
    try:
        migrate(client, settings.storage)
        store = Store(settings, Writer(client, StoreMetrics(CollectorRegistry())),
                      group_id=f"perf-{uuid.uuid4().hex[:8]}")  # fmt: skip
        stop = threading.Event()
        thread = threading.Thread(target=store.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 90
        try:
            while int(client.query("SELECT count() FROM samples").result_rows[0][0]) < sent:
                assert time.monotonic() < deadline, "the store did not write every sample"
                time.sleep(0.2)
        finally:
            stop.set()
            thread.join(60)
        with local_store(settings) as sc:
            total = sc.query('sum(http_server_requests_total{service="shop"})', end_ms / 1000)
            assert float(total[0].values[0]) == (BASELINE_STEPS + CURRENT_STEPS) * PER_STEP
            a = store_io.analyze_service(
                sc, "shop", since_s=CURRENT_STEPS * STEP_MS / 1000,
                baseline_s=BASELINE_STEPS * STEP_MS / 1000, window_s=60, until_s=end_ms / 1000,
            )  # fmt: skip
    finally:
        client.close()
    # 1 ms -> 30 ms: the mean and the median moved from the 5 ms bucket to the 50 ms one
    assert "mean_latency_s" in a.regressions and "p50_latency_s" in a.regressions
    assert "throughput_rps" not in a.regressions and "error_ratio" not in a.regressions
    mean = a.comparisons["mean_latency_s"]
    assert mean.median_current >= 0.03 > 0.01 > mean.median_baseline
    assert mean.n_current == 10 and mean.n_baseline == 30
    assert a.current.errors == 0
