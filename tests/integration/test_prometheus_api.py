"""The Prometheus HTTP API on a chDB store, with promtool as the client and a real
Prometheus 2.42 as the oracle.

One module-wide world: about 30 series over 2 h at 15 s (counters with resets, gauges,
one that stops, histogram buckets, a gap) written through the store's Writer, their
1-minute aggregates, and the same samples in a real Prometheus built with ``promtool
tsdb create-blocks-from openmetrics``. Each expression of :data:`EXPRESSIONS` is asked of
both, instant (at two times) and range, and the answers compared with a float
tolerance; :data:`MUST_DIFFER` lists where they must not agree, and why.

The module needs no Kafka broker (``no_broker`` keeps the session's broker fixture
away; it starts none).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fixtures.prometheus import STEP_MS, PrometheusServer, dataset, write_openmetrics
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.bench.query import aggregate_samples
from monitoring.config import QueryLimits, Settings
from monitoring.metrics.samples import Sample
from monitoring.query import prometheus_api
from monitoring.sinks.clickhouse.connection import connect, connect_read_only
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.query_server import QueryServer
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer

pytestmark = pytest.mark.no_broker

HOUR = 3_600_000
BASE_MS = int(time.time() * 1000) // HOUR * HOUR - 3 * HOUR  # raw retention covers it
T_LATE = BASE_MS + 100 * 60_000 + 7_000  # off the 15 s grid
T_STALE = BASE_MS + 62 * 60_000  # node_temperature_celsius{instance="i5"} stopped at 60 m
RANGE = (BASE_MS + 5 * 60_000, BASE_MS + 125 * 60_000, 60_000)  # runs past the data's end
ARCHIVE_MS = BASE_MS - 10 * 24 * HOUR  # only aggregates reach back this far
RESET_WINDOW = 100  # archived_total resets inside this window: last 1000, increase 500
TOKEN = "prom-t0ken-9d1c"
LIMITS = QueryLimits(timeout="20s", max_result_rows=1_000_000, max_result_bytes=256 << 20)


@dataclass
class World:
    store: str
    prom: str
    secured: str


def _write(client: Any, base_ms: int) -> None:
    writer = Writer(client, StoreMetrics(CollectorRegistry()))
    for s in dataset(base_ms):
        writer.add_samples(
            Sample(s.key, s.name, s.labels, t, v, s.kind)
            for t, v in zip(s.t_ms.tolist(), s.values.tolist(), strict=True)
        )
    writer.flush()
    aggregate_samples(client, 60_000)
    # A counter kept only as aggregates (its raw samples are past the retention), with
    # Aggregate v2's increase: window n ends at n + 1 min, last 10 n, increase 10, but
    # one window hides a reset (its last alone cannot show it).
    day = 24 * 60
    client.command(
        "INSERT INTO series (series_id, series, name, labels, kind, unit, first_seen, "
        "last_seen) VALUES (42, 'archived_total{job=\"old\"}', 'archived_total', "
        f"{{'job': 'old'}}, 'COUNTER', '', fromUnixTimestamp64Milli({ARCHIVE_MS}), "
        f"fromUnixTimestamp64Milli({ARCHIVE_MS + day * 60_000}))"
    )
    client.command(
        "INSERT INTO aggregates (series_id, series, name, labels, window_ms, window_start, "
        "window_end, count, sum, min, max, mean, last, p50, p90, p99, closed_by, version, "
        "increase) "
        "SELECT 42, 'archived_total{job=\"old\"}', 'archived_total', map('job', 'old'), 60000, "
        f"fromUnixTimestamp64Milli({ARCHIVE_MS} + number * 60000), "
        f"fromUnixTimestamp64Milli({ARCHIVE_MS} + (number + 1) * 60000), 4, 0, 0, 0, 0, "
        f"number * 10, 0, 0, 0, 'watermark', 1, if(number = {RESET_WINDOW}, 500, 10) "
        f"FROM numbers({day})"
    )  # fmt: skip
    # A gauge whose window 30 was emitted twice: the later version (last 1000) counts.
    client.command(
        "INSERT INTO series (series_id, series, name, labels, kind, unit, first_seen, "
        "last_seen) VALUES (43, 'archived_gauge', 'archived_gauge', map(), 'GAUGE', '', "
        f"fromUnixTimestamp64Milli({ARCHIVE_MS}), fromUnixTimestamp64Milli({ARCHIVE_MS + HOUR}))"
    )
    for version, last in ((1, "number"), (3, "if(number = 30, 1000, number)"), (2, "-1")):
        client.command(
            "INSERT INTO aggregates (series_id, series, name, labels, window_ms, window_start, "
            "window_end, count, sum, min, max, mean, last, p50, p90, p99, closed_by, version) "
            "SELECT 43, 'archived_gauge', 'archived_gauge', map(), 60000, "
            f"fromUnixTimestamp64Milli({ARCHIVE_MS} + number * 60000), "
            f"fromUnixTimestamp64Milli({ARCHIVE_MS} + (number + 1) * 60000), 1, 0, 0, 0, 0, "
            f"{last}, 0, 0, 0, 'watermark', {version} "
            f"FROM numbers({60 if version != 2 else 31})"
        )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("prometheus_api")
    base = Settings.load(None)
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp / 'chdb'}"})
    client = connect(storage.dsn)
    migrate(client, storage)
    _write(client, BASE_MS)
    write_openmetrics(dataset(BASE_MS), tmp / "samples.om")
    prom = PrometheusServer(tmp / "samples.om", tmp / "prometheus")
    reader = connect_read_only(storage.dsn, LIMITS)
    servers: list[QueryServer] = []
    try:
        for guard in (None, Guard.for_bind("127.0.0.1", token=TOKEN)):
            servers.append(
                QueryServer(
                    reader, CollectorRegistry(), "127.0.0.1", 0, limits=LIMITS, guard=guard,
                    protocols=[prometheus_api.routes],
                ).start()
            )  # fmt: skip
        prom.start()
        urls = ["http://{}:{}".format(*s.address) for s in servers]
        yield World(urls[0], prom.url, urls[1])
    finally:
        prom.stop()
        for s in servers:
            s.stop()
        reader.close()
        client.close()


def ask(url: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{url}{path}", params=params, timeout=60)


def ok(url: str, path: str, **params: Any) -> dict[str, Any]:
    resp = ask(url, path, **params)
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", (url, params, body)
    return body


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _points(result: dict[str, Any]) -> dict[Any, list[tuple[float, float]]]:
    """A result as ``labels -> [(t, v)]`` (scalars under the key ``"scalar"``)."""
    kind, res = result["resultType"], result["result"]
    if kind in ("scalar", "string"):
        return {kind: [(float(res[0]), float(res[1]) if kind == "scalar" else res[1])]}
    out = {}
    for item in res:
        key = tuple(sorted(item["metric"].items()))
        pts = item["values"] if kind == "matrix" else [item["value"]]
        out[key] = [(float(t), float(v)) for t, v in pts]
    return out


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """What differs between two ``data`` objects (empty: the same answer)."""
    if ours["resultType"] != theirs["resultType"]:
        return [f"result type {ours['resultType']} != {theirs['resultType']}"]
    a, b = _points(ours), _points(theirs)
    out = [f"only ours: {k}" for k in a.keys() - b.keys()]
    out += [f"only Prometheus: {k}" for k in b.keys() - a.keys()]
    for k in a.keys() & b.keys():
        pa, pb = a[k], b[k]
        if [t for t, _ in pa] != [t for t, _ in pb]:
            out.append(f"{k}: timestamps differ ({len(pa)} vs {len(pb)} points)")
        elif not all(
            _close(x, y) if isinstance(x, float) else x == y
            for (_, x), (_, y) in zip(pa, pb, strict=True)
        ):
            bad = next((t, x, y) for (t, x), (_, y) in zip(pa, pb, strict=True) if not _close(x, y))
            out.append(f"{k}: values differ, first at {bad}")
    return out[:10]


# Expressions both must answer alike, instant and range.
EXPRESSIONS = [
    "http_requests_total",
    'http_requests_total{method="get"}',
    'http_requests_total{instance=~"i[0-2]",method!="post"}',
    'http_requests_total{instance!~"i1|i2"}',
    '{__name__=~"node_.*"}',
    'up{instance=~".*1"}',
    "queue_depth",
    "http_requests_total offset 30m",
    "rate(http_requests_total[5m])",
    "irate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "rate(http_requests_total[5m] offset 10m)",
    "resets(http_requests_total[30m])",
    "changes(up[1h])",
    "delta(node_temperature_celsius[10m])",
    "deriv(node_temperature_celsius[10m])",
    "predict_linear(node_temperature_celsius[30m], 600)",
    "avg_over_time(node_temperature_celsius[10m])",
    "max_over_time(node_temperature_celsius[10m])",
    "min_over_time(node_temperature_celsius[10m])",
    "sum_over_time(up[10m])",
    "count_over_time(node_temperature_celsius[10m])",
    "last_over_time(node_temperature_celsius[10m])",
    "quantile_over_time(0.9, node_temperature_celsius[15m])",
    "stddev_over_time(node_temperature_celsius[10m])",
    "sum(rate(http_requests_total[5m]))",
    "sum by (instance) (rate(http_requests_total[5m]))",
    "avg by (method) (http_requests_total)",
    "max without (method) (http_requests_total)",
    "count by (job) (up)",
    "count(node_temperature_celsius)",
    "stddev by (zone) (node_temperature_celsius)",
    "quantile(0.5, node_temperature_celsius)",
    "topk(3, rate(http_requests_total[5m]))",
    "bottomk(2, node_temperature_celsius)",
    "topk by (instance) (1, http_requests_total)",
    "group by (instance) (up)",
    'count_values("state", up)',
    "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(request_duration_seconds_bucket[10m]))",
    "rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])",
    "node_temperature_celsius > 22",
    "node_temperature_celsius > bool 22",
    "-http_requests_total % 7",
    "http_requests_total and on(instance) (up == 1)",
    "http_requests_total unless on(instance) (up == 0)",
    "node_temperature_celsius or up",
    "rate(http_requests_total[5m]) * on(instance) group_left(zone) node_temperature_celsius",
    "node_temperature_celsius / on(instance) group_right(zone) rate(http_requests_total[5m])",
    'label_replace(up, "host", "$1", "instance", "i(.*)")',
    'label_replace(up, "host", "$\u00b2-$1\u0661-${1}x-$$", "instance", "i(.*)")',  # Go's names
    'label_replace(up, "host", "$h1x-${h1}x", "instance", "(?P<h1>i.*)")',
    'label_join(up, "id", "-", "job", "instance")',
    "max_over_time(rate(http_requests_total[5m])[30m:1m])",
    "avg_over_time(node_temperature_celsius[30m:5m])",
    "abs(delta(node_temperature_celsius[5m]))",
    "clamp_max(round(node_temperature_celsius), 22)",
    "sqrt(rate(http_requests_total[5m])) + ln(up)",
    "timestamp(node_temperature_celsius)",
    "sum(up) / count(up)",
    "scalar(sum(up))",
    "vector(1) + 2",
    "time()",
    "absent(nonexistent_metric)",
    "absent(up)",
]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_instant_queries_match_prometheus(world: World, expr: str) -> None:
    for t in (T_LATE, T_STALE):
        ours = ok(world.store, "/api/v1/query", query=expr, time=t / 1000)
        theirs = ok(world.prom, "/api/v1/query", query=expr, time=t / 1000)
        assert differences(ours["data"], theirs["data"]) == [], (expr, t)


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_range_queries_match_prometheus(world: World, expr: str) -> None:
    start, end, step = RANGE
    params = {"query": expr, "start": start / 1000, "end": end / 1000, "step": step / 1000}
    ours = ok(world.store, "/api/v1/query_range", **params)
    theirs = ok(world.prom, "/api/v1/query_range", **params)
    assert differences(ours["data"], theirs["data"]) == [], expr
    assert "warnings" not in ours  # raw samples answered: nothing to say


@pytest.mark.parametrize(
    "expr",
    [
        "node_temperature_celsius",
        "http_requests_total",
        "rate(http_requests_total[5m])",
        "sum by (method) (http_requests_total)",
    ],
)
def test_the_grid_format_is_the_matrix_on_the_query_s_grid(world: World, expr: str) -> None:
    """``format=grid`` (ours, for the UI): each series' value strings at every step,
    ``null`` where the matrix has no point, and no timestamps."""
    start, end, step = RANGE
    params = {"query": expr, "start": start / 1000, "end": end / 1000, "step": step / 1000}
    pairs = ok(world.store, "/api/v1/query_range", **params)
    grid = ok(world.store, "/api/v1/query_range", **params, format="grid")
    assert pairs["data"]["result"], expr  # the data reach into the range
    assert (grid["data"]["start_ms"], grid["data"]["step_ms"]) == (start, step)
    n = (end - start) // step + 1
    want = []
    for item in pairs["data"]["result"]:
        v: list[str | None] = [None] * n
        for t, x in item["values"]:
            v[round(t * 1000 - start) // step] = x
        want.append({"metric": item["metric"], "v": v})
    assert grid["data"]["result"] == want
    if expr == "node_temperature_celsius":  # i5 stopped at 60 m: its gaps are kept
        assert any(None in item["v"] for item in want)
    assert grid.get("warnings") == pairs.get("warnings")


def test_sparse_series_are_answered_as_the_matrix_not_a_grid_of_nulls(world: World) -> None:
    """A grid writes every step: 10,000 series of one point each over 11,000 steps would
    be 550 MB of ``null``; past twice the points' cells the matrix answers instead."""
    start = BASE_MS + 5 * 60_000
    params = {
        "query": "http_requests_total unless on() (vector(time() % 100) > 0)",  # 1 step in 100
        "start": start / 1000, "end": (start + 10_999_000) / 1000, "step": 1,
    }  # fmt: skip
    pairs = ok(world.store, "/api/v1/query_range", **params)
    grid = ok(world.store, "/api/v1/query_range", **params, format="grid")
    assert len(pairs["data"]["result"]) > 1
    assert "start_ms" not in grid["data"] and grid == pairs


