"""Alert rules' ``increase`` and ``rate`` over counter-aware windows, against the raw
samples: the windows come from the aggregator itself, so this holds the whole path
(aggregator -> Aggregate -> WindowHistory -> range function) to Prometheus' counter
arithmetic, resets inside windows included. Windows without the counter field (Aggregate
v1) still get the inference from min and last."""

from __future__ import annotations

import itertools

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.alerts.functions import increase, rate
from monitoring.alerts.history import WindowHistory, WindowRow
from monitoring.alerts.promql import compile_expr
from monitoring.metrics.aggregator import PartitionAggregator
from monitoring.metrics.samples import Sample

BASE = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
W = 10_000
KEY = "c_total"


def raw_increase(values: list[float]) -> float:
    """Prometheus' increase over raw samples (without extrapolation): positive deltas
    summed, and after a drop the new value (the counter restarted from 0)."""
    return sum(b if b < a else b - a for a, b in itertools.pairwise(values))


@st.composite
def counter(draw: st.DrawFn) -> list[tuple[int, float]]:
    """One counter's in-order samples: random scrape gaps (some windows empty), random
    increments and resets (several per window at times)."""
    t, v = BASE + draw(st.integers(0, W)), float(draw(st.integers(0, 100)))
    out = []
    for _ in range(draw(st.integers(2, 80))):
        out.append((t, v))
        t += draw(st.sampled_from([0, 500, 1_000, 3_000, 10_000, 25_000]))
        if draw(st.integers(0, 6)) == 0:
            v = float(draw(st.integers(0, 20)))
        else:
            v += draw(st.integers(0, 400)) / 4  # dyadic: sums are exact
    return out


def history_of(points: list[tuple[int, float]], batch: int) -> WindowHistory:
    agg = PartitionAggregator((W,), 0, vector_min=batch)
    h = WindowHistory(W, retention_ms=10**9)
    for offset, i in enumerate(range(0, len(points), batch)):
        msg = [Sample(KEY, KEY, {}, t, v, "COUNTER", "") for t, v in points[i : i + batch]]
        h.add_all(agg.process(offset, msg).closed)
    h.add_all(agg.close_idle())
    return h


@settings(max_examples=examples(300), deadline=None)
@given(counter(), st.sampled_from([1, 3, 40]), st.sampled_from([20_000, 60_000, 300_000]))
def test_increase_and_rate_equal_the_raw_samples(points, batch, d):
    history = history_of(points, batch)
    [series] = history.series_for(KEY)
    assert all(r.increase is not None for r in series.rows)
    expr = compile_expr(f"increase({KEY}[{d // 1000}s])")
    for r in series.rows:  # evaluated at every window end
        t = r.end_ms
        rows = series.range(t - d, t, closed_start=True)
        if len(rows) < 2:
            assert increase(rows, t) is None
            continue
        # from the baseline window's last sample to the newest window's last sample
        start = max(i for i, (ts, _) in enumerate(points) if ts < rows[0].end_ms)
        values = [v for ts, v in points[start:] if ts < t]
        want = raw_increase(values)
        assert increase(rows, t) == want
        assert rate(rows, t) == want / ((t - rows[0].end_ms) / 1000)
        assert [v for _, v in expr.evaluate(history, t)] == [want]  # as a rule sees it


def test_a_reset_inside_a_window_is_exact_where_inference_loses_it() -> None:
    # 10 -> 30, then restarted: 0 -> 5 inside the second window
    points = [(BASE + 1_000, 10.0), (BASE + 11_000, 30.0), (BASE + 12_000, 0.0),
              (BASE + 13_000, 5.0)]  # fmt: skip
    [series] = history_of(points, 1).series_for(KEY)
    rows = series.rows
    assert increase(rows, rows[-1].end_ms) == 25.0 == raw_increase([v for _, v in points])
    inferred = [r._replace(increase=None) for r in rows]  # as Aggregate v1 windows
    assert increase(inferred, rows[-1].end_ms) == 5.0  # min < previous last: only last


def test_v1_windows_are_inferred_and_mix_with_v2_ones() -> None:
    def row(end: int, lo: float, last: float, inc: float | None) -> WindowRow:
        return WindowRow(end, 2, 0.0, lo, last, last, last, last, last, inc)

    rows = [row(10_000, 1.0, 4.0, None), row(20_000, 5.0, 9.0, None), row(30_000, 0.0, 2.0, 3.0)]
    # v1 pair: 9 - 4; v2 window: its own increase (it saw 9 -> 1 -> 2)
    assert increase(rows, 30_000) == 5.0 + 3.0
    assert increase(rows[:2], 20_000) == 5.0
