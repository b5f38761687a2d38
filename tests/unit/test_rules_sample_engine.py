"""Rules outside the window subset fire and resolve through ``AlertEngine``, with the
values a hand oracle computes from the windows (one sample per window end)."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest

from monitoring.alerts.evaluator import AlertEngine
from monitoring.alerts.history import WindowRow
from monitoring.alerts.rules import load_rules_text
from monitoring.alerts.sample_rules import SampleQuery
from monitoring.promql import BadQuery, parse

W = 10_000
HOSTS = {"a-prod": "infra", "b-prod": "ml", "c-dev": "ml", "d-dev": "infra"}
LE = ["0.1", "0.5", "1", "+Inf"]
SLOW = [10.0, 40.0, 80.0, 100.0]  # cumulative per-window increments per le: p50 = 0.625
FAST = [90.0, 95.0, 100.0, 100.0]  # p50 = 0.1 * 50 / 90

CPU_RULES = """
groups:
  - name: cpu
    rules:
      - {alert: TopCpu, expr: "topk(2, cpu) > 80"}
      - alert: NodeHot
        expr: 'label_replace(cpu > 90, "node", "$1", "host", "(.+)-prod")'
      - {alert: CpuJump, expr: "cpu - cpu offset 1m > 20"}
      - {alert: TeamHot, expr: "cpu * on(host) group_left(team) host_info > 85"}
      - {alert: Sustained, expr: "avg_over_time(max(cpu)[1m:10s]) > 70"}
      - {alert: Hyst, expr: "cpu offset 10s > 90", recovery: "cpu offset 10s < 50"}
"""


def firing(eng: AlertEngine) -> dict[str, set[frozenset[tuple[str, str]]]]:
    out: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for a in eng.firing():
        labels = dict(a.labels)
        out.setdefault(labels.pop("alertname"), set()).add(frozenset(labels.items()))
    return out


def values(eng: AlertEngine, t: int) -> dict[str, dict[Any, float]]:
    return {r.rule.name: r.active for r in eng.evaluator.evaluate(t)}


def test_cpu_rules_fire_and_resolve_with_the_oracles_values() -> None:
    rs = load_rules_text(CPU_RULES, "cpu.yml")
    assert rs.errors == []
    assert all(isinstance(r.compiled.root, SampleQuery) for r in rs.rules)
    eng = AlertEngine(rs.rules)
    assert eng.history.retention_ms == 60_000 + eng.history.lookback_ms
    rnd = random.Random(7)
    cpu: dict[int, dict[str, float]] = {}  # window end -> host -> value
    hyst: set[str] = set()
    seen_fire: set[str] = set()
    seen_resolve: set[str] = set()
    for k in range(1, 60):
        t = k * W
        cpu[t] = {h: round(rnd.uniform(0, 100), 2) for h in HOSTS}
        for h, v in cpu[t].items():
            eng.add(WindowRow.of("cpu", {"host": h}, t, [v]))
            eng.add(WindowRow.of("host_info", {"host": h, "team": HOSTS[h]}, t, [1.0]))
        changes = eng.evaluate(t)
        assert eng.errors == []
        seen_fire |= {a.labels["alertname"] for a in changes if a.status == "firing"}
        seen_resolve |= {a.labels["alertname"] for a in changes if a.status == "resolved"}

        now = cpu[t]
        top2 = sorted(now, key=now.__getitem__)[-2:]
        want: dict[str, dict[Any, float]] = {
            "TopCpu": {(("host", h),): now[h] for h in top2 if now[h] > 80},
            "NodeHot": {
                ((("host", h),) + ((("node", h[:-5]),) if h.endswith("-prod") else ())): v
                for h, v in now.items()
                if v > 90
            },
            "TeamHot": {(("host", h), ("team", HOSTS[h])): v for h, v in now.items() if v > 85},
        }
        before = cpu.get(t - 60_000)
        want["CpuJump"] = {
            (("host", h),): v - before[h] for h, v in now.items() if before and v - before[h] > 20
        }
        maxima = [max(cpu[s].values()) for s in range(t - 60_000, t + 1, W) if s in cpu]
        mean = sum(maxima) / len(maxima)
        want["Sustained"] = {(): mean} if mean > 70 else {}
        prev = cpu.get(t - W, {})
        want["Hyst"] = {(("host", h),): v for h, v in prev.items() if v > 90}
        hyst = {h for h in hyst if h in prev and prev[h] >= 50} | {
            h for h, v in prev.items() if v > 90
        }

        got = values(eng, t)
        for name, expected in want.items():
            assert got[name].keys() == expected.keys(), (t, name)
            for key, v in expected.items():
                assert math.isclose(got[name][key], v, rel_tol=1e-9), (t, name, key)
        expected_firing = {
            name: {frozenset(dict(key).items()) for key in vals}
            for name, vals in want.items()
            if vals and name != "Hyst"
        }
        if hyst:
            expected_firing["Hyst"] = {frozenset({("host", h)}) for h in hyst}
        assert firing(eng) == expected_firing, t
    assert seen_fire == seen_resolve == {r.name for r in rs.rules}


def bucket_quantile(q: float, cum: list[float]) -> float:
    """Prometheus's ``bucketQuantile`` for cumulative counts over ``LE``."""
    rank = q * cum[-1]
    b = next(i for i, c in enumerate(cum) if c >= rank)
    if b == len(cum) - 1:
        return float(LE[-2])
    lower = 0.0 if b == 0 else float(LE[b - 1])
    below = 0.0 if b == 0 else cum[b - 1]
    return lower + (float(LE[b]) - lower) * (rank - below) / (cum[b] - below)


