"""``monitoring bench ingest``, end-to-end part: receipt to stored aggregate, per path.

A worker (the aggregation agent; anomaly detection off) and a store run as processes of
a ``LocalDeployment`` (a fresh topic prefix and chDB directory) with short windows:
``aggregation.windows`` one size (1 s by default) and ``aggregation.allowed_lateness``
(1 s by default); the store flushes at the configured ``storage.flush_interval`` (1 s by
default). The ingest paths run in this process, one after the other, each for
``warmup_s`` (not measured: a series seen for the first time costs more) then
``seconds``, at a steady load into the deployment's samples topic through the real SDK
producer (default settings: batches of 500, 100 ms linger):

* remote_write and OTLP: the real receiver (ApiServer + Guard) on loopback; a client
  thread posts a request every ``every_s`` with ``series`` samples stamped with the
  current time and one probe sample ``bench_e2e_probe{path=...}`` whose value is a
  sequence number, named in an ``X-Bench-Probe`` header. Receipt: the wall time the
  request reached the server (an ASGI middleware outside the guard; a request retried
  after a 503 keeps its first arrival).
* scrape: the real ``Scraper``, every ``scrape_interval_s``, of ``targets`` targets of
  ``series`` samples on a fake server in another process, plus a probe target whose
  page carries the probe sample and its sequence number in a response header. Receipt:
  the wall time the response's headers reached the scraper (its transport).
* collector: the real ``CollectLoop.once`` every ``collect_interval_s``, stamped with
  the time it starts reading. Receipt: that time; the series followed is ``node_load1``.

A thread polls the store's query endpoint every ``poll_s`` for the followed series'
aggregate rows (``window_end``, and ``min``/``max`` of the sequence numbers); a row's
stored time is the time the first answer holding it arrived (biased high by up to the
poll period plus a query). Per followed sample: receipt -> stored (it waits in its
window, then for the watermark: window end + allowed lateness, reached when a later
sample of its partition arrives, then the worker's close, the store's flush). Per
window: stored - (window_end + allowed_lateness), the part after the window could
close. Samples received in the last ``tail`` (lateness + two windows + 1 s) are not
measured: the load stops then, and their windows would close by the idle timeout.
Each path's own counts (503 retries, missed intervals, unsent) are reported with it.
Numbers only; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cramjam
import httpx
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.dev.deploy import LocalDeployment, free_port
from monitoring.ingest.prompb import WriteRequest
from monitoring.sinks.clickhouse.query_server import QueryFailed, query_store

PROBE = "bench_e2e_probe"
HEADER = "x-bench-probe"
PATHS = ("remote_write", "otlp", "scrape", "collector")


@dataclass
class PathLatency:
    """One ingest path's latencies (ms) and what they were measured over."""

    path: str
    e2e_ms: list[float] = field(default_factory=list)  # per probe sample
    after_close_ms: list[float] = field(default_factory=list)  # per window
    probes: int = 0  # probe samples received in the measured span
    missing: int = 0  # of those, not in a stored window by the deadline
    note: str = ""  # the path's own counts over the phase (retries, missed, unsent)


@dataclass
class E2EResult:
    window_ms: int
    lateness_ms: int
    flush_ms: int
    poll_s: float
    warmup_s: float
    paths: dict[str, PathLatency] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    """The value at rank ``floor(q * n)`` (nan when empty)."""
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


class _Arrivals:
    """ASGI middleware: the wall time each request with ``X-Bench-Probe: path:seq``
    reached the server (first arrival only)."""

    def __init__(self, app: Any, into: dict[tuple[str, int], float]) -> None:
        self.app = app
        self.into = into

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            t = time.time()
            for k, v in scope["headers"]:
                if k == HEADER.encode():
                    path, _, seq = v.decode().partition(":")
                    self.into.setdefault((path, int(seq)), t)
        await self.app(scope, receive, send)


