"""The PromQL engine over raw samples: selectors, lookback, staleness, rate & co.

Expected values are computed here from Prometheus 2.42's definitions, not read back
from the engine.
"""

from __future__ import annotations

import itertools
import math
import struct
import tracemalloc

import numpy as np
import pytest
from fixtures.promql_source import MemorySource, series

from monitoring.promql import BadQuery, Engine, EvalError, QueryTimeout, TooLarge, selectors

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
ENGINE = Engine()


def values(result) -> dict[tuple, float]:  # type: ignore[no-untyped-def]
    return {tuple(sorted(lab.items())): float(v[-1]) for lab, _, v in result.series}


def test_instant_selector_takes_newest_sample_within_lookback_closed_at_both_ends() -> None:
    src = MemorySource([series({"__name__": "m", "a": "1"}, [(0, 1.0), (10_000, 2.0)])])
    assert values(ENGINE.instant(src, "m", 10_000)) == {(("__name__", "m"), ("a", "1")): 2.0}
    assert values(ENGINE.instant(src, "m", 9_999)) == {(("__name__", "m"), ("a", "1")): 1.0}
    # 2.42: a sample exactly lookback old still counts (t < ref - lookback is too old)
    assert len(ENGINE.instant(src, "m", 310_000).series) == 1
    assert ENGINE.instant(src, "m", 310_001).series == []
    assert ENGINE.instant(src, "m", -1).series == []


def test_staleness_marker_ends_the_series_until_the_next_sample() -> None:
    src = MemorySource([series({"__name__": "m"}, [(0, 1.0), (15_000, STALE), (60_000, 3.0)])])
    assert len(ENGINE.instant(src, "m", 14_000).series) == 1
    assert ENGINE.instant(src, "m", 30_000).series == []
    assert values(ENGINE.instant(src, "m", 61_000)) == {(("__name__", "m"),): 3.0}
    # a stale marker is not a sample of a range either
    r = ENGINE.instant(src, "count_over_time(m[2m])", 61_000)
    assert values(r) == {(): 2.0}


def test_offset_and_at_move_the_evaluation_time() -> None:
    src = MemorySource(
        [series({"__name__": "m"}, [(t, t / 1000) for t in range(0, 600_001, 60_000)])]
    )
    assert values(ENGINE.instant(src, "m offset 2m", 600_000)) == {(("__name__", "m"),): 480.0}
    assert values(ENGINE.instant(src, "m offset -2m", 300_000)) == {(("__name__", "m"),): 420.0}
    assert values(ENGINE.instant(src, "m @ 120", 600_000)) == {(("__name__", "m"),): 120.0}
    r = ENGINE.range(src, "m @ end()", 0, 240_000, 60_000)
    assert r.series[0][2].tolist() == [240.0] * 5


def _rate_by_hand(points: list[tuple[int, float]], t: int, rng: int, counter: bool) -> float | None:
    """extrapolatedRate from its definition, plainly (2.42)."""
    pts = [(pt, v) for pt, v in points if t - rng <= pt <= t]
    if len(pts) < 2:
        return None
    result = pts[-1][1] - pts[0][1]
    if counter:
        for (_, a), (_, b) in itertools.pairwise(pts):
            if b < a:
                result += a
    to_start = (pts[0][0] - (t - rng)) / 1000
    to_end = (t - pts[-1][0]) / 1000
    sampled = (pts[-1][0] - pts[0][0]) / 1000
    avg = sampled / (len(pts) - 1)
    if counter and result > 0 and pts[0][1] >= 0:
        to_start = min(to_start, sampled * (pts[0][1] / result))
    ext = sampled
    ext += to_start if to_start < avg * 1.1 else avg / 2
    ext += to_end if to_end < avg * 1.1 else avg / 2
    return result * (ext / sampled) / (rng / 1000)


COUNTER = [(0, 5.0), (15_000, 9.0), (31_000, 14.0), (44_000, 2.0), (60_000, 7.0), (76_000, 7.0),
           (91_000, 1.0), (105_000, 30.0), (120_000, 31.0), (150_000, 40.0)]  # fmt: skip


