"""Performance tracking and benchmarking end to end on the real broker: a Starlette app
with the RED middleware on a real uvicorn, driven by the open-loop benchmark; both
collectors' series on the samples topic say exactly what was sent."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError
from fixtures.perf import serve_asgi
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from monitoring.config import Settings
from monitoring.metrics.samples import samples_from_record
from monitoring.perf.asgi import PerfMiddleware
from monitoring.perf.benchmarking import BenchRecorder, http_target, run_bench
from monitoring.perf.tracking import HttpMetrics
from monitoring.sdk.producer import MetricsCollector
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.integration


def latest(settings: Settings, want: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """The newest value of every series on the samples topic, read until ``want`` holds."""
    codec = AvroCodec.from_directory()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([f"{settings.kafka.topic_prefix}metrics.samples"])
    last: dict[str, tuple[int, float]] = {}
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                d = codec.decode(msg.value() or b"")
                for s in samples_from_record(d.name, d.record, time.time_ns() // 10**6).samples:
                    if s.series not in last or last[s.series][0] <= s.timestamp_ms:
                        last[s.series] = (s.timestamp_ms, s.value)
            elif msg is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF
            values = {k: v for k, (_, v) in last.items()}
            if msg is None and want(values):
                return values
    finally:
        consumer.close()
    raise AssertionError(f"the samples topic never showed the expected values: {last}")


async def _work(request: Request) -> Response:
    n = int(request.path_params["n"])
    await asyncio.sleep(0.005)
    return PlainTextResponse("x", status_code=500 if n % 5 == 0 else 200)


def test_middleware_and_benchmark_series_reach_the_samples_topic(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    server_mc = MetricsCollector(settings, source="perf-app")
    bench_mc = MetricsCollector(settings, source="perf-bench")
    metrics = HttpMetrics(server_mc, {"service": "shop"}, instance="it:1")
    app = Starlette(
        routes=[Route("/work/{n:int}", _work)],
        middleware=[Middleware(PerfMiddleware, metrics=metrics)],
    )
    calls = iter(range(10_000))

    with serve_asgi(app) as url:
        # the benchmark's target: /work/0, /work/1, ... (every fifth answers 500)
        import httpx

        from monitoring.perf.benchmarking import function_target

        async def hit() -> None:
            async with httpx.AsyncClient() as http:
                r = await http.get(f"{url}/work/{next(calls)}")
                if r.status_code >= 400:
                    raise RuntimeError(r.status_code)

        run = asyncio.run(
            run_bench(
                function_target(hit, "shop-work"), 50, 1.0, concurrency=8,
                recorder=BenchRecorder(bench_mc, "it-run", "shop-work"), run_id="it-run",
            )
        )  # fmt: skip
        plain = asyncio.run(
            run_bench(http_target(url + "/work/1"), 20, 1.0, concurrency=4,
                      recorder=BenchRecorder(bench_mc, "it-plain", "work-1"))
        )  # fmt: skip
    assert server_mc.close() == 0 and bench_mc.close() == 0
    assert run.summary.completed == 50 and run.summary.errors == 10
    assert plain.summary.completed == 20 and plain.summary.errors == 0

    base = 'instance="it:1",method="GET",route="/work/{n:int}",service="shop"'
    ok = f'http_server_requests_total{{{base},status="200"}}'
    bad = f'http_server_requests_total{{{base},status="500"}}'
    run_c = 'perf_bench_latency_seconds_count{run_id="it-run",target="shop-work"}'
    values = latest(settings, lambda v: v.get(ok) == 60 and run_c in v)
    assert values[ok] == 40 + 20 and values[bad] == 10
    assert values[f'http_server_errors_total{{{base},status="500"}}'] == 10
    assert values[f'http_server_request_duration_seconds_count{{{base},status="200"}}'] == 60
    assert values[run_c] == 50
    assert values['perf_bench_errors_total{run_id="it-run",target="shop-work"}'] == 10
    assert (
        values[
            'perf_bench_requests_total{outcome="RuntimeError",run_id="it-run",target="shop-work"}'
        ]
        == 10
    )
    assert values['perf_bench_latency_seconds_count{run_id="it-plain",target="work-1"}'] == 20
    assert values['perf_bench_target_rate{run_id="it-plain",target="work-1"}'] == 20
