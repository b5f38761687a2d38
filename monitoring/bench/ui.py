"""``monitoring bench ui``: how fast the dashboards answer and draw.

A chDB store in a temporary directory gets the query bench's data (``bench query``:
250 series x 7 days x 15 s = 10.1 M raw samples, their 10 s and 1 min windows) plus the
load generator's service, system and model series for the last hour; the store's own
query server (Prometheus API and ClickHouse interface, its guard and queue, default
``storage.query`` limits) serves it, and ``monitoring ui`` reads it over HTTP.

1. **Panel**: ``repeat`` requests of one panel through the UI, 24 hours of 200 series
   (``rate(bench_requests_total[...])`` for 100 counters and 100 ``bench_gauge``), 1,000
   pixels wide (step 2 min: 721 points a series; the UI lets the store read its 1 min
   windows, ``max_source_resolution``): p50/p99, timed until the whole answer is
   received, and the CPU time each request cost (the UI, the store and this client run
   in this one process: a measure a loaded machine does not stretch as it stretches
   wall time); the same two queries asked of the store directly.
2. **First load**: Debian's chromium (Playwright) opens the Services dashboard
   ``loads`` times, each a new page of one browser context (one person's browser): ms
   from navigation until every panel has drawn (the first with an empty cache for
   plotly.js, the others with it cached; the median of those and the slowest reported),
   and the CPU time this process spent on each (the UI, the store and Playwright's
   client; chromium's own is not counted).
3. **Event to pixel**: a page shows a live panel of ``bench_live_probe`` (the last 5
   minutes); ``probes`` times, a new sample and its closed 10 s window are stored (what
   the store does when the aggregation agent closes a window) and the time until the
   browser has drawn that sample's value is measured: the UI's live poll
   (``ui.live_poll``, 2 s), the server push, the refetch and the redraw. Kafka and the
   worker are not in this path (``bench pipeline`` measures them).

The last line printed is ``panel_p99_ms=<n> first_load_ms=<n> event_to_pixel_ms=<n>``
(first load: the median of the warm loads).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from monitoring.bench.query import build, percentile
from monitoring.ui.app import MIN_WINDOWED_STEP_S

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PANELS_DRAWN = (
    "() => { const ps = [...document.querySelectorAll('.panel')];"
    " return ps.length > 0 && ps.every(p => p.dataset.state === 'ok'"
    " || p.dataset.state === 'empty'); }"
)
BENCH_DASHBOARD = """
title: Bench
time: {last: 24h}
rows:
  - panels:
      - id: two_hundred
        title: 200 series over 24 h
        width: 12
        queries:
          - promql: rate(bench_requests_total[$__rate_interval])
          - promql: bench_gauge{instance=~"g(1[2-9][0-9]|20[0-9]|21[0-9]|220)"}
  - panels:
      - id: live
        title: live probe
        width: 12
        queries:
          - promql: bench_live_probe