@pytest.mark.parametrize("t", [30_000, 60_000, 90_000, 100_000, 125_000, 160_000, 200_000])
@pytest.mark.parametrize("fn,counter", [("rate", True), ("delta", False)])
def test_rate_and_delta_match_the_definition_with_resets(t: int, fn: str, counter: bool) -> None:
    src = MemorySource([series({"__name__": "c", "j": "x"}, COUNTER)])
    got = values(ENGINE.instant(src, f"{fn}(c[1m])", t))
    want = _rate_by_hand(COUNTER, t, 60_000, counter)
    if want is None:
        assert got == {}
        return
    if fn == "delta":
        want *= 60
    assert got == {(("j", "x"),): pytest.approx(want, rel=1e-12)}


def test_increase_irate_resets_changes_by_hand() -> None:
    src = MemorySource([series({"__name__": "c"}, COUNTER)])
    t = 120_000
    inc = values(ENGINE.instant(src, "increase(c[1m])", t))[()]
    assert inc == pytest.approx(_rate_by_hand(COUNTER, t, 60_000, True) * 60)  # type: ignore[operator]
    # irate: last two samples 105s=30 and 120s=31
    assert values(ENGINE.instant(src, "irate(c[1m])", t))[()] == pytest.approx(1 / 15)
    # over (0, 150]: drops at 44s and 91s; value changes at every step but 76s
    assert values(ENGINE.instant(src, "resets(c[150s])", 150_000))[()] == 2
    assert values(ENGINE.instant(src, "changes(c[150s])", 150_000))[()] == 8


def test_over_time_functions_by_hand() -> None:
    pts = [(i * 10_000, v) for i, v in enumerate([3.0, -1.0, 4.0, 1.0, 5.0, 9.0, 2.0])]
    src = MemorySource([series({"__name__": "g", "h": "a"}, pts)])
    vals = [v for _, v in pts[1:]]  # [t-60s, t] at t=60s holds all but... t=0..60s
    vals = [v for _, v in pts]
    t = 60_000
    want = {
        "sum_over_time": sum(vals),
        "avg_over_time": sum(vals) / len(vals),
        "min_over_time": min(vals),
        "max_over_time": max(vals),
        "count_over_time": len(vals),
        "last_over_time": vals[-1],
        "present_over_time": 1,
        "stdvar_over_time": float(np.var(vals)),
        "stddev_over_time": float(np.std(vals)),
    }
    for fn, w in want.items():
        got = values(ENGINE.instant(src, f"{fn}(g[1m])", t))
        assert list(got.values()) == [pytest.approx(w)], fn
    q = values(ENGINE.instant(src, "quantile_over_time(0.25, g[1m])", t))
    s = sorted(vals)
    rank = 0.25 * (len(s) - 1)
    assert list(q.values()) == [pytest.approx(s[1] * (1 - (rank - 1)) + s[2] * (rank - 1))]
    # last_over_time keeps the metric name, the others drop it
    assert ("__name__", "g") in next(iter(values(ENGINE.instant(src, "last_over_time(g[1m])", t))))


def test_deriv_and_predict_linear_fit_a_line_exactly() -> None:
    pts = [(i * 15_000, 2.0 + 0.5 * i * 15) for i in range(9)]  # slope 0.5/s
    src = MemorySource([series({"__name__": "g"}, pts)])
    t = 120_000
    assert values(ENGINE.instant(src, "deriv(g[2m])", t))[()] == pytest.approx(0.5)
    got = values(ENGINE.instant(src, "predict_linear(g[2m], 60)", t))[()]
    assert got == pytest.approx(2.0 + 0.5 * 180)


