"""The window subset and the sample-engine fallback agree where both apply.

With ONE sample per window, a window's statistics are that sample, so the subset
(exact over window statistics) and ``monitoring.promql`` over the history seen as
window-end samples must give the same answer, at every evaluation time, including
the lookback and range boundaries, gaps and evaluation before the newest window.
"""

from __future__ import annotations

import math
from typing import Any

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.alerts.history import WindowHistory, WindowRow
from monitoring.alerts.promql import compile_expr
from monitoring.alerts.sample_rules import SampleQuery, compile_samples

W = 10_000
HOSTS = {"a": "x", "b": "x", "c": "y", "d": "y"}

BOTH = [
    "m",
    'm{host="a"}',
    'm{host=~"a|c", dc!="y"}',
    "m > 50",
    "m <= bool 20",
    "-m + 2 * m2",
    "m > on(host) m2",
    "m and on(dc) m2",
    "m unless m2 > 100",
    "m or m2",
    "sum by (dc) (m)",
    "avg(m)",
    "min without (host) (m)",
    "max by (host, dc) (m)",
    "count(m2 > 0)",
    "min_over_time(m[1m])",
    "max_over_time(m[30s])",
    "last_over_time(m[1m])",
    "count_over_time(m[2m])",
    "sum_over_time(m[1m])",
    "avg_over_time(m[1m])",
    "sum by (dc) (max_over_time(m[1m])) > 100",
    'absent(m{host="z"})',
    'absent(m{host="a"})',
    'absent_over_time(m{host="a"}[1m])',
    "vector(1)",
    "deriv(m[1m])",
    "3 * 2",
]

series = st.lists(
    st.one_of(st.none(), st.floats(-1000, 1000, allow_nan=False).map(lambda v: round(v, 3))),
    min_size=1,
    max_size=40,
)


def build(data: dict[tuple[str, str], list[float | None]]) -> WindowHistory:
    h = WindowHistory(W, retention_ms=10**9)
    for (name, host), values in data.items():
        for i, v in enumerate(values):
            if v is not None:
                h.add(WindowRow.of(name, {"host": host, "dc": HOSTS[host]}, (i + 1) * W, [v]))
    return h


def as_map(value: Any) -> dict[Any, float]:
    if isinstance(value, float):
        return {(): value}
    out = dict(value)
    assert len(out) == len(value)
    return out


def close(a: float, b: float, loose: bool) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    tol = 1e-6 if loose else 1e-9
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


@settings(max_examples=examples(150), deadline=None)
@given(
    data=st.dictionaries(
        st.tuples(st.sampled_from(["m", "m2"]), st.sampled_from(sorted(HOSTS))), series
    ),
    at=st.integers(1, 75),
)
def test_subset_and_sample_engine_agree(data: dict[Any, list[float | None]], at: int) -> None:
    h = build(data)
    t = at * W
    for expr in BOTH:
        subset = compile_expr(expr)
        fallback = compile_samples(expr)
        assert isinstance(fallback.root, SampleQuery)
        got, want = as_map(fallback.evaluate(h, t)), as_map(subset.evaluate(h, t))
        assert got.keys() == want.keys(), expr
        loose = expr.startswith("deriv")  # least squares: rounding differs
        for k, v in want.items():
            assert close(got[k], v, loose), (expr, k, got[k], v)


def test_the_boundaries_are_the_subsets() -> None:
    """A window ending exactly ``lookback`` (or ``d``) before T is out for both paths,
    one ending a millisecond later is in."""
    h = WindowHistory(W, retention_ms=10**9)
    h.add(WindowRow.of("m", {"host": "a"}, W, [1.0]))
    instant = ((("__name__", "m"), ("host", "a")), 1.0)
    ranged = ((("host", "a"),), 1.0)
    for expr, d, out in (("m", h.lookback_ms, instant), ("count_over_time(m[1m])", 60_000, ranged)):
        for t, want in ((W + d, []), (W + d - 1, [out])):
            assert compile_expr(expr).evaluate(h, t) == want, (expr, t)
            assert compile_samples(expr).evaluate(h, t) == want, (expr, t)
