"""A source that leaves out every sample ``SelectHint.keep`` rejects gives bit-identical
answers to one that returns everything (hypothesis: random series with counter resets,
NaNs and staleness markers; random steps, ranges, offsets, lookbacks; range and instant
queries over range functions, instant selectors and subqueries)."""

from __future__ import annotations

import struct

import numpy as np
from fixtures.hypothesis_profiles import examples
from fixtures.promql_source import MemorySource, series
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.promql import Engine, Matcher, Result, SelectHint, SeriesData
from monitoring.promql.hints import accepts_hint, from_times

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


class ThinSource(MemorySource):
    """The in-memory source, told the hint: it returns only what ``hint.keep`` keeps."""

    def __init__(self, data: list[SeriesData]) -> None:
        super().__init__(data)
        self.hints: list[SelectHint | None] = []
        self.dropped = 0
        self.kept = 0

    def select(  # type: ignore[override]
        self, matchers: list[Matcher], start_ms: int, end_ms: int, hint: SelectHint | None = None
    ) -> list[SeriesData]:
        self.hints.append(hint)
        out = super().select(matchers, start_ms, end_ms)
        if hint is None:
            return out
        thinned = []
        for s in out:
            keep = hint.keep(s.t_ms)
            self.dropped += int((~keep).sum())
            self.kept += int(keep.sum())
            thinned.append(SeriesData(s.labels, s.t_ms[keep], s.values[keep]))
        return thinned


RANGE_EXPRS = [
    "rate(m[{r}])",
    "increase(m[{r}] offset {o})",
    "delta(m[{r}])",
    "irate(m[{r}])",
    "idelta(m[{r}])",
    "resets(m[{r}])",
    "changes(m[{r}])",
    "deriv(m[{r}])",
    "predict_linear(m[{r}], 60)",
    "sum_over_time(m[{r}])",
    "avg_over_time(m[{r}] offset {o})",
    "min_over_time(m[{r}])",
    "max_over_time(m[{r}])",
    "count_over_time(m[{r}])",
    "last_over_time(m[{r}])",
    "stddev_over_time(m[{r}])",
    "quantile_over_time(0.7, m[{r}])",
    "absent_over_time(m{{i='0'}}[{r}])",
    "m",
    "m offset {o}",
    "timestamp(m)",
    "m @ {at}",
    "rate(m[{r}] @ {at})",
    "sum by (g) (m)",
    "m - m offset {o}",
    "max_over_time(rate(m[{r}])[{R}:{S}])",
    "avg_over_time(m[{R}:{S}] offset {o})",
    "last_over_time(m[{R}:])",
    "rate(m[{r}]) / on(i) group_left m",
]


@st.composite
def datasets(draw: st.DrawFn) -> list[SeriesData]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        n = draw(st.integers(0, 60))
        ts = sorted(set(draw(st.lists(st.integers(0, 4000), min_size=n, max_size=n))))
        vals: list[float] = []
        level = 0.0
        for _ in ts:
            kind = draw(st.sampled_from(["up", "up", "up", "reset", "nan", "stale"]))
            if kind == "up":
                level += draw(st.integers(0, 9)) / 4
                vals.append(level)
            elif kind == "reset":
                level = float(draw(st.integers(0, 3)))
                vals.append(level)
            else:
                vals.append(float("nan") if kind == "nan" else STALE)
        labels = {"__name__": "m", "i": str(i), "g": draw(st.sampled_from("ab"))}
        out.append(series(labels, [(t * 1000, v) for t, v in zip(ts, vals, strict=True)]))
    return out


def _seconds(draw: st.DrawFn, lo: int, hi: int) -> str:
    return f"{draw(st.integers(lo, hi))}s"


@st.composite
def queries(draw: st.DrawFn) -> str:
    template = draw(st.sampled_from(RANGE_EXPRS))
    return template.format(
        r=_seconds(draw, 1, 400),
        o=_seconds(draw, 1, 600),
        R=_seconds(draw, 10, 900),
        S=_seconds(draw, 1, 120),
        at=draw(st.integers(0, 4000)),
    )