"""
PROBE_ID = 999_001


@dataclass
class UiBench:
    """What was measured, in ms."""

    samples: int = 0
    build_s: float = 0.0
    panel_ms: list[float] = field(default_factory=list)
    panel_cpu_ms: list[float] = field(default_factory=list)  # this process's CPU per request
    store_ms: list[float] = field(default_factory=list)  # the panel's queries, store direct
    panel_series: int = 0
    panel_points: int = 0
    first_load_ms: list[float] = field(default_factory=list)
    first_load_cpu_ms: list[float] = field(default_factory=list)  # this process, not chromium
    event_to_pixel_ms: list[float] = field(default_factory=list)

    def summary(self) -> str:
        warm = self.first_load_ms[1:] or self.first_load_ms
        return (
            f"panel_p99_ms={percentile(self.panel_ms, 0.99):.1f} "
            f"first_load_ms={statistics.median(warm):.1f} "
            f"event_to_pixel_ms={statistics.median(self.event_to_pixel_ms):.1f}"
        )


def run(
    series: int = 250,
    days: float = 7.0,
    scrape_s: int = 15,
    repeat: int = 30,
    loads: int = 6,
    probes: int = 5,
    progress: Callable[[str], None] = print,
) -> UiBench:
    """Build the store, serve it and the UI, and measure (see the module docstring)."""
    from prometheus_client import CollectorRegistry

    from monitoring.config import QueryLimits, Settings, UiSettings
    from monitoring.query import clickhouse_http, prometheus_api
    from monitoring.sinks.clickhouse.connection import connect, connect_read_only
    from monitoring.sinks.clickhouse.migrations import migrate
    from monitoring.sinks.clickhouse.query_server import QueryServer
    from monitoring.ui.server import UiServer

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    out = UiBench()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    client = reader = qs = ui = None
    try:
        base = Settings.load(None)
        storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp / 'chdb'}"})
        client = connect(storage.dsn)
        migrate(client, storage)
        t0 = time.monotonic()
        now_s = int(time.time())
        progress(f"building {series} series x {days} days at {scrape_s} s ...")
        out.samples = _services(client, now_s * 1000)  # before build: it aggregates all
        out.samples += build(client, series, days, scrape_s, now_s)
        out.build_s = time.monotonic() - t0
        progress(f"{out.samples:,} raw samples in {out.build_s:.0f} s")
        limits = QueryLimits()
        reader = connect_read_only(storage.dsn, limits)
        qs = QueryServer(
            reader, CollectorRegistry(), "127.0.0.1", 0, limits=limits,
            protocols=[clickhouse_http.routes, prometheus_api.routes],
        ).start()  # fmt: skip
        (tmp / "dashboards").mkdir()
        (tmp / "dashboards" / "bench.yaml").write_text(BENCH_DASHBOARD)
        ui_settings = UiSettings.model_validate({
            **base.ui.model_dump(), "store_url": "http://{}:{}".format(*qs.address),
            "dashboards_dir": str(tmp / "dashboards"),
        })  # fmt: skip
        settings = base.model_copy(update={"storage": storage, "ui": ui_settings})
        ui = UiServer(settings, CollectorRegistry(), "127.0.0.1", 0).start()
        _panel(out, ui.url, ui_settings.store_url, repeat, progress)
        _browser(out, ui.url, client, loads, probes, progress)
    finally:
        for server in (ui, qs):
            if server is not None:
                server.stop()
        for c in (reader, client):
            if c is not None:
                c.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _services(client: Any, end_ms: int) -> int:
    """The load generator's series for the hour before ``end_ms`` (at 15 s)."""
    from prometheus_client import CollectorRegistry

    from monitoring.dev.loadgen import generate
    from monitoring.metrics.samples import Sample, series_key
    from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer

    writer = Writer(client, StoreMetrics(CollectorRegistry()))
    n = 0
    for tick in generate(200, end_ms - 3_600_000, 15_000, seed=3, ticks=241):
        n += writer.add_samples(
            Sample(
                series_key(s.name, s.labels),
                s.name,
                s.labels,
                s.timestamp_ms,
                s.value,
                s.kind,
                s.unit,
            )
            for s in tick
        )
    writer.flush()
    return n