def prom_rate(points: list[tuple[int, float]], t: int, range_ms: int) -> float:
    """Prometheus 2.42's ``extrapolatedRate`` for a counter over ``[t - range, t]``."""
    (t0, v0), (t1, v1) = points[0], points[-1]
    result = v1 - v0 + sum(a for (_, a), (_, b) in itertools.pairwise(points) if b < a)
    sampled = (t1 - t0) / 1000
    to_start, to_end = (t0 - (t - range_ms)) / 1000, (t - t1) / 1000
    avg = sampled / (len(points) - 1)
    if result > 0 and v0 >= 0:
        to_start = min(to_start, sampled * v0 / result)
    interval = sampled
    interval += to_start if to_start < avg * 1.1 else avg / 2
    interval += to_end if to_end < avg * 1.1 else avg / 2
    return result * interval / sampled / (range_ms / 1000)


def p50(counts: dict[int, list[float]], t: int) -> float | None:
    """histogram_quantile(0.5, rate(h_bucket[1m])) by hand, over the samples at the
    window ends minus 1 ms."""
    ends = [e for e in counts if t - 60_000 < e <= t]
    if len(ends) < 2:
        return None
    rates = [prom_rate([(e - 1, counts[e][b]) for e in ends], t, 60_000) for b in range(len(LE))]
    return bucket_quantile(0.5, rates)


HIST_RULES = """
groups:
  - name: latency
    rules:
      - record: service:latency_seconds:p50
        expr: histogram_quantile(0.5, sum by (service, le) (rate(latency_seconds_bucket[1m])))
      - alert: SlowRecorded
        expr: service:latency_seconds:p50 > 0.6
      - alert: SlowDirect
        expr: >-
          histogram_quantile(0.5, sum by (le) (rate(latency_seconds_bucket{service="api"}[1m])))
          > 0.6
"""


