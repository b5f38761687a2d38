"""Properties of the PromQL engine over random samples (hypothesis).

* A range query's value at each step is the instant query's value at that time (the
  vectorised range path and the one-step path agree, for every expression here).
* ``sum by (g)`` equals summing the instant vector's elements grouped by hand.
* ``increase`` over a counter sampled exactly at the window's edges is ``last - first``
  plus the values lost at resets.
"""

from __future__ import annotations

import math

import numpy as np
from fixtures.hypothesis_profiles import examples
from fixtures.promql_source import MemorySource, series
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.promql import Engine

ENGINE = Engine(lookback_ms=60_000)
EXPRESSIONS = [
    "m",
    "rate(m[1m])",
    "increase(m[90s])",
    "irate(m[1m])",
    "delta(m[2m])",
    "resets(m[2m])",
    "changes(m[2m])",
    "deriv(m[2m])",
    "avg_over_time(m[1m])",
    "sum_over_time(m[1m])",
    "max_over_time(m[1m])",
    "stddev_over_time(m[2m])",
    "quantile_over_time(0.3, m[2m])",
    "sum by (g) (m)",
    "avg without (i) (m)",
    "topk(2, m)",
    "count_values('v', m)",
    "m > 3",
    "m * on(i) group_left m",
    "m and m > 2 or m * 0",
    "max_over_time(m[2m:20s])",
    "m offset 30s - m",
    "histogram_quantile(0.5, m)",
    "absent(m{g='zz'})",
    "sort_desc(m)",
]


@st.composite
def datasets(draw: st.DrawFn) -> MemorySource:
    out = []
    for i in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 25))
        ts = sorted(set(draw(st.lists(st.integers(0, 600), min_size=n, max_size=n))))
        vals = draw(st.lists(st.integers(0, 8).map(float), min_size=len(ts), max_size=len(ts)))
        labels = {"__name__": "m", "i": str(i), "g": draw(st.sampled_from("ab")), "le": str(i)}
        if i == 3:
            labels["le"] = "+Inf"
        out.append(series(labels, [(t * 1000, v) for t, v in zip(ts, vals, strict=True)]))
    return MemorySource(out)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=examples(40), deadline=None)
@given(src=datasets(), start=st.integers(0, 300), steps=st.integers(1, 12))
def test_range_query_equals_instant_query_at_each_step(
    src: MemorySource, start: int, steps: int
) -> None:
    step = 17_000
    start_ms = start * 1000
    end_ms = start_ms + (steps - 1) * step
    for expr in EXPRESSIONS:
        rng = ENGINE.range(src, expr, start_ms, end_ms, step)
        by_label = {tuple(sorted(lab.items())): dict(zip(t.tolist(), v.tolist(), strict=True))
                    for lab, t, v in rng.series}  # fmt: skip
        for k in range(steps):
            t = start_ms + k * step
            inst = ENGINE.instant(src, expr, t)
            got = {tuple(sorted(lab.items())): float(v[0]) for lab, _, v in inst.series}
            want = {lab: pts[t] for lab, pts in by_label.items() if t in pts}
            assert got.keys() == want.keys(), (expr, t)
            for lab in got:
                assert _same(got[lab], want[lab]), (expr, t, lab, got[lab], want[lab])


@settings(max_examples=examples(60), deadline=None)
@given(src=datasets(), t=st.integers(0, 700))
def test_sum_by_equals_grouping_by_hand(src: MemorySource, t: int) -> None:
    elements = ENGINE.instant(src, "m", t * 1000).series
    by_hand: dict[str, float] = {}
    for lab, _, v in elements:
        by_hand[lab["g"]] = by_hand.get(lab["g"], 0.0) + float(v[0])
    summed = ENGINE.instant(src, "sum by (g) (m)", t * 1000).series
    got = {lab["g"]: float(v[0]) for lab, _, v in summed}
    assert got == by_hand


@settings(max_examples=examples(60), deadline=None)
@given(
    incs=st.lists(st.integers(0, 50), min_size=2, max_size=30),
    resets=st.sets(st.integers(1, 29), max_size=3),
    interval_s=st.integers(1, 30),
)
def test_increase_over_a_window_sampled_at_its_edges(
    incs: list[int], resets: set[int], interval_s: int
) -> None:
    values, v = [], 0.0
    for k, inc in enumerate(incs):
        v = float(inc) if k in resets else v + inc
        values.append(v)
    step = interval_s * 1000
    pts = [(k * step, x) for k, x in enumerate(values)]
    src = MemorySource([series({"__name__": "c"}, pts)])
    end = (len(pts) - 1) * step
    got = ENGINE.instant(src, f"increase(c[{end // 1000}s])", end).series
    lost = sum(values[k - 1] for k in range(1, len(values)) if values[k] < values[k - 1])
    want = values[-1] - values[0] + lost
    # no extrapolation: the first and last samples sit on the window's edges
    assert [float(s[2][0]) for s in got] == [np.float64(want)]