class _StampedTransport(httpx.AsyncBaseTransport):
    """The scraper's transport: notes when a probe page's response headers arrived."""

    def __init__(self, into: dict[tuple[str, int], float]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.into = into

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        seq = resp.headers.get(HEADER)
        if seq is not None:
            self.into.setdefault(("scrape", int(seq)), time.time())
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Watch:
    """Polls the store for one series' aggregate rows; first-seen time per window end."""

    def __init__(
        self, d: LocalDeployment, where: str, window_ms: int, since_ms: int, poll_s: float
    ) -> None:
        self.sql = (
            "SELECT toUnixTimestamp64Milli(window_end), min, max, count FROM aggregates "
            f"WHERE {where} AND window_ms = {window_ms} "
            f"AND window_end > fromUnixTimestamp64Milli({since_ms})"
        )
        self.d = d
        self.poll_s = poll_s
        self.rows: dict[int, tuple[float, float, float, int]] = {}  # end -> (seen, min, max, n)
        self.failed = 0  # polls the store did not answer
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="bench-e2e-watch")
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.poll_s):
            try:  # a slow or busy store: poll again (the stored time is then later)
                answer = query_store("127.0.0.1", self.d.query_port, self.sql, timeout=10)
            except (QueryFailed, OSError):
                self.failed += 1
                continue
            if answer is None:
                self.failed += 1
                continue
            rows = answer["rows"]
            seen = time.time()
            for end, lo, hi, n in rows:
                if int(end) not in self.rows:
                    self.rows[int(end)] = (seen, float(lo), float(hi), int(n))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def _measure(
    name: str,
    receipts: dict[int, float],
    watch: _Watch,
    by_seq: bool,
    window_ms: int,
    lateness_ms: int,
    since: float,
    until: float,
    wait_s: float,
) -> PathLatency:
    """Join receipts (seq or timestamp -> wall time) with the stored windows."""
    res = PathLatency(name)
    measured = {k: t for k, t in receipts.items() if since <= t <= until}
    res.probes = len(measured)

    def window_of(key: int) -> int | None:
        if not by_seq:  # key is the sample's event time
            end = key - key % window_ms + window_ms
            return end if end in watch.rows else None
        for end, (_, lo, hi, _n) in watch.rows.items():
            if lo <= key <= hi:
                return end
        return None

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(window_of(k) is None for k in measured):
        time.sleep(0.2)
    watch.close()
    windows: set[int] = set()
    for key, t in measured.items():
        end = window_of(key)
        if end is None:
            res.missing += 1
            continue
        res.e2e_ms.append((watch.rows[end][0] - t) * 1000)
        windows.add(end)
    for end in windows:
        res.after_close_ms.append(watch.rows[end][0] * 1000 - (end + lateness_ms))
    return res


def _remote_write_body(series: int, seq: int, now_ms: int) -> bytes:
    req = WriteRequest()
    for i in range(series):
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value="node_cpu_seconds_total")
        ts.labels.add(name="cpu", value=str(i))
        ts.labels.add(name="instance", value="bench:9100")
        ts.labels.add(name="job", value="node")
        ts.samples.add(value=float(seq), timestamp=now_ms)
    p = req.timeseries.add()
    p.labels.add(name="__name__", value=PROBE)
    p.labels.add(name="path", value="remote_write")
    p.samples.add(value=float(seq), timestamp=now_ms)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def _otlp_body(series: int, seq: int, now_ns: int) -> bytes:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="b")))
    sm = rm.scope_metrics.add()
    metric = sm.metrics.add(name="app.queue.depth")
    for i in range(series):
        p = metric.gauge.data_points.add(time_unix_nano=now_ns, as_double=float(seq))
        p.attributes.append(KeyValue(key="shard", value=AnyValue(int_value=i)))
    probe = sm.metrics.add(name=PROBE)
    p = probe.gauge.data_points.add(time_unix_nano=now_ns, as_double=float(seq))
    p.attributes.append(KeyValue(key="path", value=AnyValue(string_value="otlp")))
    return req.SerializeToString()