def test_histogram_quantile_recorded_and_alerted_through_a_counter_reset() -> None:
    rs = load_rules_text(HIST_RULES, "lat.yml")
    assert rs.errors == [] and len(rs.recordings) == 1
    eng = AlertEngine(rs.rules, recordings=rs.recordings)
    counts: dict[str, dict[int, list[float]]] = {"api": {}, "web": {}}
    counters = {s: [10_000.0 * (b + 1) for b in range(len(LE))] for s in counts}
    recorded: list[Any] = []
    events: list[tuple[int, str, str, str]] = []
    reset_at = 12 * W
    for k in range(1, 40):
        t = k * W
        for r in recorded:  # written at the previous end: its window closes now
            eng.add(WindowRow.of(r.name, r.labels, t, [r.value]))
        for svc, c in counters.items():
            inc = SLOW if svc == "api" and k < 20 else FAST
            for b, le in enumerate(LE):
                c[b] = inc[b] if (svc, t) == ("api", reset_at) else c[b] + inc[b]
                eng.add(
                    WindowRow.of("latency_seconds_bucket", {"service": svc, "le": le}, t, [c[b]])
                )
            counts[svc][t] = list(c)
        for a in eng.evaluate(t):
            events.append((t, a.status, a.labels["alertname"], a.labels.get("service", "")))
        got = values(eng, t)
        direct = p50(counts["api"], t)
        if direct is not None and direct > 0.6:
            assert math.isclose(got["SlowDirect"][()], direct, rel_tol=1e-9), t
        else:
            assert got["SlowDirect"] == {}, t
        recorded = eng.record(t)
        assert eng.recording_errors == []
        want = {svc: p50(counts[svc], t) for svc in counts}
        rec = {r.labels["service"]: r.value for r in recorded}
        assert rec.keys() == {s for s, v in want.items() if v is not None}, t
        for svc, v in rec.items():
            assert math.isclose(v, want[svc] or 0.0, rel_tol=1e-9), (t, svc)
        prev = p50(counts["api"], t - W) if t - W in counts["api"] else None
        if prev is not None:
            assert (((("service", "api"),)) in got["SlowRecorded"]) == (prev > 0.6), t
    # rate sees through the reset: p50 stays the slow phase's 0.625 until the switch
    slow = [p50(counts["api"], k * W) for k in range(2, 20)]
    assert slow == pytest.approx([0.625] * len(slow))
    switch = next(t for t in range(2 * W, 40 * W, W) if (p50(counts["api"], t) or 0) <= 0.6)
    assert events == [
        (2 * W, "firing", "SlowDirect", ""),
        (3 * W, "firing", "SlowRecorded", "api"),
        (switch, "resolved", "SlowDirect", ""),
        (switch + W, "resolved", "SlowRecorded", "api"),
    ]


@pytest.mark.parametrize(
    "expr",
    [
        "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m]))",
        "sum(rate(x[5m])) by",
        'topk(3, x{job="a"} > on(job) group_left y',
    ],
)
def test_bad_promql_names_the_rule_and_the_position(expr: str) -> None:
    with pytest.raises(BadQuery) as e:
        parse(expr)
    pos = e.value.position
    assert pos is not None
    rules = f"{{alert: A, expr: '{expr}'}}, {{record: r, expr: '{expr}'}}"
    text = f"groups: [{{name: g, rules: [{rules}]}}]"
    rs = load_rules_text(text, "bad.yml")
    assert rs.rules == [] and rs.recordings == []
    where = f"1:{pos + 1}: parse error: "
    assert [str(err).split(where)[0] for err in rs.errors] == [
        "bad.yml: group 'g': rule 'A': ",
        "bad.yml: group 'g': rule 'r': ",
    ]


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("limitk(1, x)", "aggregation 'limitk' is not supported"),
        ("histogram_count(x)", "function 'histogram_count' is not supported"),
        ("x @ 100 > 1", "'@' with a fixed time is not supported in rules"),
        ("x[5m]", "a rule expression must be an instant vector or a scalar, got a range vector"),
        ('"text"', "a rule expression must be an instant vector or a scalar, got a string"),
    ],
)
def test_what_the_sample_engine_cannot_do_is_refused_at_load(expr: str, problem: str) -> None:
    rs = load_rules_text(f"groups: [{{name: g, rules: [{{alert: A, expr: '{expr}'}}]}}]", "f.yml")
    (err,) = rs.errors
    assert str(err).startswith(f"f.yml: group 'g': rule 'A': {problem}"), str(err)


def test_a_recovery_outside_the_subset_keeps_the_alert_firing_until_it_holds() -> None:
    rs = load_rules_text(
        """
groups:
  - name: g
    rules:
      - alert: Top
        expr: topk(1, cpu) > 90
        recovery: topk(1, cpu) < 50
""",
    )
    assert rs.errors == []
    (rule,) = rs.rules
    assert isinstance(rule.recovery_compiled.root, SampleQuery)  # type: ignore[union-attr]
    assert rule.recovery_compiled.text == "topk(1, cpu) < bool 50"  # type: ignore[union-attr]
    eng = AlertEngine(rs.rules)
    states = []
    for k, v in enumerate([95.0, 70.0, 60.0, 40.0], start=1):
        eng.add(WindowRow.of("cpu", {"host": "a"}, k * W, [v]))
        eng.evaluate(k * W)
        states.append(bool(eng.firing()))
    assert states == [True, True, True, False]


def test_the_sample_rules_bench_runs_at_toy_size() -> None:
    from monitoring.bench.alerts_samples import run_samples_bench

    res = run_samples_bench(rules=4, services=2, buckets=5, closes=2)
    assert (res.rules, res.series, res.closes) == (4, 10, 2)
    assert res.eval_ms_per_close > 0
