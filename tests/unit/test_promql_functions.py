"""Range functions against brute force over the raw samples behind the windows."""

from __future__ import annotations

import itertools
import math

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.alerts.functions import (
    avg_over_time,
    count_over_time,
    increase,
    max_over_time,
    min_over_time,
    quantile_over_time,
    sum_over_time,
)
from monitoring.alerts.history import WindowRow

KNOT_P = (0.0, 0.5, 0.9, 0.99, 1.0)

windows_st = st.lists(
    st.lists(st.integers(-50, 50).map(float), min_size=1, max_size=40), min_size=1, max_size=5
)


def rows_of(windows: list[list[float]]) -> list[WindowRow]:
    out = []
    for i, values in enumerate(windows):
        a = WindowRow.of("m", {}, (i + 1) * 10_000, values)
        out.append(
            WindowRow(a.window_end_ms, a.count, a.sum, a.min, a.max, a.last, a.p50, a.p90, a.p99)
        )
    return out


def knots(r: WindowRow) -> list[float]:
    return [r.min, r.p50, r.p90, r.p99, r.max]


@settings(max_examples=examples(300), deadline=None)
@given(windows_st)
def test_exact_functions_equal_brute_force(windows: list[list[float]]) -> None:
    rows = rows_of(windows)
    flat = [v for w in windows for v in w]
    avg = avg_over_time(rows, 0)
    assert avg is not None and math.isclose(avg, sum(flat) / len(flat), abs_tol=1e-12)
    assert sum_over_time(rows, 0) == sum(flat)
    assert count_over_time(rows, 0) == len(flat)
    assert min_over_time(rows, 0) == min(flat)
    assert max_over_time(rows, 0) == max(flat)


@settings(max_examples=examples(500), deadline=None)
@given(windows_st, st.floats(0.001, 0.999))
def test_quantile_within_the_documented_bracket(windows: list[list[float]], q: float) -> None:
    rows = rows_of(windows)
    got = quantile_over_time(rows, 0, q)
    assert got is not None
    below = max(p for p in KNOT_P if p <= q)
    above = min(p for p in KNOT_P if p >= q)
    lo = min(knots(r)[KNOT_P.index(below)] for r in rows)
    hi = max(knots(r)[KNOT_P.index(above)] for r in rows)
    assert lo - 1e-9 <= got <= hi + 1e-9
    # the pooled samples' quantile lies between the windows' own q-quantiles (floor and
    # ceil rank), and each window's own quantile between its knots around q
    flat = sorted(v for w in windows for v in w)
    true = flat[int(q * (len(flat) - 1))]
    own_lo = [sorted(w)[int(q * (len(w) - 1))] for w in windows]
    own_hi = [sorted(w)[math.ceil(q * (len(w) - 1))] for w in windows]
    assert min(own_lo) <= true <= max(own_hi)
    for r, v in zip(rows, own_lo, strict=True):
        assert knots(r)[KNOT_P.index(below)] <= v <= knots(r)[KNOT_P.index(above)]


@given(st.lists(st.floats(0, 1000), min_size=2, max_size=10))
def test_single_window_quantiles_are_the_windows_percentiles(values: list[float]) -> None:
    (r,) = rows_of([values])
    assert quantile_over_time([r], 0, 0.5) == r.p50
    assert quantile_over_time([r], 0, 0.9) == r.p90
    assert quantile_over_time([r], 0, 0.99) == r.p99
    assert quantile_over_time([r], 0, 0.0) == r.min
    assert quantile_over_time([r], 0, 1.0) == r.max


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.lists(st.integers(0, 20), min_size=1, max_size=5), min_size=2, max_size=8))
def test_increase_of_a_monotonic_counter_is_last_minus_first(steps: list[list[int]]) -> None:
    """Without resets, increase = last window's last - first window's last."""
    total, windows = 0.0, []
    for inc in steps:
        vals = []
        for d in inc:
            total += d
            vals.append(total)
        windows.append(vals)
    rows = rows_of(windows)
    assert increase(rows, 0) == windows[-1][-1] - windows[0][-1]


def _mixture_cdf(rows: list[WindowRow], v: float) -> float:
    """Independent: each window's CDF through (knot, rank) points, right-continuous."""
    acc = 0.0
    for r in rows:
        pts = list(zip(knots(r), KNOT_P, strict=True))
        f = 0.0
        for (x0, p0), (x1, p1) in itertools.pairwise(pts):
            if v >= x1:
                f = p1
            elif x0 <= v < x1:
                f = p0 + (p1 - p0) * (v - x0) / (x1 - x0)
                break
        acc += r.count * f
    return acc / sum(r.count for r in rows)


@settings(max_examples=examples(300), deadline=None)
@given(windows_st, st.floats(0.01, 0.99))
def test_quantile_is_the_smallest_value_reaching_q(windows: list[list[float]], q: float) -> None:
    rows = rows_of(windows)
    got = quantile_over_time(rows, 0, q)
    assert got is not None
    assert _mixture_cdf(rows, got) >= q - 1e-9
    assert _mixture_cdf(rows, got - 1e-6) < q
