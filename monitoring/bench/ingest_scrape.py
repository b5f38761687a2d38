"""``monitoring bench scrape``: the scraper over many targets, and the system collector's cost.

Scrape: a fake target server runs in another process (uvicorn, pinned to the last
core when there are two or more) and serves one prebuilt page of ``series`` gauges and
counters; ``targets`` static targets (one address, told apart by a label, as many
distinct label sets) are scraped every ``interval`` by this process, pinned to one core,
for ``duration`` seconds after a warm-up (a series is labelled and validated at its
first scrape: the warm-up lasts two intervals, then until a whole interval passes
without a miss, and is reported apart),
into the real broker (or into nothing with ``kafka=False``). Printed: scrapes done
against due, missed intervals (warm-up and after), samples/s, this process's CPU
(cores, after the warm-up), scrape durations.

Collector: ``SystemCollector.collect()`` on this host, CPU seconds per collection (the
thread's own CPU time), as a percentage of one core at the configured interval.

Numbers only; nothing here asserts on time.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.ingest.outlet import Outlet
from monitoring.ingest.scrape import Scraper
from monitoring.ingest.scrape_config import ScrapeFile
from monitoring.runtime.admin import delete_topics, ensure_topics, list_topics


def page(series: int) -> bytes:
    """A node_exporter-like page: ``series`` samples in families of up to 10, gauges and
    counters alternating, two labels each."""
    lines: list[str] = []
    n = f = 0
    while n < series:
        name = f"bench_family_{f}_total" if f % 2 else f"bench_family_{f}"
        lines.append(f"# HELP {name} Family {f}.")
        lines.append(f"# TYPE {name} {'counter' if f % 2 else 'gauge'}")
        for i in range(min(10, series - n)):
            lines.append(f'{name}{{device="dev{i}",mode="m{f % 7}"}} {n}.5')
            n += 1
        f += 1
    return ("\n".join(lines) + "\n").encode()


def serve(port: int, series: int) -> None:
    """The fake target server (run in its own process): one page, any path; on
    ``/probe`` (``bench ingest``'s end-to-end part) a page of one probe sample whose value
    is a sequence number, also given in the ``x-bench-probe`` header."""
    import uvicorn

    body = page(series)
    headers = [
        (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    seq = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal seq
        if scope["type"] != "http":
            return
        if scope["path"] == "/probe":
            seq += 1
            probe = f'bench_e2e_probe{{path="scrape"}} {seq}\n'.encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                headers[0], (b"content-length", str(len(probe)).encode()),
                (b"x-bench-probe", str(seq).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": probe})
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class _Null:
    """A recorder that takes samples and sends nothing (``kafka=False``)."""

    def __init__(self) -> None:
        self.n = 0

    def record(self, *a: Any, **kw: Any) -> bool:
        self.n += 1
        return True

    def series(self, *a: Any, **kw: Any) -> _Null:
        return self


@dataclass
class ScrapeBench:
    targets: int
    series: int
    interval_s: float
    duration_s: float
    scrapes: int
    due: int
    missed_intervals: int
    warmup_missed: int
    warmup_s: float
    failed: int
    samples_per_s: float
    cpu_cores: float
    scrape_p50_ms: float
    scrape_p99_ms: float
    unsent: int
    kafka: bool


def run_scrape(
    settings: Settings,
    targets: int = 500,
    series: int = 1000,
    interval_s: float = 15.0,
    duration_s: float = 60.0,
    kafka: bool = True,
    one_core: bool = True,
    progress: Callable[[str], None] = lambda m: None,
    warmup_s: float | None = None,
) -> ScrapeBench:
    """Scrape ``targets`` fake targets for ``duration_s`` and measure."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server = subprocess.Popen(
        [sys.executable, "-c", f"from monitoring.bench.ingest_scrape import serve; "
         f"serve({port}, {series})"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if one_core and len(cores) >= 2:
            os.sched_setaffinity(server.pid, {cores[-1]})
            os.sched_setaffinity(0, {cores[0]})
        _wait_http(f"http://127.0.0.1:{port}/metrics", server)
        progress(f"fake target server on port {port}: {targets} targets x {series} series")
        warm = 2 * interval_s if warmup_s is None else warmup_s
        return asyncio.run(
            _scrape(settings, port, targets, series, interval_s, duration_s, warm, kafka, progress)
        )
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        if one_core and len(cores) >= 2:
            os.sched_setaffinity(0, set(cores))


async def _scrape(
    settings: Settings,
    port: int,
    targets: int,
    series: int,
    interval_s: float,
    duration_s: float,
    warmup_s: float,
    kafka: bool,
    progress: Callable[[str], None],
) -> ScrapeBench:
    registry = CollectorRegistry()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    if kafka:  # a fresh topic prefix, deleted afterwards
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})}
        )
        ensure_topics(settings)
    try:
        return await _measure(
            settings, registry, port, targets, series, interval_s, duration_s, warmup_s, kafka,
            progress,
        )  # fmt: skip
    finally:
        if kafka:
            bootstrap = settings.kafka.bootstrap_servers
            delete_topics(bootstrap, list_topics(bootstrap, prefix=prefix))


