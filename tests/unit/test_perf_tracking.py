"""RED metrics middleware and callable tracking: a real Starlette app on a real uvicorn,
a real WSGI app under wsgiref, both driven with httpx; the SDK buffer's series must
match the requests made exactly (counts, status labels, bucket counts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from fixtures.perf import lab, offline_collector, serve_asgi, serve_wsgi, values
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from monitoring.perf.asgi import PerfMiddleware
from monitoring.perf.tracking import (
    CALL_CALLS,
    CALL_DURATION,
    CALL_ERRORS,
    HTTP_ACTIVE,
    HTTP_DURATION,
    HTTP_ERRORS,
    HTTP_REQUESTS,
    PROCESS_CPU,
    PROCESS_RSS,
    CallTracker,
    HttpMetrics,
)
from monitoring.perf.wsgi import WsgiPerfMiddleware
from monitoring.sdk.producer import MetricsCollector


@pytest.fixture
def mc() -> Iterator[MetricsCollector]:
    c = offline_collector()
    yield c
    c.close(timeout=0)


async def _item(request: Request) -> Response:
    return PlainTextResponse(f"item {request.path_params['id']}")


async def _create(_request: Request) -> Response:
    return PlainTextResponse("made", status_code=201)


async def _fail(_request: Request) -> Response:
    return PlainTextResponse("no", status_code=503)


async def _boom(_request: Request) -> Response:
    raise RuntimeError("boom")


async def _slow(_request: Request) -> Response:
    await asyncio.sleep(0.3)
    return PlainTextResponse("late")


async def _user(request: Request) -> Response:
    return PlainTextResponse(request.path_params["name"])


def _starlette(metrics: HttpMetrics) -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{id:int}", _item, methods=["GET"]),
            Route("/items", _create, methods=["POST"]),
            Route("/fail", _fail),
            Route("/boom", _boom),
            Route("/slow", _slow),
            Mount("/api", routes=[Route("/users/{name}", _user)]),
        ],
        middleware=[Middleware(PerfMiddleware, metrics=metrics)],
    )


# (method, path, route label, status) of every request the ASGI test makes
ASGI_REQUESTS = [
    *[("GET", f"/items/{i}", "/items/{id:int}", "200") for i in (1, 1, 1, 2, 3)],
    *[("POST", "/items", "/items", "201")] * 2,
    *[("GET", "/fail", "/fail", "503")] * 3,
    ("GET", "/boom", "/boom", "500"),
    ("GET", "/slow", "/slow", "200"),
    ("GET", "/slow", "/slow", "200"),
    ("GET", "/api/users/ann", "/api/users/{name}", "200"),
    ("GET", "/api/users/bob", "/api/users/{name}", "200"),
    *[("GET", f"/nope/{i}", "unmatched", "404") for i in range(4)],  # raw paths never labels
    ("DELETE", "/items/7", "/items/{id:int}", "405"),
    ("BREW", "/items/7", "/items/{id:int}", "405"),
]


def _expected(requests: list[tuple[str, str, str, str]]) -> dict[Any, float]:
    out: dict[Any, float] = {}
    for method, _path, route, status in requests:
        m = method if method != "BREW" else "_OTHER"
        key = lab(route=route, method=m, status=status, service="shop")
        out[key] = out.get(key, 0) + 1
    return out


def _check_red(mc: MetricsCollector, requests: list[tuple[str, str, str, str]]) -> None:
    expected = _expected(requests)
    assert values(mc, HTTP_REQUESTS) == expected
    assert values(mc, HTTP_DURATION + "_count") == expected
    errors = {k: v for k, v in expected.items() if dict(k)["status"] >= "500"}
    assert values(mc, HTTP_ERRORS) == errors
    buckets = values(mc, HTTP_DURATION + "_bucket")
    for key, n in expected.items():
        inf = buckets[tuple(sorted((*key, ("le", "+Inf"))))]
        assert inf == n
        per_le = sorted(
            (float(dict(k)["le"]), v)
            for k, v in buckets.items()
            if tuple(p for p in k if p[0] != "le") == key
        )
        assert len(per_le) == 15  # OpenTelemetry's 14 boundaries and +Inf
        assert [v for _, v in per_le] == sorted(v for _, v in per_le)  # cumulative
    assert all(v == 0 for v in values(mc, HTTP_ACTIVE).values())
    sums = values(mc, HTTP_DURATION + "_sum")
    assert set(sums) == set(expected) and all(v > 0 for v in sums.values())


def test_asgi_middleware_records_every_request_of_a_real_starlette_app(
    mc: MetricsCollector,
) -> None:
    metrics = HttpMetrics(mc, {"service": "shop"})
    with serve_asgi(_starlette(metrics)) as url, httpx.Client(base_url=url) as http:
        for method, path, _route, status in ASGI_REQUESTS:
            # uvicorn closes a connection whose application raised: a fresh one each time
            r = http.request(method, path, headers={"Connection": "close"})
            assert r.status_code == int(status), (method, path)
    _check_red(mc, ASGI_REQUESTS)
    slow = values(mc, HTTP_DURATION + "_bucket")
    base = lab(route="/slow", method="GET", status="200", service="shop")
    le = {dict(k)["le"]: v for k, v in slow.items() if tuple(p for p in k if p[0] != "le") == base}
    assert le["0.25"] == 0 and le["+Inf"] == 2  # both slept 0.3 s: no bucket below it
    # process series exist with the service's labels and plausible values
    cpu = values(mc, PROCESS_CPU)
    rss = values(mc, PROCESS_RSS)
    assert list(cpu) == [lab(service="shop")] and next(iter(cpu.values())) > 0
    assert next(iter(rss.values())) > 10_000_000


def test_every_series_carries_the_instance_label(mc: MetricsCollector) -> None:
    metrics = HttpMetrics(mc, {"service": "shop"}, instance="web-1:42", process=False)
    metrics.finished("/x", metrics.started("GET"), 200, 0.01, False)
    names = {s.name: s.labels for s, _ in mc.snapshot()}
    assert names[HTTP_REQUESTS] == {
        "service": "shop", "instance": "web-1:42", "route": "/x", "method": "GET",
        "status": "200",
    }  # fmt: skip
    assert PROCESS_CPU not in names


def test_route_cardinality_is_bounded(mc: MetricsCollector) -> None:
    metrics = HttpMetrics(mc, max_routes=3, process=False)
    for i in range(10):
        metrics.finished(f"/r{i}", metrics.started("get"), 200, 0.001, False)
    routes = {dict(k)["route"]: v for k, v in values(mc, HTTP_REQUESTS).items()}
    assert routes == {"/r0": 1, "/r1": 1, "/r2": 1, "overflow": 7}
    assert metrics.routes.overflowed == 7


def test_asgi_templates_for_a_plain_asgi_app(mc: MetricsCollector) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    metrics = HttpMetrics(mc, {"service": "shop"}, process=False)
    wrapped = PerfMiddleware(app, metrics, templates=["/orders/{oid}", "/"])
    with serve_asgi(wrapped) as url, httpx.Client(base_url=url) as http:
        for path in ("/orders/1", "/orders/2", "/", "/x/y"):
            assert http.get(path).status_code == 204
    assert values(mc, HTTP_REQUESTS) == {
        lab(route="/orders/{oid}", method="GET", status="204", service="shop"): 2,
        lab(route="/", method="GET", status="204", service="shop"): 1,
        lab(route="unmatched", method="GET", status="204", service="shop"): 1,
    }


# ------------------------------------------------------------------------------ WSGI


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path.startswith("/items/"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"item ", path.encode()]
    if path == "/upload" and environ["REQUEST_METHOD"] == "POST":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"].read(n)
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/stream":

        def gen() -> Iterator[bytes]:
            for _ in range(3):
                time.sleep(0.1)
                yield b"x"

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"none"]


WSGI_REQUESTS = [
    *[("GET", f"/items/{i}", "/items/{id:int}", "200") for i in range(6)],
    *[("POST", "/upload", "/upload", "202")] * 3,
    *[("GET", "/boom", "/boom", "500")] * 2,
    ("GET", "/stream", "/stream", "200"),
    *[("GET", f"/x{i}", "unmatched", "404") for i in range(3)],
]


def test_wsgi_middleware_records_every_request_under_wsgiref(mc: MetricsCollector) -> None:
    metrics = HttpMetrics(mc, {"service": "shop"})
    app = WsgiPerfMiddleware(
        _wsgi_app, metrics, templates=["/items/{id:int}", "/upload", "/boom", "/stream"]
    )
    with serve_wsgi(app) as url, httpx.Client(base_url=url) as http:
        for method, path, _route, status in WSGI_REQUESTS:
            r = http.request(method, path, content=b"z" * 100 if method == "POST" else None)
            assert r.status_code == int(status), (method, path)
    # wsgiref closes the body after the response is written; the last request's
    # close may trail the client's read by a moment: wait for its count
    deadline = time.monotonic() + 5
    while sum(values(mc, HTTP_REQUESTS).values()) < len(WSGI_REQUESTS):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _check_red(mc, WSGI_REQUESTS)
    # the streamed body is timed to its end: three 0.1 s chunks
    buckets = values(mc, HTTP_DURATION + "_bucket")
    base = lab(route="/stream", method="GET", status="200", service="shop")
    le = {
        dict(k)["le"]: v for k, v in buckets.items() if tuple(p for p in k if p[0] != "le") == base
    }
    assert le["0.25"] == 0 and le["+Inf"] == 1


# --------------------------------------------------------------------------- callables


def test_callable_tracking_decorator_context_manager_and_async(mc: MetricsCollector) -> None:
    tracker = CallTracker(mc, {"service": "scorer", "model": "fraud", "version": "v3"})

    @tracker.track
    def predict(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * 2

    @tracker.track("load")
    async def load(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise KeyError("gone")
        return "ok"

    assert [predict(i) for i in range(4)] == [0, 2, 4, 6]
    for _ in range(2):
        with pytest.raises(ValueError):
            predict(-1)
    assert asyncio.run(load(False)) == "ok"
    with pytest.raises(KeyError):
        asyncio.run(load(True))
    for _ in range(3):
        with tracker.track("join"):
            pass
    with pytest.raises(ZeroDivisionError), tracker.track("join"):
        _ = 1 / 0
    const = {"service": "scorer", "model": "fraud", "version": "v3"}
    qual = predict.__qualname__
    assert values(mc, CALL_CALLS) == {
        lab(**const, function=qual, status="ok"): 4,
        lab(**const, function=qual, status="error"): 2,
        lab(**const, function="load", status="ok"): 1,
        lab(**const, function="load", status="error"): 1,
        lab(**const, function="join", status="ok"): 3,
        lab(**const, function="join", status="error"): 1,
    }
    assert values(mc, CALL_ERRORS) == {
        lab(**const, function=qual, error="ValueError"): 2,
        lab(**const, function="load", error="KeyError"): 1,
        lab(**const, function="join", error="ZeroDivisionError"): 1,
    }
    assert values(mc, CALL_DURATION + "_count") == values(mc, CALL_CALLS)


def test_two_services_on_one_collector_keep_their_own_series(mc: MetricsCollector) -> None:
    a = HttpMetrics(mc, {"service": "a"}, process=False)
    b = HttpMetrics(mc, {"service": "b"}, process=False)
    for _ in range(3):
        a.finished("/x", a.started("GET"), 200, 0.01, False)
    b.finished("/x", b.started("GET"), 500, 0.01, False)
    assert values(mc, HTTP_REQUESTS) == {
        lab(service="a", route="/x", method="GET", status="200"): 3,
        lab(service="b", route="/x", method="GET", status="500"): 1,
    }
    assert values(mc, HTTP_ERRORS) == {lab(service="b", route="/x", method="GET", status="500"): 1}


def test_long_route_values_are_cut_and_metric_failures_never_break_a_request(
    mc: MetricsCollector,
) -> None:
    metrics = HttpMetrics(mc, {"service": "shop"}, process=False)
    long_route = "/" + "x" * 5000
    metrics.finished(long_route, metrics.started("GET"), 200, 0.01, False)
    (key,) = values(mc, HTTP_REQUESTS)
    assert dict(key)["route"] == long_route[:256]

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("metrics down")

    metrics.duration.labels = broken  # type: ignore[method-assign]
    with serve_asgi(_starlette(metrics)) as url, httpx.Client(base_url=url) as http:
        assert http.get("/items/1").status_code == 200
        assert http.get("/items/2").status_code == 200
    assert metrics.failures == 2

    tracker = CallTracker(mc, process=False)
    tracker.duration.labels = broken  # type: ignore[method-assign]

    @tracker.track
    def f() -> int:
        return 7

    assert f() == 7 and tracker.failures == 2  # at the start and at the end


def test_process_series_shared_by_a_middleware_and_a_tracker_count_cpu_once(
    mc: MetricsCollector,
) -> None:
    import psutil

    proc = psutil.Process()
    HttpMetrics(mc, {"service": "shop"})
    tracker = CallTracker(mc, {"service": "shop"})
    tracker.process.update()  # type: ignore[union-attr]
    t = proc.cpu_times()
    (cpu,) = values(mc, PROCESS_CPU).values()
    assert 0 < cpu <= t.user + t.system  # psutil's total, not twice it