def test_a_format_other_than_grid_or_on_an_instant_query_is_bad_data(world: World) -> None:
    start, end, step = RANGE
    ranged = {"query": "up", "start": start / 1000, "end": end / 1000, "step": step / 1000}
    for path, params in (
        ("/api/v1/query_range", {**ranged, "format": "csv"}),
        ("/api/v1/query", {"query": "up", "time": end / 1000, "format": "grid"}),
    ):
        assert "format" in _error(ask(world.store, path, **params), 400, "bad_data")


# Where the store must answer differently, and why.
MUST_DIFFER = [
    pytest.param(
        "node_temperature_celsius", 600_000,
        id="step 10m reads 1m aggregates: each point is the last value of the minute "
        "before it (at the window's end), not the sample at that instant",
    ),
    pytest.param(
        "rate(http_requests_total[30m])", 600_000,
        id="step 10m reads 1m aggregates: rate over one point a minute extrapolates "
        "differently from rate over one every 15 s",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "step_ms"), MUST_DIFFER)
def test_answers_that_must_differ(world: World, expr: str, step_ms: int) -> None:
    start, end = BASE_MS + HOUR, BASE_MS + 2 * HOUR
    params = {"query": expr, "start": start / 1000, "end": end / 1000, "step": step_ms / 1000}
    ours = ok(world.store, "/api/v1/query_range", **params)
    theirs = ok(world.prom, "/api/v1/query_range", **params)
    assert differences(ours["data"], theirs["data"])
    assert any("aggregates" in w for w in ours["warnings"])


