"""Open-loop benchmark: the schedule, and runs against a real uvicorn app with a known
injected delay and against Python callables. Shape only, never timing: every scheduled
request is made, errors are counted, latency from the intended start >= service time."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fixtures.perf import lab, offline_collector, serve_asgi, values
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from monitoring.perf.arrivals import quantiles, schedule
from monitoring.perf.benchmarking import (
    BENCH_ERRORS,
    BENCH_LATENCY,
    BENCH_QUANTILE,
    BENCH_REQUESTS,
    BENCH_SERVICE,
    BENCH_TARGET_RATE,
    BadTarget,
    BenchRecorder,
    callable_target,
    function_target,
    http_target,
    resolve_target,
    run_bench,
)
from monitoring.sdk.producer import MetricsCollector

DELAY_S = 0.02


@pytest.fixture
def mc() -> Iterator[MetricsCollector]:
    c = offline_collector()
    yield c
    c.close(timeout=0)


async def _work(_request: Request) -> Response:
    await asyncio.sleep(DELAY_S)
    return PlainTextResponse("done")


async def _err(_request: Request) -> Response:
    return PlainTextResponse("broken", status_code=500)


async def _echo(request: Request) -> Response:
    body = await request.body()
    ok = request.headers.get("x-token") == "t0k" and body == b'{"x": 1}'
    return PlainTextResponse("ok" if ok else "refused", status_code=200 if ok else 403)


APP = Starlette(
    routes=[Route("/work", _work), Route("/err", _err), Route("/echo", _echo, methods=["POST"])]
)


# ---------------------------------------------------------------------------- schedule


def test_constant_schedule_is_rate_times_duration_evenly_spaced() -> None:
    for rate, dur in ((100, 1.0), (33.3, 3.0), (1000, 0.5), (7, 10)):
        s = schedule(rate, dur)
        assert len(s) == int(rate * dur + 1e-9)
        assert np.allclose(np.diff(s), 1 / rate)
        assert s[0] == 0 and s[-1] < dur


def test_poisson_schedule_is_seeded_exponential_gaps() -> None:
    s = schedule(200, 50, "poisson", seed=7)
    assert np.array_equal(s, schedule(200, 50, "poisson", seed=7))
    assert not np.array_equal(s, schedule(200, 50, "poisson", seed=8))
    assert s[0] == 0 and s[-1] < 50 and np.all(np.diff(s) > 0)
    assert abs(len(s) - 10_000) < 5 * 100  # Poisson(10,000): sd 100
    gaps = np.diff(s)
    assert abs(gaps.mean() - 1 / 200) < 5 * (1 / 200) / 100  # mean of 10k exponentials
    assert abs(np.std(gaps) / gaps.mean() - 1) < 0.05  # an exponential's CV is 1


@pytest.mark.parametrize(
    ("rate", "dur", "arrivals", "message"),
    [
        (0, 1, "constant", "rate"),
        (float("nan"), 1, "constant", "rate"),
        (10, -1, "constant", "duration"),
        (1e6, 100, "constant", "at most"),
        (10, 1, "bursty", "arrivals"),
    ],
)
def test_schedule_rejects_bad_input(rate: float, dur: float, arrivals: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule(rate, dur, arrivals)  # type: ignore[arg-type]


def test_quantiles_are_hdrhistograms_definition() -> None:
    rng = np.random.default_rng(3)
    v = rng.lognormal(0, 1, 10_001)
    got = quantiles(v)
    for q, x in got.items():
        # the smallest value with at least q of all values at or below it
        assert (v <= x).mean() >= q
        assert (v < x).mean() < q
    assert all(np.isnan(x) for x in quantiles(np.array([np.nan])).values())


def test_targets_are_validated() -> None:
    for bad in ("ftp://x/y", "http://", "file:///etc/passwd"):
        with pytest.raises(BadTarget, match="http"):
            resolve_target(bad)
    with pytest.raises(BadTarget, match="module:name"):
        resolve_target("os.path")
    with pytest.raises(BadTarget, match="cannot import"):
        resolve_target("no_such_module_xyz:f")
    with pytest.raises(BadTarget, match="not callable"):
        resolve_target("math:pi")
    assert callable_target("math:factorial").label == "math:factorial"
    assert http_target("http://u:p@127.0.0.1:1/x?token=1").label == "http://127.0.0.1:1/x"


# ------------------------------------------------------------------------------- runs


def _check_shape(run_latency: np.ndarray, run_service: np.ndarray) -> None:
    assert np.all(np.isfinite(run_latency)) and np.all(np.isfinite(run_service))
    assert np.all(run_latency >= run_service)  # the intended start is never after the send


def test_http_run_against_uvicorn_with_an_injected_delay(mc: MetricsCollector) -> None:
    rec = BenchRecorder(mc, "run-a", "work")
    with serve_asgi(APP) as url:
        run = asyncio.run(
            run_bench(http_target(url + "/work"), 50, 1.0, concurrency=8, recorder=rec)
        )
    s = run.summary
    assert s.scheduled == len(schedule(50, 1.0)) == 50
    assert s.completed == 50 and s.errors == 0 and s.unfinished == 0
    assert s.outcomes == {"200": 50}
    _check_shape(run.latency_s, run.service_s)
    assert np.all(run.service_s >= DELAY_S)  # the server slept before answering
    assert s.latency[0.5] <= s.latency[0.9] <= s.latency[0.99] <= s.latency[0.999]
    assert s.latency[0.5] >= DELAY_S
    # the series: one label set per run, bucket counts as the requests' latencies say
    const = {"run_id": "run-a", "target": "work"}
    assert values(mc, BENCH_LATENCY + "_count") == {lab(**const): 50}
    assert values(mc, BENCH_SERVICE + "_count") == {lab(**const): 50}
    buckets = values(mc, BENCH_LATENCY + "_bucket")
    for le in ("0.001", "0.01", "0.025", "0.05", "0.1", "1.0", "+Inf"):
        bound = float(le)
        assert buckets[lab(**const, le=le)] == int((run.latency_s <= bound).sum()), le
    assert buckets[lab(**const, le="0.01")] == 0  # nothing faster than the delay
    assert values(mc, BENCH_REQUESTS) == {lab(**const, outcome="200"): 50}
    assert values(mc, BENCH_ERRORS) == {lab(**const): 0}
    assert values(mc, BENCH_TARGET_RATE) == {lab(**const): 50}
    q = values(mc, BENCH_QUANTILE)
    assert q[lab(**const, quantile="0.99")] == s.latency[0.99]


def test_http_errors_are_counted(mc: MetricsCollector) -> None:
    rec = BenchRecorder(mc, "run-e", "err")
    with serve_asgi(APP) as url:
        run = asyncio.run(
            run_bench(http_target(url + "/err"), 40, 0.5, arrivals="poisson", seed=1, recorder=rec)
        )
    n = len(schedule(40, 0.5, "poisson", seed=1))
    assert run.summary.scheduled == n and run.summary.errors == n
    assert run.summary.outcomes == {"500": n}
    assert values(mc, BENCH_ERRORS) == {lab(run_id="run-e", target="err"): n}


def test_unreachable_url_counts_connection_errors() -> None:
    run = asyncio.run(run_bench(http_target("http://127.0.0.1:1/"), 20, 0.5))
    assert run.summary.errors == 10 and run.summary.completed == 10
    assert set(run.summary.outcomes) == {"ConnectError"}


def test_a_stall_shows_in_latency_not_hidden_by_coordinated_omission() -> None:
    """One call stalls 0.3 s with one slot: the requests scheduled meanwhile wait, and
    their latency from the intended start says so (a closed loop would not send them)."""
    calls = itertools.count()

    def fn() -> None:
        if next(calls) == 5:
            time.sleep(0.3)

    run = asyncio.run(run_bench(function_target(fn, "stall"), 100, 1.0, concurrency=1))
    _check_shape(run.latency_s, run.service_s)
    queued = run.latency_s - run.service_s
    # requests 6.. were due 10 ms apart during the 0.3 s stall: at least 20 of them
    # waited more than 0.05 s for the slot
    assert (queued > 0.05).sum() >= 20
    assert run.summary.completed == 100
    assert run.summary.latency[0.99] > run.summary.service[0.99]


def test_async_callable_errors_and_timeouts_by_type(mc: MetricsCollector) -> None:
    calls = itertools.count()

    async def fn() -> None:
        i = next(calls)
        if i % 4 == 1:
            raise KeyError(i)
        if i == 2:
            await asyncio.sleep(5)  # past the timeout

    rec = BenchRecorder(mc, "run-c", "fn")
    run = asyncio.run(run_bench(function_target(fn, "fn"), 40, 0.5, timeout_s=0.2, recorder=rec))
    assert run.summary.scheduled == 20 and run.summary.completed == 20
    assert run.summary.outcomes == {"ok": 14, "KeyError": 5, "timeout": 1}
    assert run.summary.errors == 6
    assert values(mc, BENCH_REQUESTS) == {
        lab(run_id="run-c", target="fn", outcome="ok"): 14,
        lab(run_id="run-c", target="fn", outcome="KeyError"): 5,
        lab(run_id="run-c", target="fn", outcome="timeout"): 1,
    }
    assert run.latency_s[2] >= 0.2


def test_sync_callable_runs_in_at_most_concurrency_threads() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0

    def fn() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    run = asyncio.run(run_bench(function_target(fn, "t"), 200, 0.5, concurrency=3))
    assert run.summary.completed == 100 and peak <= 3


# -------------------------------------------------------------------------------- CLI


def test_cli_bench_prints_the_summary_for_a_url_and_a_callable() -> None:
    from typer.testing import CliRunner

    from monitoring.cli import app

    with serve_asgi(APP) as url:
        res = CliRunner().invoke(
            app,
            ["perf", "bench", url + "/work", "--rate", "40", "--duration", "1s",
             "--concurrency", "4", "--no-record", "--run-id", "cli-1"],
        )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "requests scheduled=40 completed=40 errors=0 unfinished=0" in res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("run_id=cli-1 achieved_rate=") and "p99.9_ms=" in last
    res = CliRunner().invoke(
        app,
        ["perf", "bench", "time:monotonic", "--rate", "100", "--duration", "0.5",
         "--arrivals", "poisson", "--seed", "3", "--no-record"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    n = len(schedule(100, 0.5, "poisson", seed=3))
    assert f"requests scheduled={n} completed={n} errors=0" in res.output


def test_cli_bench_sends_headers_and_a_body(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from monitoring.cli import app

    body = tmp_path / "body.json"
    body.write_bytes(b'{"x": 1}')
    with serve_asgi(APP) as url:
        res = CliRunner().invoke(
            app,
            ["perf", "bench", url + "/echo", "--rate", "20", "--duration", "0.5", "--method",
             "post", "--header", "X-Token: t0k", "--body-file", str(body), "--no-record"],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert "completed=10 errors=0" in res.output and "200=10" in res.output
        res = CliRunner().invoke(
            app,
            ["perf", "bench", url + "/echo", "--rate", "20", "--duration", "0.5", "--method",
             "post", "--body-file", str(body), "--no-record"],
        )  # fmt: skip
        assert "completed=10 errors=10" in res.output and "403=10" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ftp://x/", "--rate", "1"], "http"),
        (["time:monotonic", "--rate", "0"], "positive"),
        (["time:monotonic", "--rate", "1", "--duration", "2d"], "between"),
        (["time:monotonic", "--rate", "1", "--arrivals", "burst"], "poisson"),
        (["time:monotonic", "--rate", "1", "--run-id", "a b"], "run-id"),
        (["time:monotonic", "--rate", "1e6", "--duration", "1h"], "at most"),
        (["http://127.0.0.1:1/", "--rate", "1", "--method", "GET /x"], "method"),
        (["http://127.0.0.1:1/", "--rate", "1", "--header", "no colon"], "Name: value"),
        (["http://127.0.0.1:1/", "--rate", "1", "--header", "X: a\x01"], "Name: value"),
        (["http://127.0.0.1:1/", "--rate", "1", "--body-file", "/nonexistent/x"], "body-file"),
        (["time:monotonic", "--rate", "1", "--header", "X: y"], "for a URL"),
    ],
)
def test_cli_bench_rejects_bad_arguments(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from monitoring.cli import app

    res = CliRunner().invoke(app, ["perf", "bench", *args, "--no-record"])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_two_runs_on_one_collector_keep_their_own_series(mc: MetricsCollector) -> None:
    for rid, rate in (("r1", 20), ("r2", 40)):
        rec = BenchRecorder(mc, rid, "t")
        asyncio.run(run_bench(function_target(time.monotonic, "t"), rate, 0.5, recorder=rec))
    assert values(mc, BENCH_LATENCY + "_count") == {
        lab(run_id="r1", target="t"): 10,
        lab(run_id="r2", target="t"): 20,
    }
    assert values(mc, BENCH_TARGET_RATE) == {
        lab(run_id="r1", target="t"): 20,
        lab(run_id="r2", target="t"): 40,
    }