def _receivers(
    d: LocalDeployment,
    cfg: _Config,
    progress: Callable[[str], None],
) -> list[PathLatency]:
    from monitoring.api.guard import Guard
    from monitoring.api.server import ApiServer
    from monitoring.ingest.receiver import from_settings
    from monitoring.sdk.producer import MetricsCollector

    registry = CollectorRegistry()
    collector = MetricsCollector(d.settings, source="bench-e2e", registry=registry)
    receiver = from_settings(d.settings, collector, registry)
    guard = Guard.for_bind("127.0.0.1", max_body_bytes=d.settings.receive.max_body_bytes)
    server = ApiServer(registry, "127.0.0.1", 0, guard=guard, mounts=receiver.routes(guard))
    arrivals: dict[tuple[str, int], float] = {}
    server.app.add_middleware(_Arrivals, into=arrivals)
    server.start()
    base = "http://{}:{}".format(*server.address)
    out = []
    try:
        for path, url, headers in (
            ("remote_write", "/api/v1/write", {
                "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                "X-Prometheus-Remote-Write-Version": "0.1.0"}),
            ("otlp", "/v1/metrics", {"Content-Type": "application/x-protobuf"}),
        ):  # fmt: skip
            progress(f"e2e {path}: a request of {cfg.series} samples every {cfg.every_s:g} s "
                     f"for {cfg.seconds:g} s")  # fmt: skip
            t0 = time.time()
            watch = _Watch(d, f"name = '{PROBE}' AND labels['path'] = '{path}'",
                           cfg.window_ms, int(t0 * 1000), cfg.poll_s)  # fmt: skip
            retries = 0
            with httpx.Client(timeout=30) as client:
                seq = 0
                t_next = time.monotonic()
                while time.time() - t0 < cfg.warmup_s + cfg.seconds + cfg.tail_s:
                    seq += 1
                    now_ns = time.time_ns()
                    body = (
                        _remote_write_body(cfg.series, seq, now_ns // 10**6)
                        if path == "remote_write"
                        else _otlp_body(cfg.series, seq, now_ns)
                    )
                    h = {**headers, HEADER: f"{path}:{seq}"}
                    while (
                        r := client.post(base + url, content=body, headers=h)
                    ).status_code == 503:
                        retries += 1
                        time.sleep(float(r.headers.get("retry-after", "1")) / 20)
                    if r.status_code not in (200, 204):
                        raise RuntimeError(f"{path}: status {r.status_code}: {r.text[:300]}")
                    t_next += cfg.every_s
                    time.sleep(max(0.0, t_next - time.monotonic()))
            collector.flush(30)
            mine = {seq: t for (p, seq), t in arrivals.items() if p == path}
            out.append(_measure(path, mine, watch, True, cfg.window_ms, cfg.lateness_ms,
                                t0 + cfg.warmup_s, t0 + cfg.warmup_s + cfg.seconds,
                                cfg.wait_s))  # fmt: skip
            out[-1].note = f"{seq} requests, {retries} retried after a 503"
    finally:
        server.stop()
        collector.close()
    return out


def _scrape(d: LocalDeployment, cfg: _Config, progress: Callable[[str], None]) -> PathLatency:
    from monitoring.ingest.outlet import Outlet
    from monitoring.ingest.scrape import Scraper
    from monitoring.ingest.scrape_config import ScrapeFile
    from monitoring.sdk.producer import MetricsCollector

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", f"from monitoring.bench.ingest_scrape import serve; "
         f"serve({port}, {cfg.series})"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    registry = CollectorRegistry()
    mc = MetricsCollector(d.settings, source="bench-e2e-scrape", registry=registry)
    try:
        from monitoring.bench.ingest_scrape import _wait_http

        _wait_http(f"http://127.0.0.1:{port}/metrics", server)
        interval = cfg.scrape_interval_s
        scrape_file = ScrapeFile.parse({
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [
                {"job_name": "bench", "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"shard": str(i)}}
                    for i in range(cfg.targets)]},
                {"job_name": "probe", "metrics_path": "/probe",
                 "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
            ],
        })  # fmt: skip
        receipts: dict[tuple[str, int], float] = {}
        outlet = Outlet(mc, registry, "scrape", give_up_s=interval)
        transport = _StampedTransport(receipts)
        scraper = Scraper(scrape_file, outlet, d.settings.scrape, registry, transport=transport)
        progress(f"e2e scrape: {cfg.targets} targets x {cfg.series} series and a probe "
                 f"target every {interval:g} s for {cfg.seconds:g} s")  # fmt: skip
        t0 = time.time()
        watch = _Watch(d, f"name = '{PROBE}' AND labels['path'] = 'scrape'", cfg.window_ms,
                       int(t0 * 1000), cfg.poll_s)  # fmt: skip

        missed: list[int] = []

        async def run() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(scraper.run(stop))
            await asyncio.sleep(cfg.warmup_s)
            missed.append(scraper.missed_total)
            await asyncio.sleep(cfg.seconds)
            missed.append(scraper.missed_total)
            await asyncio.sleep(max(cfg.tail_s, 2 * interval))
            stop.set()
            await task

        asyncio.run(run())
        mc.flush(30)
        mine = {seq: t for (_, seq), t in receipts.items()}
        res = _measure("scrape", mine, watch, True, cfg.window_ms, cfg.lateness_ms,
                       t0 + cfg.warmup_s, t0 + cfg.warmup_s + cfg.seconds,
                       cfg.wait_s)  # fmt: skip
        res.note = (f"{missed[1] - missed[0]} missed intervals, {missed[0]} in the warm-up; "
                    f"{_unsent(registry)} unsent")  # fmt: skip
        return res
    finally:
        mc.close(30)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _collector(d: LocalDeployment, cfg: _Config, progress: Callable[[str], None]) -> PathLatency:
    from monitoring.ingest.outlet import Outlet
    from monitoring.ingest.system import CollectLoop, SystemCollector
    from monitoring.sdk.producer import MetricsCollector

    registry = CollectorRegistry()
    mc = MetricsCollector(d.settings, source="bench-e2e-system", registry=registry)
    collector = SystemCollector(d.settings.system_collector)
    every = cfg.collect_interval_s
    loop = CollectLoop(collector, Outlet(mc, registry, "system", give_up_s=every), every,
                       {"job": "node", "instance": "bench"}, registry)  # fmt: skip
    progress(f"e2e collector: a collection every {every:g} s for {cfg.seconds:g} s")
    t0 = time.time()
    watch = _Watch(d, "name = 'node_load1'", cfg.window_ms, int(t0 * 1000), cfg.poll_s)
    receipts: dict[int, float] = {}
    try:
        t_next = time.monotonic()
        while time.time() - t0 < cfg.warmup_s + cfg.seconds + max(cfg.tail_s, 2 * every):
            t = time.time()
            ts = int(t * 1000)
            loop.once(ts)
            receipts[ts] = t
            t_next += every
            time.sleep(max(0.0, t_next - time.monotonic()))
        mc.flush(30)
        res = _measure("collector", receipts, watch, False, cfg.window_ms, cfg.lateness_ms,
                       t0 + cfg.warmup_s, t0 + cfg.warmup_s + cfg.seconds,
                       cfg.wait_s)  # fmt: skip
        res.note = f"{len(receipts)} collections, {_unsent(registry)} unsent"
        return res
    finally:
        mc.close(30)
        collector.close()


def _unsent(registry: CollectorRegistry) -> int:
    """Samples an outlet could not hand to the SDK (its buffer stayed full)."""
    return int(
        sum(
            s.value
            for m in registry.collect()
            if m.name == "monitoring_ingest_samples"
            for s in m.samples
            if s.name.endswith("_total") and s.labels.get("outcome") == "unsent"
        )
    )


@dataclass(frozen=True)
class _Config:
    seconds: float
    window_ms: int
    lateness_ms: int
    series: int
    targets: int
    every_s: float
    scrape_interval_s: float
    collect_interval_s: float
    poll_s: float
    warmup_s: float
    wait_s: float = 30.0

    @property
    def tail_s(self) -> float:
        """Load after the measured span: the last probes' windows close by watermark."""
        return (self.lateness_ms + 2 * self.window_ms) / 1000 + 1


def run(
    settings: Settings,
    seconds: float = 20.0,
    window_s: float = 1.0,
    lateness_s: float = 1.0,
    series: int = 1_000,
    targets: int = 4,
    every_s: float = 0.25,
    scrape_interval_s: float = 1.0,
    collect_interval_s: float = 1.0,
    poll_s: float = 0.1,
    warmup_s: float = 5.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> E2EResult:
    """Start a worker and a store, run each ingest path for ``warmup_s`` (not measured:
    series seen for the first time cost more) and ``seconds``, measure."""
    cfg = _Config(seconds, round(window_s * 1000), round(lateness_s * 1000), series, targets,
                  every_s, scrape_interval_s, collect_interval_s, poll_s, warmup_s)  # fmt: skip
    flush_ms = round(settings.storage.flush_interval.total_seconds() * 1000)
    directory = Path(tempfile.mkdtemp(prefix="monitoring-bench-e2e-"))
    d = LocalDeployment(
        settings.kafka.bootstrap_servers,
        directory,
        aggregation__windows=f'["{cfg.window_ms}ms"]',
        aggregation__allowed_lateness=f"{cfg.lateness_ms}ms",
        alerting__window=f"{cfg.window_ms}ms",
        anomaly__enabled="false",
        storage__flush_interval=f"{flush_ms}ms",
    )
    res = E2EResult(cfg.window_ms, cfg.lateness_ms, flush_ms, poll_s, warmup_s)
    try:
        progress(f"e2e: worker and store ({directory}), {cfg.window_ms} ms windows, "
                 f"{cfg.lateness_ms} ms allowed lateness, store flush {flush_ms} ms")  # fmt: skip
        d.start_store()
        d.start("worker", "worker")
        _warm_up(d)
        for r in _receivers(d, cfg, progress):
            res.paths[r.path] = r
        res.paths["scrape"] = _scrape(d, cfg, progress)
        res.paths["collector"] = _collector(d, cfg, progress)
    finally:
        d.stop_all()
        _delete_topics(d)
    shutil.rmtree(directory, ignore_errors=True)  # kept, with the logs, when it failed
    return res


def _warm_up(d: LocalDeployment, timeout: float = 180) -> None:
    """Send samples until the worker's first aggregate is stored: both are running."""
    from monitoring.sdk.producer import MetricsCollector

    with MetricsCollector(d.settings, source="bench-e2e-warm", registry=CollectorRegistry()) as mc:

        def stored() -> bool:
            for p in range(4 * d.settings.kafka.samples_partitions):
                mc.record("bench_e2e_warm", 1.0, {"p": str(p)})
            mc.flush(10)
            sql = "SELECT count() FROM aggregates WHERE name = 'bench_e2e_warm'"
            return int(d.query(sql)[0][0]) > 0

        d.wait(stored, timeout, "the worker's first aggregate stored")


def _delete_topics(d: LocalDeployment) -> None:
    from monitoring.runtime.admin import delete_topics, list_topics

    kafka = d.settings.kafka
    with contextlib.suppress(Exception):  # cleanup only: the numbers are taken
        delete_topics(kafka, list_topics(kafka, prefix=d.prefix))


def report(res: E2EResult) -> list[str]:
    """One line per path: receipt -> stored p50/p99, after the window could close."""
    lines = []
    for name in PATHS:
        p = res.paths.get(name) or PathLatency(name)
        lines.append(
            f"e2e {name}: {p.probes} samples followed ({p.missing} not stored), "
            f"{len(p.after_close_ms)} windows of {res.window_ms} ms: receipt -> stored "
            f"aggregate p50/p99 {percentile(p.e2e_ms, 0.5):.0f}/{percentile(p.e2e_ms, 0.99):.0f}"
            f" ms; after window end + {res.lateness_ms} ms lateness p50/p99 "
            f"{percentile(p.after_close_ms, 0.5):.0f}/{percentile(p.after_close_ms, 0.99):.0f} ms"
            + (f" ({p.note})" if p.note else "")
        )
    return lines


def summary_fields(res: E2EResult) -> str:
    """``<path>_e2e_p99_ms=<n>`` for every path (nan when nothing was measured)."""
    p99 = {n: percentile(p.e2e_ms, 0.99) for n, p in res.paths.items()}
    return " ".join(f"{n}_e2e_p99_ms={p99.get(n, float('nan')):.0f}" for n in PATHS)