def test_long_steps_read_the_last_value_of_each_window(world: World) -> None:
    start, end = BASE_MS + HOUR, BASE_MS + 2 * HOUR
    body = ok(
        world.store, "/api/v1/query_range", query='node_temperature_celsius{instance="i0"}',
        start=start / 1000, end=end / 1000, step="10m",
    )  # fmt: skip
    (series,) = body["data"]["result"]
    raw = next(
        s for s in dataset(BASE_MS)
        if s.name == "node_temperature_celsius" and s.labels["instance"] == "i0"
    )  # fmt: skip
    by_t = dict(zip(raw.t_ms.tolist(), raw.values.tolist(), strict=True))
    expected = [by_t[t - STEP_MS] for t in range(start, end + 1, 600_000)]
    assert [float(v) for _, v in series["values"]] == expected
    assert "1m window" in body["warnings"][0]


def test_ranges_past_the_raw_retention_read_aggregates(world: World) -> None:
    start = ARCHIVE_MS + HOUR
    body = ok(
        world.store, "/api/v1/query_range", query="archived_total",
        start=start / 1000, end=(start + 10 * 60_000) / 1000, step=60,
    )  # fmt: skip
    (series,) = body["data"]["result"]
    assert series["metric"] == {"__name__": "archived_total", "job": "old"}
    # window n ends at ARCHIVE_MS + (n + 1) min with last = 10 n
    assert [float(v) for _, v in series["values"]] == [590.0 + 10 * k for k in range(11)]
    assert any("raw samples are kept 7d" in w for w in body["warnings"])
    rate = ok(world.store, "/api/v1/query", query="rate(archived_total[10m])",
              time=(start + 10 * 60_000) / 1000)  # fmt: skip
    assert float(rate["data"]["result"][0]["value"][1]) == pytest.approx(10 / 60)


