"""``monitoring bench query``: how fast the store answers the standard query protocols.

A chDB store in a temporary directory gets ``series`` series scraped every ``scrape``
over ``days`` days (the default: 250 series x 7 days x 15 s = 10.1 M raw samples),
generated straight into ClickHouse (``INSERT ... SELECT ... FROM numbers()``), and
their 10 s and 1 min aggregates (``aggregate_samples``: what the aggregation agent
emits, computed in ClickHouse), then ``OPTIMIZE ... FINAL`` (a store that has run for
days has merged its parts). Series: 100 counters ``bench_requests_total``, 20
``bench_latency_seconds_bucket`` (``le``), the rest gauges.

The store's own API server (the store's routes, guard and query queue) then answers,
over HTTP from this process, ``repeat`` times each after a warm-up (timed until the
whole answer is received):

1. ``query_range`` over 1 h at 15 s: ``rate(bench_requests_total[1m])`` (100 series,
   raw samples);
2. ``query_range`` over 7 days at 10 min (Grafana's step for a week on a 1,000-point
   panel): ``rate(bench_requests_total[10m])`` (100 series, read from 1 min aggregates);
3. ``query_range`` over 1 h at 15 s: ``histogram_quantile(0.99, sum by (le)
   (rate(bench_latency_seconds_bucket[5m])))`` (20 bucket series);
4. one SQL ``SELECT`` through ClickHouse's HTTP interface on the same port (``/?query=``
   when the store serves it, else ``POST /query``) and in-process through the
   read-only gate: ``ch_http_overhead_ms`` is the difference of their medians.

The last line printed is ``range_1h_p99_ms=<n> range_7d_p99_ms=<n>
histogram_quantile_p99_ms=<n> ch_http_overhead_ms=<n>``.
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
from clickhouse_connect.driver.client import Client

COUNTERS = 100
BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
           "10", "15", "20", "30", "45", "60", "90", "120", "300", "+Inf")  # fmt: skip
SQL = (
    "SELECT series_id, count() AS n, avg(value) AS mean FROM samples "
    "WHERE ts >= now() - INTERVAL 1 HOUR GROUP BY series_id ORDER BY series_id"
)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank); NaN when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def aggregate_samples(client: Client, window_ms: int) -> None:
    """Insert the tumbling windows of ``window_ms`` over every raw sample into
    ``aggregates``, as the aggregation agent would emit them (computed in ClickHouse),
    with Aggregate v2's counter fields: a sample's step is ``v - prev`` (``v`` after a
    reset, 0 for a series' first sample) and a window's ``increase`` the sum of its
    samples' steps (docs/aggregation.md)."""
    s = window_ms // 1000
    client.command(
        "INSERT INTO aggregates (series_id, series, name, labels, window_ms, window_start, "
        "window_end, count, sum, min, max, mean, last, p50, p90, p99, closed_by, version, "
        "first, increase, resets) "
        f"SELECT series_id, any(r.series), any(r.name), "
        "CAST(any(r.labels), 'Map(LowCardinality(String), String)'), "
        f"{window_ms}, ws, ws + toIntervalSecond({s}), count(), sum(value), min(value), "
        "max(value), avg(value), argMax(value, ts), quantile(0.5)(value), "
        "quantile(0.9)(value), quantile(0.99)(value), 'watermark', 1, argMin(value, ts), "
        "sum(if(d >= 0, d, value)), countIf(d < 0) "
        f"FROM (SELECT series_id, ts, value, toStartOfInterval(ts, toIntervalSecond({s})) AS ws, "
        "value - lagInFrame(value, 1, value) OVER (PARTITION BY series_id ORDER BY ts "
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS d FROM samples) AS x "
        "JOIN (SELECT series_id, any(series) AS series, any(name) AS name, "
        "any(labels) AS labels FROM series GROUP BY series_id) AS r USING series_id "
        "GROUP BY series_id, ws SETTINGS max_partitions_per_insert_block = 0"
    )


