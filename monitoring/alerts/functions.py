"""Range functions over closed windows: the registry the PromQL evaluator calls.

Each function takes the windows of one series selected by ``[d]`` (oldest first) and
the evaluation time, and returns a value or ``None`` (no output for that series). The
window semantics are described in ``monitoring.alerts.promql``.

>>> from monitoring.alerts.history import WindowRow
>>> rows = [WindowRow(10_000, 2, 3.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0),
...         WindowRow(20_000, 2, 7.0, 3.0, 4.0, 4.0, 3.0, 4.0, 4.0)]
>>> avg_over_time(rows, 20_000)
2.5
>>> increase(rows, 20_000)
2.0
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monitoring.alerts.history import WindowRow

Rows = Sequence[WindowRow]


def avg_over_time(rows: Rows, t_ms: int) -> float | None:
    """Mean of every sample in the range: sum of sums over sum of counts (exact)."""
    n = sum(r.count for r in rows)
    return sum(r.sum for r in rows) / n if n else None


def sum_over_time(rows: Rows, t_ms: int) -> float | None:
    """Sum of every sample in the range (exact)."""
    return sum(r.sum for r in rows) if rows else None


def count_over_time(rows: Rows, t_ms: int) -> float | None:
    """Number of samples in the range (exact)."""
    return float(sum(r.count for r in rows)) if rows else None


def min_over_time(rows: Rows, t_ms: int) -> float | None:
    """Smallest sample in the range (exact)."""
    return _nan_min(r.min for r in rows) if rows else None


def max_over_time(rows: Rows, t_ms: int) -> float | None:
    """Greatest sample in the range (exact)."""
    return -_nan_min(-r.max for r in rows) if rows else None


def last_over_time(rows: Rows, t_ms: int) -> float | None:
    """The newest sample in the range."""
    return rows[-1].last if rows else None


def _nan_min(values: object) -> float:
    best = math.nan
    for v in values:  # type: ignore[attr-defined]
        if v < best or best != best:
            best = v
    return best


def increase(rows: Rows, t_ms: int) -> float | None:
    """Counter increase across the windows ending in ``[T-d, T]`` (one more than the others).

    Per window after the first, its own ``increase`` when it has one (Aggregate v2: exact,
    resets inside the window included, from the previous window's last sample on);
    otherwise inferred from the pair: ``cur.last - prev.last``, or ``cur.last`` when
    ``cur.min < prev.last`` (a reset: the counter restarted from 0). Needs two windows.

    >>> from monitoring.alerts.history import WindowRow
    >>> def row(end, lo, last, inc=None):
    ...     return WindowRow(end, 3, 0.0, lo, last, last, last, last, last, inc)
    >>> # 8 -> 10, reset to 0, -> 4 inside the second window: min and last see 10 -> 4
    >>> increase([row(10_000, 5.0, 8.0), row(20_000, 0.0, 4.0)], 20_000)
    4.0
    >>> increase([row(10_000, 5.0, 8.0, 3.0), row(20_000, 0.0, 4.0, 6.0)], 20_000)
    6.0
    """
    if len(rows) < 2:
        return None
    total = 0.0
    prev = rows[0].last
    for r in rows[1:]:
        inc = r.increase
        if inc is not None:
            total += inc
        else:
            total += r.last if r.min < prev else r.last - prev
        prev = r.last
    return total


def rate(rows: Rows, t_ms: int) -> float | None:
    """Per-second ``increase`` over the span its windows cover (``d`` when history is complete)."""
    inc = increase(rows, t_ms)
    if inc is None:
        return None
    return inc / ((rows[-1].end_ms - rows[0].end_ms) / 1000.0)


def _regression(rows: Rows, t_ms: int) -> tuple[float, float] | None:
    """Least squares slope (per second) and value at ``t_ms`` through (end, last).

    One pass over the windows; values are taken relative to the newest one so that
    large levels (bytes) do not cancel out the slope's precision.
    """
    n = len(rows)
    if n < 2:
        return None
    y0 = rows[-1].last
    sx = sy = sxx = sxy = 0.0
    for r in rows:
        x = (r.end_ms - t_ms) * 0.001
        y = r.last - y0
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    var = sxx - sx * sx / n
    slope = (sxy - sx * sy / n) / var
    return slope, y0 + (sy - slope * sx) / n


def deriv(rows: Rows, t_ms: int) -> float | None:
    """Per-second slope of the least squares line through the windows' (end, last)."""
    fit = _regression(rows, t_ms)
    return None if fit is None else fit[0]


def predict_linear(rows: Rows, t_ms: int, seconds: float) -> float | None:
    """The least squares line's value ``seconds`` after the evaluation time."""
    fit = _regression(rows, t_ms)
    return None if fit is None else fit[1] + fit[0] * seconds


_KNOT_P = (0.0, 0.5, 0.9, 0.99, 1.0)
_EPS = 1e-9


def quantile_over_time(rows: Rows, t_ms: int, q: float) -> float | None:
    """The ``q`` quantile of the samples in the range, estimated from window summaries.

    Each window's distribution is taken as linear between its knots min, p50, p90,
    p99, max (at ranks 0, .5, .9, .99, 1; equal knots make a point mass); windows are
    mixed weighted by count, and the smallest value whose mixed CDF reaches ``q`` is
    returned. Exact for q = 0 and 1; for a single window and q in {.5, .9, .99}, the
    window's own percentile.
    """
    if not rows:
        return None
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if q == 0:
        return _nan_min(r.min for r in rows)
    if q == 1:
        return -_nan_min(-r.max for r in rows)
    below = bisect.bisect_right(_KNOT_P, q) - 1  # knots around q: the answer's bracket
    above = bisect.bisect_left(_KNOT_P, q)
    windows = []
    knots: list[float] = []
    total = 0
    lo_x, hi_x = math.inf, -math.inf
    for r in rows:
        mx = r.max
        a = min(max(r.p50, r.min), mx)  # a sketch's percentile may stray 1 % outside
        b = min(max(r.p90, a), mx)
        c = min(max(r.p99, b), mx)
        w = (r.min, a, b, c, mx)
        windows.append((r.count, *w))
        knots.extend(w)
        lo_x = min(lo_x, w[below])
        hi_x = max(hi_x, w[above])
        total += r.count
    if not total:
        return None
    # the answer lies in [lo_x, hi_x]: only knots there can bound its segment
    xs = sorted({x for x in knots if lo_x < x < hi_x} | {lo_x, hi_x})

    def cdf(v: float) -> float:
        acc = 0.0
        for n, mn, a, b, c, mx in windows:
            if v < mn:
                continue
            if v >= mx:
                acc += n
            elif v < a:
                acc += n * 0.5 * (v - mn) / (a - mn)
            elif v < b:
                acc += n * (0.5 + 0.4 * (v - a) / (b - a))
            elif v < c:
                acc += n * (0.9 + 0.09 * (v - b) / (c - b))
            else:
                acc += n * (0.99 + 0.01 * (v - c) / (mx - c))
        return acc / total

    target = q - _EPS
    lo, hi = 0, len(xs) - 1  # F(xs[-1]) = 1: find the first knot value reaching q
    while lo < hi:
        mid = (lo + hi) // 2
        if cdf(xs[mid]) >= target:
            hi = mid
        else:
            lo = mid + 1
    if lo == 0:
        return xs[0]
    x0, x1 = xs[lo - 1], xs[lo]
    f0 = cdf(x0)
    f1_left = 2 * cdf((x0 + x1) / 2) - f0  # F is linear on [x0, x1)
    if f1_left < target or abs(f1_left - q) <= _EPS:
        return x1  # q is reached by a point mass at x1, or exactly at x1
    return x0 + (q - f0) / (f1_left - f0) * (x1 - x0)


@dataclass(frozen=True)
class RangeFunction:
    """A registered range function: its implementation and argument shape."""

    name: str
    fn: Callable[..., float | None]
    scalar_before: bool = False  # quantile_over_time(q, m[d])
    scalar_after: bool = False  # predict_linear(m[d], t)
    closed_start: bool = False  # reads the window ending at T-d too (rate, increase)
    keeps_name: bool = False


RANGE_FUNCTIONS: dict[str, RangeFunction] = {
    f.name: f
    for f in (
        RangeFunction("avg_over_time", avg_over_time),
        RangeFunction("sum_over_time", sum_over_time),
        RangeFunction("count_over_time", count_over_time),
        RangeFunction("min_over_time", min_over_time),
        RangeFunction("max_over_time", max_over_time),
        RangeFunction("last_over_time", last_over_time, keeps_name=True),
        RangeFunction("quantile_over_time", quantile_over_time, scalar_before=True),
        RangeFunction("rate", rate, closed_start=True),
        RangeFunction("increase", increase, closed_start=True),
        RangeFunction("deriv", deriv),
        RangeFunction("predict_linear", predict_linear, scalar_after=True),
    )
}
"""Range functions by PromQL name (``absent`` and ``absent_over_time`` live in the evaluator)."""