def test_a_window_emitted_again_counts_in_its_latest_version(world: World) -> None:
    body = ok(
        world.store, "/api/v1/query_range", query="archived_gauge",
        start=(ARCHIVE_MS + 29 * 60_000) / 1000, end=(ARCHIVE_MS + 33 * 60_000) / 1000, step=60,
    )  # fmt: skip
    (series,) = body["data"]["result"]
    assert [float(v) for _, v in series["values"]] == [28.0, 29.0, 1000.0, 31.0, 32.0]


def test_counter_aggregates_count_a_reset_inside_a_window(world: World) -> None:
    # window ends at 98..103 min are windows 97..102: increases 10 x 4 + 500
    t = ARCHIVE_MS + (RESET_WINDOW + 3) * 60_000
    body = ok(world.store, "/api/v1/query", query="increase(archived_total[5m])", time=t / 1000)
    assert float(body["data"]["result"][0]["value"][1]) == pytest.approx(540.0)
    assert any("aggregates" in w for w in body["warnings"])


# -- promtool as the client ---------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "query", *args], capture_output=True, text=True, timeout=60, check=False
    )


def promtool_json(*args: str) -> Any:
    done = promtool("-o", "json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_promtool_instant(world: World) -> None:
    expr = "sum by (instance) (rate(http_requests_total[5m]))"
    ours, theirs = (
        promtool_json("instant", f"--time={T_LATE / 1000}", url, expr)
        for url in (world.store, world.prom)
    )
    assert len(ours) == 5
    as_data = [{"resultType": "vector", "result": r} for r in (ours, theirs)]
    assert differences(*as_data) == []


def test_promtool_range(world: World) -> None:
    start, end, _ = RANGE
    expr = 'histogram_quantile(0.9, rate(request_duration_seconds_bucket{instance="i0"}[5m]))'
    args = [f"--start={start / 1000}", f"--end={end / 1000}", "--step=1m"]
    ours, theirs = (promtool_json("range", *args, url, expr) for url in (world.store, world.prom))
    assert len(ours) == 1 and len(ours[0]["values"]) > 100
    as_data = [{"resultType": "matrix", "result": r} for r in (ours, theirs)]
    assert differences(*as_data) == []


def test_promtool_series(world: World) -> None:
    args = [f"--start={BASE_MS / 1000}", f"--end={(BASE_MS + 2 * HOUR) / 1000}",
            "--match=up", '--match=http_requests_total{instance="i3"}']  # fmt: skip
    ours, theirs = (promtool_json("series", *args, url) for url in (world.store, world.prom))
    assert len(ours) == 4
    assert sorted(map(json.dumps, ours)) == sorted(map(json.dumps, theirs))


@pytest.mark.parametrize("name", ["__name__", "instance", "le", "nonexistent"])
def test_promtool_label_values(world: World, name: str) -> None:
    args = [f"--start={BASE_MS / 1000}", f"--end={(BASE_MS + 2 * HOUR) / 1000}"]
    ours, theirs = (promtool_json("labels", *args, url, name) for url in (world.store, world.prom))
    assert ours == theirs


def test_promtool_shows_a_parse_error(world: World) -> None:
    done = promtool("instant", world.store, "sum(rate(http_requests_total[5m])")
    assert done.returncode != 0
    assert "bad_data" in done.stderr and "parse error" in done.stderr


def test_promtool_with_the_token_as_basic_auth(world: World) -> None:
    """promtool 2.42 has no --http.config.file; Go sends a URL's user info as basic auth,
    whose password the guard takes as the token."""
    host = world.secured.removeprefix("http://")
    expr = 'up{instance="i1"}'
    ours = promtool_json(
        "instant", f"--time={T_LATE / 1000}", f"http://grafana:{TOKEN}@{host}", expr
    )
    assert [s["metric"]["instance"] for s in ours] == ["i1"]
    refused = promtool("instant", f"http://grafana:wrong@{host}", expr)
    assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout


# -- the other endpoints ------------------------------------------------------------


def test_label_names_match_prometheus(world: World) -> None:
    window = {"start": BASE_MS / 1000, "end": (BASE_MS + 2 * HOUR) / 1000}
    for extra in ({}, {"match[]": "up"}):
        ours = ok(world.store, "/api/v1/labels", **window, **extra)["data"]
        assert ours == ok(world.prom, "/api/v1/labels", **window, **extra)["data"]
    assert ours == ["__name__", "instance", "job"]


def test_label_values_with_match(world: World) -> None:
    params = {"match[]": 'node_temperature_celsius{zone="a"}', "start": BASE_MS / 1000,
              "end": (BASE_MS + 2 * HOUR) / 1000}  # fmt: skip
    ours = ok(world.store, "/api/v1/label/instance/values", **params)["data"]
    assert ours == ok(world.prom, "/api/v1/label/instance/values", **params)["data"]
    assert ours == ["i1", "i3", "i5"]


def test_series_without_times_and_the_archived_series(world: World) -> None:
    data = ok(world.store, "/api/v1/series", **{"match[]": '{job="old"}'})["data"]
    assert data == [{"__name__": "archived_total", "job": "old"}]


def test_metadata_from_the_series_kinds(world: World) -> None:
    data = ok(world.store, "/api/v1/metadata")["data"]
    assert data["http_requests_total"] == [{"type": "counter", "help": "", "unit": ""}]
    assert data["request_duration_seconds"] == [{"type": "histogram", "help": "", "unit": ""}]
    assert data["node_temperature_celsius"][0]["type"] == "gauge"
    one = ok(world.store, "/api/v1/metadata", metric="up", limit=5)["data"]
    assert list(one) == ["up"]
    assert len(ok(world.store, "/api/v1/metadata", limit=2)["data"]) == 2


def test_buildinfo_names_the_prometheus_version(world: World) -> None:
    ours = ok(world.store, "/api/v1/status/buildinfo")["data"]["version"]
    theirs = ok(world.prom, "/api/v1/status/buildinfo")["data"]["version"]
    assert ours == "2.42.0" and theirs.startswith(ours)


def test_post_form_answers_as_get(world: World) -> None:
    params = {"query": "sum by (instance) (up)", "time": str(T_LATE / 1000)}
    posted = httpx.post(f"{world.store}/api/v1/query", data=params, timeout=30)
    assert posted.status_code == 200
    assert posted.json() == ok(world.store, "/api/v1/query", **params)
    series = httpx.post(f"{world.store}/api/v1/series", data={"match[]": "up"}, timeout=30)
    assert len(series.json()["data"]) == 2


def test_rfc3339_times_and_durations(world: World) -> None:
    start, end, _ = RANGE
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1000))
    a = ok(world.store, "/api/v1/query_range", query="up", start=iso, end=end / 1000, step="1m")
    b = ok(world.store, "/api/v1/query_range", query="up", start=start / 1000, end=end / 1000,
           step=60)  # fmt: skip
    assert a == b