async def _measure(
    settings: Settings,
    registry: CollectorRegistry,
    port: int,
    targets: int,
    series: int,
    interval_s: float,
    duration_s: float,
    warmup_s: float,
    kafka: bool,
    progress: Callable[[str], None],
) -> ScrapeBench:
    from monitoring.sdk.producer import MetricsCollector

    mc: Any = (
        MetricsCollector(settings, source="bench-scrape", registry=registry, batch_size=5000)
        if kafka
        else _Null()
    )
    outlet = Outlet(mc, registry, "scrape", give_up_s=interval_s)
    cfg = ScrapeFile.parse(
        {
            "global": {"scrape_interval": interval_s, "scrape_timeout": min(10.0, interval_s)},
            "scrape_configs": [
                {
                    "job_name": "bench",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}"], "labels": {"shard": str(i)}}
                        for i in range(targets)
                    ],
                }
            ],
        }
    )
    scraper = Scraper(cfg, outlet, settings.scrape, registry)
    stop = asyncio.Event()

    def count(name: str, labels: dict[str, str]) -> int:
        return int(registry.get_sample_value(name, labels) or 0)

    def scrapes() -> tuple[int, int]:
        ok = count("monitoring_scrape_scrapes_total", {"job": "bench", "result": "ok"})
        failed = sum(
            count("monitoring_scrape_scrapes_total", {"job": "bench", "result": r})
            for r in (
                "timeout",
                "http",
                "http_status",
                "parse",
                "body_size",
                "sample_limit",
                "auth",
            )
        )
        return ok, failed

    def sent() -> tuple[int, int]:
        return (
            count("monitoring_ingest_samples_total", {"source": "scrape", "outcome": "sent"}),
            count("monitoring_ingest_samples_total", {"source": "scrape", "outcome": "unsent"}),
        )

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    task = asyncio.create_task(scraper.run(stop))
    t0 = time.monotonic()
    # warm-up: every series is labelled and validated at its first scrape; it lasts
    # warmup_s and then until a whole interval passed without a miss (at most 10)
    last_change, last_missed = t0, 0
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        if scraper.missed_total != last_missed:
            last_change, last_missed = now, scraper.missed_total
        progress(f"warm-up {now - t0:.0f}s: missed {scraper.missed_total}")
        if now - t0 >= warmup_s and (
            now - last_change >= interval_s or now - t0 >= 10 * interval_s
        ):
            break
    warm_missed = scraper.missed_total
    warm_s = time.monotonic() - t0
    (ok0, failed0), (sent0, unsent0), c0 = scrapes(), sent(), cpu_s()
    t1 = time.monotonic()
    durations: list[float] = []
    seen: dict[int, int] = {}
    while time.monotonic() - t1 < duration_s:
        await asyncio.sleep(min(1.0, duration_s))
        for tl in list(scraper.loops.values()):
            if tl.last is not None and seen.get(id(tl)) != id(tl.last):
                seen[id(tl)] = id(tl.last)
                durations.append(tl.last.duration_s)
        progress(f"{time.monotonic() - t1:.0f}s: missed intervals {scraper.missed_total}")
    wall = time.monotonic() - t1
    (ok1, failed1), (sent1, unsent1), c1 = scrapes(), sent(), cpu_s()
    missed = scraper.missed_total - warm_missed
    stop.set()
    await task
    if kafka:
        mc.close(30)
    durations.sort()
    return ScrapeBench(
        targets=targets,
        series=series,
        interval_s=interval_s,
        duration_s=wall,
        scrapes=(ok1 - ok0) + (failed1 - failed0),
        due=round(targets * wall / interval_s),
        missed_intervals=missed,
        warmup_missed=warm_missed,
        warmup_s=warm_s,
        failed=failed1 - failed0,
        samples_per_s=(sent1 - sent0) / wall,
        cpu_cores=(c1 - c0) / wall,
        scrape_p50_ms=1000 * statistics.median(durations) if durations else 0.0,
        scrape_p99_ms=1000 * durations[int(0.99 * (len(durations) - 1))] if durations else 0.0,
        unsent=unsent1 - unsent0,
        kafka=kafka,
    )


def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the fake target server did not start")
        time.sleep(0.05)


@dataclass
class CollectorBench:
    collections: int
    series: int
    cpu_ms_per_collection: float
    interval_s: float

    @property
    def cpu_pct(self) -> float:
        """CPU of one collection as a percentage of one core over the interval."""
        return self.cpu_ms_per_collection / 1000 / self.interval_s * 100


def run_collector(settings: Settings, collections: int = 20) -> CollectorBench:
    """Time ``collections`` system collections on this host (thread CPU time)."""
    from monitoring.ingest.system import SystemCollector

    c = SystemCollector(settings.system_collector)
    try:
        c.collect()  # the first reading lists processes and mounts cold
        t0 = time.thread_time()
        n = 0
        for _ in range(collections):
            n = len(c.collect())
        cpu = time.thread_time() - t0
    finally:
        c.close()
    return CollectorBench(
        collections, n, cpu / collections * 1000, settings.collection.interval.total_seconds()
    )
