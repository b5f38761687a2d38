"""``monitoring perf bench``: drive a URL or a Python callable open-loop at a rate.

The schedule and the statistics are ``arrivals`` (see its docstring for why latency is
measured from each request's intended start). This module is the I/O: an asyncio
dispatcher sleeps until each intended time and starts the request whatever earlier
ones are doing; at most ``concurrency`` run at once (HTTP connections, or threads for a
plain function), later ones wait for a slot and that wait counts in their latency.

Targets: an ``http://`` or ``https://`` URL (httpx; a status of 400 or more is an
error), or ``module:callable`` (an ``async def`` is awaited on the loop, a plain function
runs in a pool of ``concurrency`` threads; an exception is an error named by its type).
A request still running ``timeout_s`` after it was sent is a ``timeout`` error; after the
schedule, requests get ``timeout_s`` more to finish, then count as ``unfinished``.

Results are ordinary series through the SDK's ``MetricsCollector`` (``BenchRecorder``),
labelled ``run_id`` and ``target`` so runs compare side by side, collected every
``collect_every_s`` during the run and once at its end.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from monitoring.perf.arrivals import QUANTILES, Arrivals, Summary, schedule, summarize
from monitoring.perf.tracking import BoundedLabel
from monitoring.sdk.producer import MetricsCollector

BENCH_LATENCY = "perf_bench_latency_seconds"
BENCH_SERVICE = "perf_bench_service_time_seconds"
BENCH_REQUESTS = "perf_bench_requests_total"
BENCH_ERRORS = "perf_bench_errors_total"
BENCH_TARGET_RATE = "perf_bench_target_rate"
BENCH_ACHIEVED_RATE = "perf_bench_achieved_rate"
BENCH_QUANTILE = "perf_bench_summary_latency_seconds"
# 100 µs to 60 s in 1-2.5-5 steps: finer than the HTTP buckets, for comparing runs
BENCH_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
)  # fmt: skip
MAX_CONCURRENCY = 10_000
MAX_TARGET_LABEL = 200


class BadTarget(ValueError):
    """The target is neither an http(s) URL nor an importable ``module:callable``."""


Call = Callable[[], Awaitable[tuple[str, bool]]]
"""One request: returns (outcome label, is_error)."""


@dataclass(frozen=True)
class Target:
    """What is driven: a label for the series and a factory of the request function."""

    label: str
    open: Callable[[int], Any]  # concurrency -> async context manager yielding a Call


def new_run_id() -> str:
    """``YYYYmmddTHHMMSSZ-xxxx``: sortable, unique enough per target."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def url_label(url: str) -> str:
    """The URL without credentials, query or fragment (they may carry secrets).

    >>> url_label("https://u:pw@api.example:8443/v1/score?key=s3cret#x")
    'https://api.example:8443/v1/score'
    """
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{p.port}" if p.port else host
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))[:MAX_TARGET_LABEL]


def http_target(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Target:
    """Requests to ``url`` (http or https only); BadTarget says what is wrong with it."""
    try:
        p = urllib.parse.urlsplit(url)
        _ = p.port  # urlsplit is lazy: a port out of range or not a number raises here
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as e:
        raise BadTarget(f"not a valid URL: {url[:200]!r} ({e})") from None
    if p.scheme not in ("http", "https") or not p.hostname:
        raise BadTarget(f"not an http(s) URL: {url[:200]!r}")

    class _Open:
        def __init__(self, concurrency: int) -> None:
            self.client = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=concurrency, max_keepalive_connections=concurrency
                ),
                timeout=None,  # the runner's timeout covers the whole request
                headers=headers,
            )

        async def __aenter__(self) -> Call:
            client = self.client

            async def call() -> tuple[str, bool]:
                # the whole body is read (the latency ends with it) and dropped as it
                # comes: a large or endless answer costs no memory
                async with client.stream(method, url, content=body) as r:
                    async for _chunk in r.aiter_raw():
                        pass
                return str(r.status_code), r.status_code >= 400

            return call

        async def __aexit__(self, *exc: object) -> None:
            await self.client.aclose()

    return Target(url_label(url), _Open)