def test_the_token_guards_the_api(world: World) -> None:
    params: dict[str, Any] = {"query": "up", "time": T_LATE / 1000}
    assert ask(world.secured, "/api/v1/query", **params).status_code == 401
    resp = httpx.get(
        f"{world.secured}/api/v1/query", params=params, timeout=30,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )  # fmt: skip
    assert resp.status_code == 200 and len(resp.json()["data"]["result"]) == 2


# -- bad input ----------------------------------------------------------------------


def _error(resp: httpx.Response, status: int, error_type: str) -> str:
    body = resp.json()
    assert resp.status_code == status, body
    assert body["status"] == "error" and body["errorType"] == error_type, body
    return str(body["error"])


@pytest.mark.parametrize(
    "query",
    [
        "sum(rate(x[5m])",
        "up{job=}",
        "rate(up[5x])",
        "1 +",
        "",
        pytest.param(
            'up{job=~"(a"}',
            marks=pytest.mark.xfail(
                strict=True,
                reason=(
                    "engine: 1:9 'illegal regex for (a'; Prometheus: 1:4 (the selector's start), "
                    "'error parsing regexp: missing closing )'"
                ),
            ),
        ),
        pytest.param(
            "rate(up)",
            marks=pytest.mark.xfail(
                strict=True,
                reason=(
                    "engine: 1:8 'expected type matrix ... got vector'; Prometheus: 1:6 (the "
                    "argument), 'expected type range vector ... got instant vector'"
                ),
            ),
        ),
    ],
)
def test_malformed_promql_is_bad_data_with_its_position(world: World, query: str) -> None:
    ours = _error(ask(world.store, "/api/v1/query", query=query), 400, "bad_data")
    theirs = _error(ask(world.prom, "/api/v1/query", query=query), 400, "bad_data")
    assert ours.startswith('invalid parameter "query": 1:') and "parse error" in ours, ours
    assert ours.split(" parse error")[0] == theirs.split(" parse error")[0]  # the position


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"query": "up", "time": "yesterday"},
         'invalid parameter "time": Invalid time value for \'time\': cannot parse '
         '"yesterday" to a valid timestamp'),
        ({"query": "up", "timeout": "soon"},
         'invalid parameter "timeout": cannot parse "soon" to a valid duration'),
        ({"query": "up", "timeout": " 5"},
         'invalid parameter "timeout": cannot parse " 5" to a valid duration'),
    ],
)  # fmt: skip
def test_bad_instant_parameters(world: World, params: dict[str, str], message: str) -> None:
    assert _error(ask(world.store, "/api/v1/query", **params), 400, "bad_data") == message
    assert _error(ask(world.prom, "/api/v1/query", **params), 400, "bad_data") == message


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/query", {"timeout": "1_0"}),
        ("/api/v1/query", {"timeout": "5\n"}),
        ("/api/v1/query_range", {"start": 0, "end": 60, "step": "1_0"}),
        ("/api/v1/query_range", {"start": 0, "end": 60, "step": " 15"}),
        ("/api/v1/query_range", {"start": 0, "end": 60, "step": "0x10"}),
        ("/api/v1/query_range", {"start": 0, "end": 60, "step": "١٢٣"}),
        ("/api/v1/query", {"timeout": "²"}),
        ("/api/v1/query", {"time": " 5"}),
        ("/api/v1/query", {"time": "١٢٣"}),
        ("/api/v1/query", {"time": "1_0"}),
        ("/api/v1/query", {"time": "٢٠٢٦-01-01T00:00:00Z"}),
    ],
)
def test_numbers_parse_as_prometheus_parses_them(
    world: World, path: str, params: dict[str, Any]
) -> None:
    ours = ask(world.store, path, query="up", **params)
    theirs = ask(world.prom, path, query="up", **params)
    assert ours.status_code == theirs.status_code, (ours.json(), theirs.json())
    assert ours.json().get("error") == theirs.json().get("error")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": 0, "end": 12_000, "step": 1},
         "exceeded maximum resolution of 11,000 points per timeseries. "
         "Try decreasing the query resolution (?step=XX)"),
        ({"start": 10, "end": 5, "step": 1},
         'invalid parameter "end": end timestamp must not be before start time'),
        ({"start": 0, "end": 5, "step": 0},
         'invalid parameter "step": zero or negative query resolution step widths are not '
         "accepted. Try a positive integer"),
        ({"start": 0, "end": 5, "step": "1q"},
         'invalid parameter "step": cannot parse "1q" to a valid duration'),
    ],
)  # fmt: skip
def test_bad_range_parameters(world: World, params: dict[str, Any], message: str) -> None:
    for url in (world.store, world.prom):
        resp = ask(url, "/api/v1/query_range", query="up", **params)
        assert _error(resp, 400, "bad_data").endswith(message.split(": ", 1)[-1])


