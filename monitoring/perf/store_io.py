"""Reading performance series from the store (the I/O edge of analysis and advice).

Everything goes through :class:`~monitoring.query.client.StoreClient`: PromQL range
queries for per-window values (evaluated at ``start + k*window`` up to ``end``, each
covering the window before it), instant queries for whole-period totals, and one
parameterised SQL statement for a model's per-prediction latencies. Label values are
validated (:func:`check_label`) and written as quoted PromQL strings or SQL
parameters, never spliced raw.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from monitoring.metrics.prom_syntax import LABEL_NAME
from monitoring.perf.analysis import (
    Analysis,
    ModelAnalysis,
    Period,
    Resource,
    Saturation,
    Totals,
    Windows,
    analyze,
    analyze_model,
    saturation,
)
from monitoring.perf.optimization import ModelStat, RouteStat, Suggestion, Thresholds, suggest
from monitoring.perf.tracking import (
    HTTP_DURATION,
    HTTP_ERRORS,
    HTTP_REQUESTS,
    PROCESS_CPU,
    PROCESS_RSS,
)
from monitoring.query.client import Series, StoreClient

MAX_WINDOWS = 10_000  # the Prometheus API's limit is 11,000 points per series
MAX_LABEL_VALUE = 256
MAX_MODEL_SAMPLES = 1_000_000


class BadQuery(ValueError):
    """A label value or range the analysis refuses (with the reason)."""


def check_label(name: str, value: str) -> str:
    """A label value fit for a query: non-empty, at most 256 characters, printable."""
    if not LABEL_NAME.match(name):
        raise BadQuery(f"not a label name: {name[:80]!r}")
    if not value or len(value) > MAX_LABEL_VALUE or not value.isprintable():
        raise BadQuery(f"{name} must be 1-{MAX_LABEL_VALUE} printable characters")
    return value


def selector(labels: Mapping[str, str]) -> str:
    """``{a="x",b="y"}`` with every value checked and quoted.

    >>> selector({"service": 'we"ird'})
    '{service="we\\\\"ird"}'
    """
    return "{" + ",".join(f"{k}={json.dumps(check_label(k, v))}" for k, v in labels.items()) + "}"


def _dur(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def grid(start_s: float, end_s: float, window_s: float) -> np.ndarray:
    """Evaluation times (ms) of a period's windows: ``start + k*window`` up to ``end``.

    >>> grid(0, 300, 60).tolist()
    [60000, 120000, 180000, 240000, 300000]
    """
    if not (window_s > 0 and end_s > start_s):
        raise BadQuery("a period needs end > start and a positive window")
    n = int((end_s - start_s) // window_s)
    if n < 1:
        raise BadQuery(f"the period is shorter than one window ({window_s:g}s)")
    if n > MAX_WINDOWS:
        raise BadQuery(f"{n} windows: at most {MAX_WINDOWS}; use a longer --window")
    return np.round((start_s + window_s * np.arange(1, n + 1)) * 1000).astype(np.int64)


def _on_grid(t: np.ndarray, series: list[Series]) -> np.ndarray:
    out = np.full(len(t), np.nan)
    if not series:
        return out
    s = series[0]
    idx = np.searchsorted(t, s.t_ms)
    ok = (idx < len(t)) & (t[np.minimum(idx, len(t) - 1)] == s.t_ms)
    out[idx[ok]] = s.values[ok]
    return out


def _range(client: StoreClient, expr: str, t: np.ndarray, window_s: float) -> np.ndarray:
    series = client.query_range(expr, t[0] / 1000, t[-1] / 1000, window_s)
    return _on_grid(t, series)


def _scalar(client: StoreClient, expr: str, at_s: float) -> float:
    series = client.query(expr, at_s)
    if not series or not len(series[0].values):
        return math.nan
    return float(series[0].values[0])


def fetch_period(
    client: StoreClient, labels: Mapping[str, str], start_s: float, end_s: float, window_s: float
) -> Period:
    """A service's RED values per window and in total over ``[start_s, end_s]``."""
    sel = selector(labels)
    t = grid(start_s, end_s, window_s)
    w = _dur(window_s)
    span = _dur(end_s - start_s)
    d, r, e = HTTP_DURATION, HTTP_REQUESTS, HTTP_ERRORS

    def quantile(q: float, rng: str) -> str:
        return f"histogram_quantile({q}, sum by (le) (rate({d}_bucket{sel}[{rng}])))"

    rate_r = f"sum(rate({r}{sel}[{w}]))"
    values = {
        "mean_latency_s": _range(
            client, f"sum(rate({d}_sum{sel}[{w}])) / sum(rate({d}_count{sel}[{w}]))", t, window_s
        ),
        "p50_latency_s": _range(client, quantile(0.5, w), t, window_s),
        "p90_latency_s": _range(client, quantile(0.9, w), t, window_s),
        "p99_latency_s": _range(client, quantile(0.99, w), t, window_s),
        "throughput_rps": _range(client, rate_r, t, window_s),
        "error_ratio": _range(
            client, f"(sum(rate({e}{sel}[{w}])) or vector(0)) / {rate_r}", t, window_s
        ),
    }
    totals = Totals(
        start_s=start_s,
        end_s=end_s,
        requests=_scalar(client, f"sum(increase({r}{sel}[{span}]))", end_s),
        errors=_scalar(client, f"sum(increase({e}{sel}[{span}])) or vector(0)", end_s),
        p50_s=_scalar(client, quantile(0.5, span), end_s),
        p90_s=_scalar(client, quantile(0.9, span), end_s),
        p99_s=_scalar(client, quantile(0.99, span), end_s),
        mean_s=_scalar(
            client,
            f"sum(increase({d}_sum{sel}[{span}])) / sum(increase({d}_count{sel}[{span}]))",
            end_s,
        ),
    )
    return Period(totals, Windows(t, values))