def callable_target(spec: str) -> Target:
    """``package.module:function`` (or ``module:Class.method`` of a static callable)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise BadTarget(f"a callable is module:name, not {spec[:200]!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise BadTarget(f"cannot import {spec[:200]!r}: {e}") from None
    if not callable(obj):
        raise BadTarget(f"{spec[:200]!r} is not callable")
    return function_target(obj, spec[:MAX_TARGET_LABEL])


def function_target(fn: Callable[[], Any], label: str) -> Target:
    """A Python callable taking no arguments (``async def`` or plain)."""
    is_async = inspect.iscoroutinefunction(fn)

    class _Open:
        def __init__(self, concurrency: int) -> None:
            self.pool = None if is_async else ThreadPoolExecutor(concurrency, "perf-bench")

        async def __aenter__(self) -> Call:
            pool = self.pool

            async def call() -> tuple[str, bool]:
                if pool is None:
                    await fn()
                else:
                    await asyncio.get_running_loop().run_in_executor(pool, fn)
                return "ok", False

            return call

        async def __aexit__(self, *exc: object) -> None:
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)

    return Target(label, _Open)


def resolve_target(spec: str, method: str = "GET") -> Target:
    """A URL (``http://``, ``https://``) or ``module:callable``."""
    if "://" in spec:
        return http_target(spec, method)
    return callable_target(spec)


class BenchRecorder:
    """The run's series: latency and service-time histograms, requests by outcome,
    errors, target and achieved rate, and the exact quantiles at the end."""

    def __init__(self, collector: MetricsCollector, run_id: str, target: str) -> None:
        c = {"run_id": run_id, "target": target}
        self.const = c
        self.collector = collector
        # families are shared by name within a collector: run labels go on the children
        self.latency = collector.histogram(BENCH_LATENCY, BENCH_BUCKETS, unit="seconds")
        self.service = collector.histogram(BENCH_SERVICE, BENCH_BUCKETS, unit="seconds")
        self.latency_child = self.latency.labels(**c)
        self.service_child = self.service.labels(**c)
        self.requests = collector.counter(BENCH_REQUESTS, unit="requests")
        self.errors = collector.counter(BENCH_ERRORS, unit="requests").labels(**c)
        self.target_rate = collector.gauge(BENCH_TARGET_RATE, unit="requests_per_second")
        self.achieved = collector.gauge(BENCH_ACHIEVED_RATE, unit="requests_per_second")
        self.quantile = collector.gauge(BENCH_QUANTILE, unit="seconds")
        self.outcomes = BoundedLabel(32)

    def started(self, rate: float) -> None:
        self.target_rate.set(rate, self.const)
        self.errors.inc(0)  # the series exists from the start, also for a clean run

    def finished(self, latency_s: float, service_s: float, outcome: str, error: bool) -> None:
        self.latency_child.observe(latency_s)
        self.service_child.observe(service_s)
        self.requests.inc(1, self.const, outcome=self.outcomes(outcome))
        if error:
            self.errors.inc()

    def summary(self, s: Summary) -> None:
        self.achieved.set(s.achieved_rate, self.const)
        for q, v in s.latency.items():
            if math.isfinite(v):
                self.quantile.set(v, self.const, quantile=f"{q:g}")


@dataclass
class Run:
    """A finished run: per-request arrays and the summary."""

    run_id: str
    target: str
    offsets_s: np.ndarray
    latency_s: np.ndarray
    service_s: np.ndarray
    errors: np.ndarray
    finished: np.ndarray
    outcomes: list[str]
    summary: Summary


async def run_bench(
    target: Target,
    rate: float,
    duration_s: float,
    *,
    concurrency: int = 64,
    arrivals: Arrivals = "constant",
    timeout_s: float = 10.0,
    seed: int | None = None,
    recorder: BenchRecorder | None = None,
    run_id: str = "",
    collect_every_s: float = 1.0,
) -> Run:
    """Drive ``target`` open-loop (see the module); returns the :class:`Run`."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be 1..{MAX_CONCURRENCY}, not {concurrency}")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout must be positive, not {timeout_s}")
    offsets = schedule(rate, duration_s, arrivals, seed)
    n = len(offsets)
    latency = np.full(n, np.nan)
    service = np.full(n, np.nan)
    errors = np.zeros(n, dtype=bool)
    finished = np.zeros(n, dtype=bool)
    outcomes = ["unfinished"] * n
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    max_lag = 0.0
    if recorder is not None:
        recorder.started(rate)

    async with target.open(concurrency) as call:

        async def one(i: int, intended: float) -> None:
            async with slots:
                sent = loop.time()
                try:
                    outcome, error = await asyncio.wait_for(call(), timeout_s)
                except TimeoutError:
                    outcome, error = "timeout", True
                except Exception as e:
                    outcome, error = type(e).__name__, True
                done = loop.time()
            latency[i] = done - intended
            service[i] = done - sent
            errors[i] = error
            finished[i] = True
            outcomes[i] = outcome
            if recorder is not None:
                recorder.finished(latency[i], service[i], outcome, error)

        async def collector_ticks() -> None:
            assert recorder is not None
            while True:
                await asyncio.sleep(collect_every_s)
                await loop.run_in_executor(None, recorder.collector.collect)

        ticker = asyncio.create_task(collector_ticks()) if recorder is not None else None
        tasks: set[asyncio.Task[None]] = set()
        t0 = loop.time() + 0.01
        try:
            for i, off in enumerate(offsets.tolist()):
                at = t0 + off
                now = loop.time()
                if at > now:
                    await asyncio.sleep(at - now)
                    now = loop.time()
                max_lag = max(max_lag, now - at)
                task = asyncio.create_task(one(i, at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(set(tasks), timeout=timeout_s + 1.0)
        finally:
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.wait(set(tasks))
            if ticker is not None:
                ticker.cancel()
        elapsed = loop.time() - t0

    unfinished = ~finished
    errors[unfinished] = True
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    summary = summarize(
        target_rate=rate,
        duration_s=duration_s,
        latency_s=latency,
        service_s=service,
        errors=errors,
        finished=finished,
        elapsed_s=elapsed,
        max_send_lag_s=max_lag,
        outcomes=counts,
    )
    if recorder is not None:
        for _ in range(int(unfinished.sum())):
            recorder.requests.inc(1, recorder.const, outcome="unfinished")
            recorder.errors.inc()
        recorder.summary(summary)
        recorder.collector.collect()
    return Run(run_id, target.label, offsets, latency, service, errors, finished, outcomes, summary)


__all__ = [
    "BENCH_BUCKETS",
    "QUANTILES",
    "BadTarget",
    "BenchRecorder",
    "Run",
    "callable_target",
    "function_target",
    "http_target",
    "new_run_id",
    "resolve_target",
    "run_bench",
]