def test_aggregations_and_binary_operators() -> None:
    data = [
        series({"__name__": "m", "job": "a", "i": "1"}, [(0, 1.0)]),
        series({"__name__": "m", "job": "a", "i": "2"}, [(0, 3.0)]),
        series({"__name__": "m", "job": "b", "i": "1"}, [(0, 10.0)]),
        series({"__name__": "info", "job": "a", "v": "x"}, [(0, 1.0)]),
        series({"__name__": "info", "job": "b", "v": "y"}, [(0, 1.0)]),
    ]
    src = MemorySource(data)

    def q(expr: str) -> dict[tuple, float]:
        return values(ENGINE.instant(src, expr, 1000))

    assert q("sum by (job) (m)") == {(("job", "a"),): 4.0, (("job", "b"),): 10.0}
    assert q("avg without (i) (m)") == {(("job", "a"),): 2.0, (("job", "b"),): 10.0}
    assert q("count(m)") == {(): 3.0}
    assert q("topk(1, m) by (job)") == {
        (("__name__", "m"), ("i", "2"), ("job", "a")): 3.0,
        (("__name__", "m"), ("i", "1"), ("job", "b")): 10.0,
    }
    assert q('count_values("val", m)') == {
        (("val", "1"),): 1,
        (("val", "3"),): 1,
        (("val", "10"),): 1,
    }
    assert q("m > 2") == {
        (("__name__", "m"), ("i", "2"), ("job", "a")): 3.0,
        (("__name__", "m"), ("i", "1"), ("job", "b")): 10.0,
    }
    assert q("m > bool 2")[(("i", "1"), ("job", "a"))] == 0.0
    assert q("m * on(job) group_left(v) info") == {
        (("i", "1"), ("job", "a"), ("v", "x")): 1.0,
        (("i", "2"), ("job", "a"), ("v", "x")): 3.0,
        (("i", "1"), ("job", "b"), ("v", "y")): 10.0,
    }
    assert q("m and on(job) info{v='y'}") == {(("__name__", "m"), ("i", "1"), ("job", "b")): 10.0}
    assert q("sum(m) / 2 + 1") == {(): 8.0}
    with pytest.raises(
        EvalError,
        match="many-to-many matching not allowed: matching labels must be unique on one side",
    ):
        ENGINE.instant(src, "info * on(job) m", 1000)
    with pytest.raises(EvalError, match="many-to-one matching must be explicit"):
        ENGINE.instant(src, "m * on(job) info", 1000)
    with pytest.raises(EvalError, match="vector cannot contain metrics with the same labelset"):
        ENGINE.instant(src, "m{i='1'} + 0 or m", 1000) if False else ENGINE.instant(
            src, "label_replace(m, 'i', '', 'i', '.*')", 1000
        )


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    buckets = {"0.1": 10.0, "0.5": 30.0, "1": 35.0, "+Inf": 40.0}
    src = MemorySource(
        [
            series({"__name__": "h_bucket", "le": le, "j": "x"}, [(0, c)])
            for le, c in buckets.items()
        ]
    )
    # rank 0.5*40 = 20 lies in (0.1, 0.5]: 0.1 + 0.4 * (20-10)/(30-10)
    got = values(ENGINE.instant(src, "histogram_quantile(0.5, h_bucket)", 0))
    assert got == {(("j", "x"),): pytest.approx(0.3)}
    # rank beyond the last finite bucket: its upper bound
    got = values(ENGINE.instant(src, "histogram_quantile(0.99, h_bucket)", 0))
    assert got == {(("j", "x"),): 1.0}


def test_range_query_is_sorted_matrix_and_omits_series_without_points() -> None:
    src = MemorySource(
        [
            series({"__name__": "m", "a": "2"}, [(0, 1.0), (60_000, 2.0)]),
            series({"__name__": "m", "a": "1"}, [(0, 5.0)]),
            series({"__name__": "m", "a": "3"}, [(10_000_000, 5.0)]),
        ]
    )
    r = ENGINE.range(src, "m", 0, 600_000, 60_000)
    assert r.type == "matrix"
    assert [s[0]["a"] for s in r.series] == ["1", "2"]
    _lab, t, _v = r.series[0]
    assert t.tolist() == list(range(0, 300_001, 60_000))  # 5m lookback
    assert r.series[1][2].tolist() == [1.0] + [2.0] * 6