def fetch_resources(
    client: StoreClient, labels: Mapping[str, str], start_s: float, end_s: float, window_s: float
) -> list[Resource]:
    """Per-window resource use of a service's processes: the busiest process's CPU
    (cores; capacity one core) and the total resident memory."""
    sel = selector(labels)
    t = grid(start_s, end_s, window_s)
    w = _dur(window_s)
    cpu = _range(client, f"max(rate({PROCESS_CPU}{sel}[{w}]))", t, window_s)
    rss = _range(client, f"sum(max_over_time({PROCESS_RSS}{sel}[{w}]))", t, window_s)
    out = []
    if np.isfinite(cpu).any():
        out.append(Resource("process_cpu_cores_max", t, cpu, capacity=1.0, unit="cores"))
    if np.isfinite(rss).any():
        out.append(Resource("process_rss_bytes", t, rss, unit="bytes"))
    return out


def fetch_instance_cpu(
    client: StoreClient, labels: Mapping[str, str], start_s: float, end_s: float, window_s: float
) -> dict[str, np.ndarray]:
    """Per-window CPU cores of each process (``instance``) of a service."""
    sel = selector(labels)
    t = grid(start_s, end_s, window_s)
    series = client.query_range(
        f"sum by (instance) (rate({PROCESS_CPU}{sel}[{_dur(window_s)}]))",
        t[0] / 1000,
        t[-1] / 1000,
        window_s,
    )
    return {s.labels.get("instance", ""): _on_grid(t, [s]) for s in series[:1000]}