def _same(a: Result, b: Result) -> None:
    assert a.type == b.type
    assert a.scalar == b.scalar or (
        a.scalar is not None and b.scalar is not None and _bits(a.scalar[1]) == _bits(b.scalar[1])
    )
    assert len(a.series) == len(b.series)
    for (la, ta, va), (lb, tb, vb) in zip(a.series, b.series, strict=True):
        assert la == lb
        assert np.array_equal(ta, tb)
        assert np.array_equal(np.asarray(va).view(np.uint64), np.asarray(vb).view(np.uint64))


def _bits(x: float) -> int:
    return int(np.float64(x).view(np.uint64))


@settings(max_examples=examples(400), deadline=None)
@given(
    data=datasets(),
    query=queries(),
    start=st.integers(0, 4000),
    points=st.integers(1, 40),
    step=st.integers(1, 900),
    lookback=st.integers(1, 400),
)
def test_thinned_range_query_is_bit_identical(
    data: list[SeriesData], query: str, start: int, points: int, step: int, lookback: int
) -> None:
    engine = Engine(lookback_ms=lookback * 1000)
    s, e, st_ms = start * 1000, (start + (points - 1) * step) * 1000, step * 1000
    full = engine.range(MemorySource(data), query, s, e, st_ms)
    thin = ThinSource(data)
    _same(full, engine.range(thin, query, s, e, st_ms))
    assert any(h is not None for h in thin.hints) or not thin.hints


@settings(max_examples=examples(200), deadline=None)
@given(data=datasets(), query=queries(), at=st.integers(0, 4500), lookback=st.integers(1, 400))
def test_thinned_instant_query_is_bit_identical(
    data: list[SeriesData], query: str, at: int, lookback: int
) -> None:
    engine = Engine(lookback_ms=lookback * 1000)
    full = engine.instant(MemorySource(data), query, at * 1000)
    _same(full, engine.instant(ThinSource(data), query, at * 1000))


def test_a_long_step_leaves_most_samples_out() -> None:
    """``rate(m[1m])`` every hour over a 15 s series reads 5 of each 240 samples."""
    data = [series({"__name__": "m"}, [(t * 15_000, float(t)) for t in range(2_000)])]
    thin = ThinSource(data)
    full = Engine().range(MemorySource(data), "rate(m[1m])", 3_600_000, 28_800_000, 3_600_000)
    _same(full, Engine().range(thin, "rate(m[1m])", 3_600_000, 28_800_000, 3_600_000))
    assert thin.hints == [SelectHint(3_600_000, 28_800_000, 3_600_000, 60_000, False)]
    assert (thin.kept, thin.dropped) == (8 * 5, 1_685 - 8 * 5)


def test_hints_of_times() -> None:
    assert from_times(np.array([5, 5, 5]), 10, True) == SelectHint(5, 5, 0, 10, True)
    assert from_times(np.array([0, 10, 20]), 7, False) == SelectHint(0, 20, 10, 7, False)
    assert from_times(np.array([0, 10, 25]), 7, False) is None
    assert SelectHint(0, 100, 10, 20, False).thins() is False
    assert SelectHint(0, 100, 60, 20, False).thins() is True
    assert SelectHint(0, 0, 0, 300_000, True).thins() is False
    assert SelectHint(0, 3_600_000, 600_000, 300_000, True).thins() is True


def test_sources_without_the_keyword_are_called_as_before() -> None:
    plain = MemorySource([series({"__name__": "m"}, [(0, 1.0)])])
    assert not accepts_hint(plain)
    assert accepts_hint(ThinSource([]))
    assert Engine().instant(plain, "m", 1000).series[0][2].tolist() == [1.0]
    assert plain.calls == [([Matcher("__name__", "=", "m")], -299_000, 1000)]