def test_bad_label_name_and_missing_match(world: World) -> None:
    for url in (world.store, world.prom):
        assert _error(ask(url, "/api/v1/label/a-b/values"), 400, "bad_data") == (
            'invalid label name: "a-b"'
        )
        assert _error(ask(url, "/api/v1/series"), 400, "bad_data") == (
            "no match[] parameter provided"
        )
        for bad in ("rate(up[5m])", '{job=""}', "up{"):
            resp = ask(url, "/api/v1/series", **{"match[]": bad})
            assert _error(resp, 400, "bad_data")


def test_a_query_past_its_timeout_is_a_timeout(world: World) -> None:
    params = {"query": "sum(rate(http_requests_total[5m]))", "time": T_LATE / 1000}
    for url in (world.store, world.prom):
        assert _error(ask(url, "/api/v1/query", **params, timeout="0.000001"), 503, "timeout")


def test_invalid_regex_is_bad_data(world: World) -> None:
    resp = ask(world.store, "/api/v1/query", query='up{job=~"(a"}', time=T_LATE / 1000)
    _error(resp, 400, "bad_data")


def test_too_many_series_fails_before_reading_samples(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prometheus_api, "MAX_SERIES", 5)
    resp = ask(world.store, "/api/v1/query", query="http_requests_total", time=T_LATE / 1000)
    assert "more than 5 series" in _error(resp, 422, "execution")
    resp = ask(world.store, "/api/v1/series", **{"match[]": "http_requests_total"})
    assert "more than 5 series" in _error(resp, 422, "execution")


def test_too_many_samples_fails_before_fetching(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prometheus_api, "MAX_SAMPLES", 1000)
    resp = ask(world.store, "/api/v1/query", query="sum_over_time(http_requests_total[2h])",
               time=(BASE_MS + 2 * HOUR) / 1000)  # fmt: skip
    assert "more than 1000" in _error(resp, 422, "execution")
    small = ok(world.store, "/api/v1/query", query='up{instance="i0"}', time=T_LATE / 1000)
    assert len(small["data"]["result"]) == 1