def _panel(
    out: UiBench, url: str, store_url: str, repeat: int, progress: Callable[[str], None]
) -> None:
    end = int(time.time() * 1000)
    params = {"start": end - 86_400_000, "end": end, "width": 1000}
    path = f"{url}/api/ui/dashboards/bench/panels/two_hundred"
    with httpx.Client(timeout=120) as c:
        first = c.get(path, params=params)
        first.raise_for_status()
        body = first.json()
        frames = body["frames"]
        out.panel_series = len(frames)
        out.panel_points = sum(len(f.get("v", [])) for f in frames)
        progress(f"panel: {out.panel_series} series, {out.panel_points:,} points, "
                 f"step {body['step_s']} s")  # fmt: skip
        # the same two range queries asked of the store directly (what the UI adds is
        # the rest: its parsing, reshaping and encoding)
        step = body["step_s"]
        form = {"start": f"{body['start'] / 1000:.3f}", "end": f"{end / 1000:.3f}",
                "step": str(step), "format": "grid"}  # fmt: skip
        if step >= MIN_WINDOWED_STEP_S:  # as the UI asks
            form["max_source_resolution"] = f"{step // 2}s"
        queries = [
            f"rate(bench_requests_total[{max(4 * step, 60)}s])",
            'bench_gauge{instance=~"g(1[2-9][0-9]|20[0-9]|21[0-9]|220)"}',
        ]
        for _ in range(repeat):
            t, cpu = time.perf_counter(), time.process_time()
            resp = c.get(path, params=params)
            resp.raise_for_status()
            out.panel_ms.append((time.perf_counter() - t) * 1000)
            out.panel_cpu_ms.append((time.process_time() - cpu) * 1000)
            t = time.perf_counter()
            for q in queries:
                c.post(
                    f"{store_url}/api/v1/query_range", data={**form, "query": q}
                ).raise_for_status()
            out.store_ms.append((time.perf_counter() - t) * 1000)


def _browser(
    out: UiBench, url: str, client: Any, loads: int, probes: int, progress: Callable[[str], None]
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # one context, as one person's browser: the first load has an empty cache,
            # the later ones have plotly.js cached (browser.new_page would give each
            # load a new context, every one of them cold)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            for _ in range(loads):
                page = context.new_page()
                t, cpu = time.perf_counter(), time.process_time()
                page.goto(f"{url}/d/services?last=1h")
                page.wait_for_function(PANELS_DRAWN, timeout=60_000, polling=10)
                out.first_load_ms.append((time.perf_counter() - t) * 1000)
                out.first_load_cpu_ms.append((time.process_time() - cpu) * 1000)
                page.close()
            context.close()
            progress(f"first loads (ms): {[round(x) for x in out.first_load_ms]}")
            client.command(
                "INSERT INTO series (series_id, series, name, labels, kind, unit, first_seen, "
                f"last_seen) VALUES ({PROBE_ID}, 'bench_live_probe', 'bench_live_probe', map(), "
                "'GAUGE', '', now64(3) - INTERVAL 1 HOUR, now64(3) + INTERVAL 1 HOUR)"
            )
            _probe(client, 0.0)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/d/bench?last=5m")
            page.wait_for_function(PANELS_DRAWN, timeout=120_000, polling=10)
            page.select_option("#refresh", "0")  # only the push refetches
            page.wait_for_selector("body[data-live-end]", timeout=30_000)
            for k in range(1, probes + 1):
                value = 1000.0 + k
                t = time.perf_counter()
                _probe(client, value)
                page.wait_for_function(
                    'v => { const d = document.querySelector(\'[data-panel="live"] '
                    ".js-plotly-plot'); if (!d || !d.data.length) return false;"
                    " const y = d.data[0].y; return y[y.length - 1] === v; }",
                    arg=value,
                    timeout=60_000,
                    polling=10,
                )
                out.event_to_pixel_ms.append((time.perf_counter() - t) * 1000)
            progress(f"event to pixel (ms): {[round(x) for x in out.event_to_pixel_ms]}")
        finally:
            browser.close()


def _probe(client: Any, value: float) -> None:
    """A sample of ``bench_live_probe`` now, and its window closed now."""
    client.command(
        f"INSERT INTO samples (series_id, ts, value) VALUES ({PROBE_ID}, now64(3), {value})"
    )
    client.command(
        "INSERT INTO aggregates (series_id, series, name, labels, window_ms, window_start, "
        "window_end, count, sum, min, max, mean, last, p50, p90, p99, closed_by, version) "
        f"VALUES ({PROBE_ID}, 'bench_live_probe', 'bench_live_probe', map(), 10000, "
        f"now64(3) - INTERVAL 10 SECOND, now64(3), 1, {value}, {value}, {value}, {value}, "
        f"{value}, {value}, {value}, {value}, 'watermark', 1)"
    )