def test_source_is_asked_once_per_selector_for_the_whole_interval() -> None:
    src = MemorySource([series({"__name__": "m"}, [(0, 1.0)])])
    ENGINE.range(src, "rate(m[5m]) + m offset 1m", 600_000, 1_200_000, 15_000)
    assert [(c[1], c[2]) for c in src.calls] == [
        (600_000 - 300_000, 1_200_000),
        (600_000 - 60_000 - 300_000, 1_200_000 - 60_000),
    ]
    assert selectors("rate(m[5m]) + max_over_time(m[10m:1m] offset 1m)") == [
        ([selectors("m")[0][0][0]], 300_000),
        ([selectors("m")[0][0][0]], 600_000 + 60_000 + 300_000),
    ]


@pytest.mark.parametrize(
    "query,pos",
    [  # Prometheus 2.42's own positions for these (its API says "1:<pos+1>: parse error")
        ("foo{a=}", 6),
        ("sum(x) by", 9),
        ("rate(x[5m]", 10),
        ('m{a="x}', 4),
        ("x + ", 4),
        ("1 $ 2", 2),
        ("foo bar", 4),
        ("x offset", 8),
        ("sum(x) by (a", 12),
    ],
)
def test_parse_errors_have_positions(query: str, pos: int) -> None:
    with pytest.raises(BadQuery) as e:
        ENGINE.instant(MemorySource([]), query, 0)
    assert e.value.error_type == "bad_data"
    assert e.value.position == pos
    assert e.value.message.startswith(f"1:{pos + 1}: parse error")


def test_limits_fail_before_evaluating() -> None:
    src = MemorySource([series({"__name__": "m", "i": str(i)}, [(0, 1.0)]) for i in range(5)])
    with pytest.raises(TooLarge, match="exceeded maximum resolution of 11,000 points") as e:
        ENGINE.range(src, "m", 0, 11_000_000, 1000)
    assert e.value.error_type == "bad_data"
    with pytest.raises(TooLarge, match="more than the limit of 4") as e:
        Engine(max_series=4).instant(src, "m", 0)
    assert e.value.error_type == "execution"
    with pytest.raises(TooLarge, match="too many samples"):
        Engine(max_samples=3).instant(src, "m", 0)
    with pytest.raises(QueryTimeout) as t:
        Engine(timeout_s=0).instant(src, "m", 0)
    assert t.value.error_type == "timeout"


@pytest.mark.parametrize("query", ["max_over_time(m[7d:1ms])", "rate(m[5m:1ms])[7d:1ms]"])
def test_subquery_steps_are_counted_before_they_are_made(query: str) -> None:
    """604.8 M steps of a week at 1 ms would be a 4.8 GB array before any check: the
    subquery is refused first, holding nothing."""
    src = MemorySource([series({"__name__": "m"}, [(0, 1.0)])])
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge, match="too many samples") as e:
            ENGINE.instant(src, query, 7 * 86_400_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.error_type == "execution"
    assert peak < 16 * 1024 * 1024


def test_deadline_is_checked_inside_an_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heavy node (a subquery's selector over many series, its windows) checks the
    deadline as it goes, not only between nodes: a clock that moves 1 s per look runs
    past a 10 s deadline inside the evaluation of this five-node query."""
    src = MemorySource(
        [series({"__name__": "m", "i": str(i)}, [(0, 1.0), (60_000, 2.0)]) for i in range(20)]
    )
    clock = itertools.count()
    monkeypatch.setattr("monitoring.promql.engine.time.monotonic", lambda: float(next(clock)))
    with pytest.raises(QueryTimeout):
        Engine(timeout_s=10).instant(src, "max_over_time(m[10m:1s])", 600_000)


def test_scalar_and_string_results() -> None:
    src = MemorySource([])
    r = ENGINE.instant(src, "time() + 1", 5000)
    assert r.type == "scalar" and r.scalar == (5000, 6.0)
    r = ENGINE.instant(src, '"hello"', 5000)
    assert r.type == "string" and r.string == (5000, "hello")
    r = ENGINE.range(src, "vector(2)", 0, 120_000, 60_000)
    assert r.type == "matrix" and r.series[0][2].tolist() == [2.0] * 3
    r = ENGINE.instant(src, "absent(nope{job='x', i=~'.*'})", 0)
    assert values(r) == {(("job", "x"),): 1.0}
    assert math.isnan(ENGINE.instant(src, "scalar(nope)", 0).scalar[1])  # type: ignore[index]
