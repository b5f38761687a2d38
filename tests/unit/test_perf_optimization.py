"""Suggestions and analysis from constructed data where the right answer is known."""

from __future__ import annotations

import math

import numpy as np

from monitoring.perf.analysis import Period, Resource, Totals, Windows, analyze, saturation
from monitoring.perf.optimization import ModelStat, RouteStat, Thresholds, suggest

DAY = 86_400.0


def route(
    route: str, rate: float, mean_s: float, errors: float = 0, method: str = "GET"
) -> RouteStat:
    n = rate * DAY
    return RouteStat(route, method, n, errors, n * mean_s, mean_s * 3, DAY)


def kinds(found: list) -> list[tuple[str, str]]:
    return [(s.kind, s.subject) for s in found]


def test_the_route_with_the_largest_share_of_time_not_the_slowest_or_busiest() -> None:
    routes = [
        route("/busy", rate=100, mean_s=0.002),  # busiest: 0.2 s of work per second
        route("/slow", rate=0.1, mean_s=2.0),  # slowest: 0.2 s per second
        route("/hot", rate=20, mean_s=0.05),  # 1.0 s per second: 71 %
    ]
    found = suggest(routes)
    assert kinds(found) == [("hot-route", "GET /hot")]
    s = found[0]
    assert math.isclose(s.evidence["share"], 1.0 / 1.4)
    assert math.isclose(s.evidence["rate_rps"], 20) and math.isclose(s.evidence["mean_s"], 0.05)
    assert "71% of all server time" in s.message


def test_several_hot_routes_above_the_share_in_order() -> None:
    routes = [route("/a", 10, 0.1), route("/b", 10, 0.08), route("/c", 1, 0.01)]
    assert kinds(suggest(routes)) == [("hot-route", "GET /a"), ("hot-route", "GET /b")]
    assert kinds(suggest(routes, th=Thresholds(min_share=0.6))) == []


def test_error_hotspots_need_both_a_count_and_a_ratio() -> None:
    routes = [
        route("/pay", 1, 0.01, errors=0.05 * DAY, method="POST"),  # 5 %: a hotspot
        route("/big", 1000, 0.001, errors=5000),  # many errors, 0.006 %: noise
        route("/rare", 1e-4, 0.01, errors=5),  # 58 % of 8.6 requests, but only 5 errors
    ]
    found = [s for s in suggest(routes) if s.kind == "error-hotspot"]
    assert kinds(found) == [("error-hotspot", "POST /pay")]
    ev = found[0].evidence
    assert math.isclose(ev["error_ratio"], 0.05)
    assert math.isclose(ev["share_of_errors"], 0.05 * DAY / (0.05 * DAY + 5000 + 5))


def _windows(n: int = 48) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.int64) * 300_000


def test_latency_tracking_a_saturated_cpu_is_reported_and_an_idle_one_is_not() -> None:
    rng = np.random.default_rng(1)
    t = _windows()
    cpu = np.clip(0.6 + 0.35 * np.sin(np.arange(48) / 5) + rng.normal(0, 0.02, 48), 0, 1)
    latency = 0.05 * (1 + 3 * np.maximum(0, cpu - 0.6)) + rng.normal(0, 0.001, 48)
    hot = saturation(t, latency, Resource("cpu", t, cpu, capacity=1.0))
    assert hot.tracks and hot.near_capacity and hot.saturated
    cool = saturation(t, latency, Resource("cpu", t, cpu * 0.3, capacity=1.0))
    assert cool.tracks and not cool.near_capacity  # tracks, but far from its capacity
    unrelated = saturation(t, rng.normal(0.05, 0.001, 48), Resource("cpu", t, cpu, 1.0))
    assert not unrelated.tracks
    no_cap = saturation(t, latency, Resource("rss", t, cpu * 1e9))
    assert no_cap.tracks and not no_cap.saturated
    found = suggest(saturation=[hot, cool, unrelated, no_cap])
    assert kinds(found) == [("saturation", "cpu")]
    assert found[0].evidence["rho"] > 0.9


def test_capacity_over_and_under() -> None:
    rng = np.random.default_rng(2)
    idle = {f"web:{i}": rng.uniform(0.02, 0.08, 48) for i in range(6)}
    found = suggest(instance_cpu=idle)
    assert kinds(found) == [("over-capacity", "6 processes")]
    ev = found[0].evidence
    assert ev["processes"] == 6 and ev["processes_needed"] == 1  # ~0.3 cores at p95 in total
    busy = {"web:0": rng.uniform(0.85, 0.99, 48), "web:1": rng.uniform(0.1, 0.3, 48)}
    found = suggest(instance_cpu=busy)
    assert kinds(found) == [("under-capacity", "web:0")]
    one = {"web:0": rng.uniform(0.02, 0.05, 48)}  # one process cannot be fewer
    assert suggest(instance_cpu=one) == []
    mid = {f"web:{i}": rng.uniform(0.1, 0.19, 48) for i in range(2)}  # 0.38 at p95: needs 1
    assert kinds(suggest(instance_cpu=mid)) == [("over-capacity", "2 processes")]


def test_hot_models_by_share_of_inference_time() -> None:
    models = [
        ModelStat("fraud", "v3", 1e6, 1e6 * 0.004, DAY),  # 4000 s
        ModelStat("churn", "v1", 1e4, 1e4 * 0.2, DAY),  # 2000 s
        ModelStat("spam", "v9", 1e7, 1e7 * 0.00001, DAY),  # 100 s
    ]
    found = suggest(models=models)
    assert kinds(found) == [("hot-model", "fraud v3"), ("hot-model", "churn v1")]
    assert math.isclose(found[0].evidence["share"], 4000 / 6100)


def test_nothing_to_say_about_no_data() -> None:
    assert suggest() == []
    assert suggest([route("/a", 0, 0.1)]) == []


def _period(rng: np.random.Generator, median: float, n: int, start: float) -> Period:
    t = _windows(n)
    lat = rng.lognormal(math.log(median), 0.1, n)
    values = {
        "mean_latency_s": lat,
        "p50_latency_s": lat * 0.9,
        "p90_latency_s": lat * 2,
        "p99_latency_s": lat * 4,
        "throughput_rps": rng.normal(100, 3, n),
        "error_ratio": np.full(n, 0.001),
    }
    totals = Totals(start, start + n * 300, 100 * n * 300, 0.1 * n * 300, median, median * 2,
                    median * 4, median)  # fmt: skip
    return Period(totals, Windows(t, values))


def test_analyze_flags_latency_only_where_it_changed() -> None:
    rng = np.random.default_rng(3)
    base = _period(rng, 0.05, 288, 0)
    slower = _period(rng, 0.065, 48, 288 * 300)
    a = analyze("svc", slower, base)
    assert a.regressions == ["mean_latency_s", "p50_latency_s", "p90_latency_s", "p99_latency_s"]
    same = _period(rng, 0.05, 48, 288 * 300)
    assert analyze("svc", same, base).regressions == []
    faster = _period(rng, 0.03, 48, 288 * 300)
    assert analyze("svc", faster, base).regressions == []
    # a 5 % slowdown is significant over this many windows, but under the 10 % floor
    a = analyze("svc", _period(rng, 0.0525, 288, 0), _period(rng, 0.05, 2016, 0))
    assert a.regressions == [] and a.comparisons["mean_latency_s"].significant
    assert analyze("svc", _period(rng, 0.0525, 288, 0), _period(rng, 0.05, 2016, 0),
                   min_change=0.02).regressions  # fmt: skip