def build(client: Client, series: int, days: float, scrape_s: int, now_s: int) -> int:
    """Series rows, raw samples and aggregates; returns the raw sample count."""
    points = int(days * 86_400 // scrape_s)
    start = now_s - points * scrape_s
    gauges = series - COUNTERS - len(BUCKETS)
    if gauges < 0:
        raise ValueError(f"series must be at least {COUNTERS + len(BUCKETS)}")
    les = "[" + ",".join(f"'{le}'" for le in BUCKETS) + "]"
    # series_id: 1..100 counters, 101..120 buckets, the rest gauges
    client.command(
        "INSERT INTO series (series_id, series, name, labels, kind, unit, first_seen, last_seen) "
        "SELECT sid, concat(n, '{', arrayStringConcat(arrayMap((k, v) -> "
        "concat(k, '=\"', v, '\"'), mapKeys(l), mapValues(l)), ','), '}'), n, l, kind, '', "
        f"toDateTime64({start}, 3), toDateTime64({now_s}, 3) FROM (SELECT number + 1 AS sid, "
        f"multiIf(sid <= {COUNTERS}, 'bench_requests_total', "
        f"sid <= {COUNTERS + len(BUCKETS)}, 'bench_latency_seconds_bucket', 'bench_gauge') AS n, "
        f"multiIf(sid <= {COUNTERS}, map('instance', concat('i', toString(sid))), "
        f"sid <= {COUNTERS + len(BUCKETS)}, "
        f"map('job', 'api', 'le', {les}[sid - {COUNTERS}]), "
        "map('instance', concat('g', toString(sid)))) AS l, "
        f"multiIf(sid <= {COUNTERS}, 'COUNTER', sid <= {COUNTERS + len(BUCKETS)}, "
        f"'HISTOGRAM_BUCKET', 'GAUGE') AS kind FROM numbers({series}))"
    )
    # counters grow by a per-series rate; bucket i holds a growing share of the count
    client.command(
        "INSERT INTO samples (series_id, ts, value) "
        f"SELECT (number % {series}) + 1 AS sid, "
        f"toDateTime64({start} + intDiv(number, {series}) * {scrape_s}, 3), "
        f"multiIf(sid <= {COUNTERS}, intDiv(number, {series}) * (1 + sid % 7), "
        f"sid <= {COUNTERS + len(BUCKETS)}, "
        f"floor(intDiv(number, {series}) * 50 * (sid - {COUNTERS}) / {len(BUCKETS)}), "
        "50 + 10 * sin(number / 1000.0)) "
        f"FROM numbers({series * points}) "
        "SETTINGS max_partitions_per_insert_block = 0"
    )
    for window_ms in (10_000, 60_000):
        aggregate_samples(client, window_ms)
    # A store that has run for days has merged its parts: so does this one before the
    # measurements (otherwise the engine's background merges compete with them).
    for table in ("series", "samples", "aggregates"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    return series * points


@dataclass
class QueryBench:
    """Latencies in ms per measured query."""

    samples: int = 0
    aggregates: int = 0
    build_s: float = 0.0
    ms: dict[str, list[float]] = field(default_factory=dict)
    ch_path: str = ""
    warnings: dict[str, list[str]] = field(default_factory=dict)

    def p(self, name: str, q: float) -> float:
        return percentile(self.ms.get(name, []), q)

    def summary_line(self) -> str:
        overhead = statistics.median(self.ms["ch_http"]) - statistics.median(self.ms["ch_inproc"])
        return (
            f"range_1h_p99_ms={self.p('range_1h', 0.99):.1f} "
            f"range_7d_p99_ms={self.p('range_7d', 0.99):.1f} "
            f"histogram_quantile_p99_ms={self.p('histogram_quantile', 0.99):.1f} "
            f"ch_http_overhead_ms={overhead:.2f}"
        )


def _timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run(
    series: int = 250,
    days: float = 7.0,
    scrape_s: int = 15,
    repeat: int = 30,
    progress: Callable[[str], None] = lambda _m: None,
) -> QueryBench:
    """Build the store, serve it, measure; the directory is removed afterwards."""
    from prometheus_client import CollectorRegistry

    from monitoring.config import QueryLimits, Settings
    from monitoring.query import clickhouse_http, prometheus_api
    from monitoring.sinks.clickhouse.connection import connect, connect_read_only
    from monitoring.sinks.clickhouse.migrations import migrate
    from monitoring.sinks.clickhouse.query_server import QueryServer

    res = QueryBench()
    workdir = Path(tempfile.mkdtemp(prefix="bench-query-"))
    storage = Settings.load(None).storage.model_copy(update={"dsn": f"chdb://{workdir}/chdb"})
    limits = QueryLimits(max_result_rows=10_000_000, max_result_bytes=1 << 30)
    client = connect(storage.dsn)
    reader = None
    server = None
    try:
        migrate(client, storage)
        now_s = int(time.time()) // 60 * 60
        t0 = time.perf_counter()
        progress(f"generating {series} series x {days:g} d at {scrape_s} s ...")
        res.samples = build(client, series, days, scrape_s, now_s)
        res.aggregates = int(client.query("SELECT count() FROM aggregates").result_rows[0][0])
        res.build_s = time.perf_counter() - t0
        progress(
            f"{res.samples:,} raw samples, {res.aggregates:,} aggregates in {res.build_s:.0f} s"
        )
        reader = connect_read_only(storage.dsn, limits)
        server = QueryServer(
            reader, CollectorRegistry(), "127.0.0.1", 0, limits=limits,
            protocols=[clickhouse_http.routes, prometheus_api.routes],
        ).start()  # fmt: skip
        url = "http://{}:{}".format(*server.address)
        http = httpx.Client(base_url=url, timeout=120)
        end = now_s
        cases = {
            "range_1h": ("rate(bench_requests_total[1m])", end - 3600, 15),
            "range_7d": ("rate(bench_requests_total[10m])", end - 7 * 86_400, 600),
            "histogram_quantile": (
                "histogram_quantile(0.99, sum by (le) (rate(bench_latency_seconds_bucket[5m])))",
                end - 3600,
                15,
            ),
        }
        for name, (expr, start, step) in cases.items():
            params = {"query": expr, "start": start, "end": end, "step": step}

            def ask(p: dict[str, Any] = params) -> None:
                # timed until the whole answer is received (as curl's time_total); the
                # client's JSON parsing is not the server's latency
                resp = http.get("/api/v1/query_range", params=p)
                if resp.status_code != 200:
                    raise RuntimeError(f"{p['query']}: {resp.text[:500]}")
                if p["query"] not in res.warnings:
                    res.warnings[p["query"]] = resp.json().get("warnings", [])

            progress(f"{name}: {expr} ...")
            res.ms[name] = _timed(ask, repeat)
        res.ch_path = _ch_path(http)
        progress(f"SQL over HTTP ({res.ch_path}) and in-process ...")
        res.ms["ch_http"] = _timed(lambda: _ch_http(http, res.ch_path), repeat)
        res.ms["ch_inproc"] = _timed(lambda: server.queries.run(SQL), repeat)
        http.close()
    finally:
        if server is not None:
            server.stop()
        if reader is not None:
            reader.close()
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return res


def _ch_path(http: httpx.Client) -> str:
    """``/?query=`` if the store speaks ClickHouse's HTTP interface, else ``/query``."""
    resp = http.get("/", params={"query": "SELECT 1"})
    return "/?query=" if resp.status_code == 200 and resp.text.strip() == "1" else "/query"


def _ch_http(http: httpx.Client, path: str) -> None:
    if path == "/?query=":
        resp = http.get("/", params={"query": SQL, "default_format": "JSONCompact"})
    else:
        resp = http.post("/query", json={"sql": SQL})
    if resp.status_code != 200:
        raise RuntimeError(f"SQL over HTTP: {resp.status_code} {resp.text[:300]}")