def fetch_routes(
    client: StoreClient, labels: Mapping[str, str], start_s: float, end_s: float
) -> list[RouteStat]:
    """Per route and method over the period: requests, errors, total seconds spent."""
    sel = selector(labels)
    span = _dur(end_s - start_s)
    by = "sum by (route, method)"
    d = HTTP_DURATION

    def per_route(expr: str) -> dict[tuple[str, str], float]:
        return {
            (s.labels.get("route", ""), s.labels.get("method", "")): float(s.values[0])
            for s in client.query(expr, end_s)
            if len(s.values)
        }

    count = per_route(f"{by} (increase({d}_count{sel}[{span}]))")
    seconds = per_route(f"{by} (increase({d}_sum{sel}[{span}]))")
    errors = per_route(f"{by} (increase({HTTP_ERRORS}{sel}[{span}]))")
    p99 = per_route(
        f"histogram_quantile(0.99, sum by (route, method, le) (increase({d}_bucket{sel}[{span}])))"
    )
    return [
        RouteStat(
            route=route,
            method=method,
            requests=n,
            errors=errors.get((route, method), 0.0),
            seconds=seconds.get((route, method), 0.0),
            p99_s=p99.get((route, method), math.nan),
            span_s=end_s - start_s,
        )
        for (route, method), n in sorted(count.items())
    ]


# raw samples may hold staleness markers (NaN): never values of a latency
_MODEL_SQL = """
SELECT value FROM samples FINAL
WHERE series_id IN (
    SELECT series_id FROM series
    WHERE name = 'model_latency_ms' AND labels['model'] = {model:String}
      AND labels['version'] = {version:String})
  AND ts >= fromUnixTimestamp64Milli({start:Int64}) AND ts < fromUnixTimestamp64Milli({end:Int64})
  AND NOT isNaN(value)
LIMIT {limit:UInt64}
"""

_MODELS_SQL = """
SELECT labels['model'] AS model, labels['version'] AS version, count() AS n, sum(value) AS total
FROM samples FINAL INNER JOIN (
    SELECT series_id, any(labels) AS labels FROM series
    WHERE name = 'model_latency_ms' GROUP BY series_id) AS s USING (series_id)
WHERE ts >= fromUnixTimestamp64Milli({start:Int64}) AND ts < fromUnixTimestamp64Milli({end:Int64})
  AND NOT isNaN(value)
GROUP BY model, version ORDER BY total DESC LIMIT 1000
"""


def fetch_model_latencies(
    client: StoreClient,
    model: str,
    version: str,
    start_s: float,
    end_s: float,
    limit: int = MAX_MODEL_SAMPLES,
) -> np.ndarray:
    """A model version's per-prediction latencies (ms) in the period (at most ``limit``)."""
    table = client.sql(
        _MODEL_SQL,
        {
            "model": check_label("model", model),
            "version": check_label("version", version),
            "start": round(start_s * 1000),
            "end": round(end_s * 1000),
            "limit": int(limit),
        },
    )
    return np.array([float(r[0]) for r in table.rows], dtype=np.float64)


def fetch_models(client: StoreClient, start_s: float, end_s: float) -> list[ModelStat]:
    """Per model and version: predictions and total latency in the period."""
    table = client.sql(_MODELS_SQL, {"start": round(start_s * 1000), "end": round(end_s * 1000)})
    return [
        ModelStat(str(m), str(v), float(n), float(total) / 1000.0, end_s - start_s)
        for m, v, n, total in table.rows
    ]


# -- the Python API: a store client in, findings out ------------------------------------


def analyze_service(
    client: StoreClient,
    service: str,
    *,
    since_s: float = 86_400,
    baseline_s: float = 7 * 86_400,
    window_s: float = 300,
    until_s: float | None = None,
    alpha: float = 0.01,
    min_change: float = 0.1,
) -> Analysis:
    """``service``'s last ``since_s`` (up to ``until_s``, default now) against the
    ``baseline_s`` just before it, per ``window_s`` window (see ``analysis``)."""
    end = time.time() if until_s is None else until_s
    start = end - since_s
    labels = {"service": service}
    current = fetch_period(client, labels, start, end, window_s)
    baseline = fetch_period(client, labels, start - baseline_s, start, window_s)
    resources = fetch_resources(client, labels, start, end, window_s)
    return analyze(service, current, baseline, resources, alpha=alpha, min_change=min_change)


def analyze_model_versions(
    client: StoreClient,
    model: str,
    version: str,
    against: str,
    *,
    since_s: float = 86_400,
    until_s: float | None = None,
    alpha: float = 0.01,
    min_change: float = 0.1,
) -> ModelAnalysis:
    """``version``'s per-prediction latencies against ``against``'s, same period."""
    end = time.time() if until_s is None else until_s
    start = end - since_s
    cur = fetch_model_latencies(client, model, version, start, end)
    base = fetch_model_latencies(client, model, against, start, end)
    return analyze_model(model, version, against, cur, base, alpha=alpha, min_change=min_change)


def suggestions(
    client: StoreClient,
    service: str | None,
    *,
    since_s: float = 86_400,
    window_s: float = 300,
    until_s: float | None = None,
    models: bool = True,
    thresholds: Thresholds | None = None,
) -> list[Suggestion]:
    """Every suggestion the period's data supports (see ``optimization``)."""
    end = time.time() if until_s is None else until_s
    start = end - since_s
    routes: list[RouteStat] = []
    sats: list[Saturation] = []
    cpu: dict[str, np.ndarray] = {}
    if service is not None:
        labels = {"service": service}
        routes = fetch_routes(client, labels, start, end)
        period = fetch_period(client, labels, start, end, window_s)
        lat = period.windows.values["mean_latency_s"]
        sats = [
            saturation(period.windows.t_ms, lat, r)
            for r in fetch_resources(client, labels, start, end, window_s)
        ]
        cpu = fetch_instance_cpu(client, labels, start, end, window_s)
    model_stats = fetch_models(client, start, end) if models else []
    return suggest(routes, model_stats, sats, cpu, thresholds)


# -- benchmark runs side by side ----------------------------------------------------------

MAX_RUNS = 1000


@dataclass(frozen=True)
class BenchRun:
    """One recorded benchmark run, as its last samples in the period say."""

    run_id: str
    target: str
    target_rate: float
    achieved_rate: float
    requests: float
    errors: float
    quantiles: dict[str, float]  # "0.5", "0.9", "0.99", "0.999" -> seconds


def fetch_runs(
    client: StoreClient, start_s: float, end_s: float, target: str | None = None
) -> list[BenchRun]:
    """The benchmark runs recorded in the period (``monitoring perf bench``), by run id."""
    sel = selector({"target": target}) if target is not None else ""
    span = _dur(end_s - start_s)

    def last(name: str, by: str = "run_id, target") -> list[Series]:
        return client.query(f"max by ({by}) (last_over_time({name}{sel}[{span}]))", end_s)

    def key(s: Series) -> tuple[str, str]:
        return s.labels.get("run_id", ""), s.labels.get("target", "")

    def value(s: Series) -> float:
        return float(s.values[0]) if len(s.values) else math.nan

    target_rate = {key(s): value(s) for s in last("perf_bench_target_rate")}
    achieved = {key(s): value(s) for s in last("perf_bench_achieved_rate")}
    errors = {key(s): value(s) for s in last("perf_bench_errors_total")}
    requests = {
        key(s): value(s)
        for s in client.query(
            "sum by (run_id, target) (max by (run_id, target, outcome) "
            f"(last_over_time(perf_bench_requests_total{sel}[{span}])))",
            end_s,
        )
    }
    quantiles: dict[tuple[str, str], dict[str, float]] = {}
    for s in last("perf_bench_summary_latency_seconds", "run_id, target, quantile"):
        quantiles.setdefault(key(s), {})[s.labels.get("quantile", "")] = value(s)
    runs = sorted(set(target_rate) | set(requests))[-MAX_RUNS:]
    return [
        BenchRun(
            run_id=r,
            target=t,
            target_rate=target_rate.get((r, t), math.nan),
            achieved_rate=achieved.get((r, t), math.nan),
            requests=requests.get((r, t), 0.0),
            errors=errors.get((r, t), 0.0),
            quantiles=dict(sorted(quantiles.get((r, t), {}).items(), key=lambda kv: kv[0])),
        )
        for r, t in runs
    ]
