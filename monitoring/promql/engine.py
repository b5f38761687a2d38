"""The engine: fetch each selector's samples once, evaluate the plan over all steps.

``Engine.range`` evaluates every node once over the step grid (see ``values``), so a
range query costs a few vector operations per node rather than a pass per step.
``Engine.instant`` is the same with one step. Subqueries evaluate their inner
expression over their own aligned grid and hand the points on as windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from monitoring.promql.aggregations import aggregate
from monitoring.promql.binary import scalar_scalar, set_op, vector_scalar, vector_vector
from monitoring.promql.hints import SelectHint, accepts_hint, from_times
from monitoring.promql.model import (
    BadQuery,
    EvalError,
    Labels,
    QueryTimeout,
    Result,
    SeriesData,
    Source,
    TooLarge,
    is_stale,
    labels_key,
)
from monitoring.promql.plan import (
    NAME,
    Aggregate,
    At,
    Binary,
    Call,
    MatrixSel,
    Negate,
    Node,
    NumberLit,
    StringLit,
    Subquery,
    VectorSel,
    parse,
    walk,
)
from monitoring.promql.rangefuncs import RANGE_FUNCTIONS, predict_linear
from monitoring.promql.values import (
    Scalar,
    Str,
    Value,
    Vec,
    Windows,
    drop_name,
    windows_from_points,
)

TOO_MANY_SAMPLES = "query processing would load too many samples into memory in query execution"


def resolution_error(start_ms: int, end_ms: int, step_ms: int, max_points: int) -> TooLarge | None:
    """Prometheus's per-series resolution limit for a range query (its API's check)."""
    if (end_ms - start_ms) // step_ms + 1 > max_points:
        return TooLarge(
            f"exceeded maximum resolution of {max_points:,} points per timeseries. "
            "Try decreasing the query resolution (?step=XX)",
            "bad_data",
        )
    return None


@dataclass(frozen=True)
class _Need:
    """A selector's fetch: ``[start, end]`` and what of it the evaluation looks at."""

    start: int
    end: int
    hint: SelectHint | None


@dataclass
class _Series:
    labels: Labels
    t: np.ndarray
    v: np.ndarray


class Engine:
    """PromQL over raw samples with Prometheus 2.42's semantics (see docs/promql.md)."""

    def __init__(
        self,
        lookback_ms: int = 300_000,
        max_series: int = 10_000,
        max_points: int = 11_000,
        max_samples: int = 50_000_000,
        timeout_s: float = 30.0,
        default_step_ms: int = 60_000,
    ) -> None:
        self.lookback_ms = lookback_ms
        self.max_series = max_series
        self.max_points = max_points
        self.max_samples = max_samples
        self.timeout_s = timeout_s
        self.default_step_ms = default_step_ms
        """A subquery's step when it gives none (Prometheus's evaluation interval, 1m)."""

    def check_resolution(self, start_ms: int, end_ms: int, step_ms: int) -> None:
        """Raise ``TooLarge`` (``bad_data``) when a range query has too many points."""
        err = resolution_error(start_ms, end_ms, step_ms, self.max_points)
        if err is not None:
            raise err

    def instant(self, source: Source, query: str | Node, t_ms: int) -> Result:
        """The query's value at ``t_ms`` (``query`` as text, or as ``parse`` planned it)."""
        plan = parse(query) if isinstance(query, str) else query
        ev = _Evaluator(self, source, plan, t_ms, t_ms)
        value = ev.run(np.array([t_ms], dtype=np.int64))
        return _instant_result(value, t_ms)

    def range(self, source: Source, query: str, start_ms: int, end_ms: int, step_ms: int) -> Result:
        """The query at ``start, start+step, ... <= end``, as a matrix."""
        if step_ms <= 0:
            raise BadQuery(
                "zero or negative query resolution step widths are not accepted. "
                "Try a positive integer"
            )
        if end_ms < start_ms:
            raise BadQuery("end timestamp must not be before start time")
        self.check_resolution(start_ms, end_ms, step_ms)
        plan = parse(query)
        if plan.kind not in ("scalar", "vector"):
            what = "range vector" if plan.kind == "matrix" else plan.kind
            raise BadQuery(
                f'invalid expression type "{what}" for range query, '
                "must be Scalar or instant Vector"
            )
        ev = _Evaluator(self, source, plan, start_ms, end_ms)
        grid = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        value = ev.run(grid)
        if isinstance(value, Scalar):
            value = Vec([()], value.vals[None, :], np.ones((1, len(grid)), dtype=bool))
        assert isinstance(value, Vec)
        value = value.compact()
        order = sorted(range(len(value.labels)), key=lambda i: value.labels[i])
        series = []
        for i in order:
            m = value.ok[i]
            series.append((dict(value.labels[i]), grid[m], value.vals[i][m]))
        return Result("matrix", series)


def _instant_result(value: Value, t_ms: int) -> Result:
    if isinstance(value, Scalar):
        return Result("scalar", [], (t_ms, float(value.vals[0])))
    if isinstance(value, Str):
        return Result("string", [], None, string=(t_ms, value.value))
    if isinstance(value, Windows):
        out = []
        order = sorted(range(len(value.labels)), key=lambda i: value.labels[i])
        for i in order:
            lo, hi = value.lo[i, 0], value.hi[i, 0]
            if hi > lo:
                out.append((dict(value.labels[i]), value.t[lo:hi].copy(), value.v[lo:hi].copy()))
        return Result("matrix", out)
    t = np.array([t_ms], dtype=np.int64)
    series = [
        (dict(lab), t, np.array([value.vals[i, 0]]))
        for i, lab in enumerate(value.labels)
        if value.ok[i, 0]
    ]
    return Result("vector", series)


class _Evaluator:
    """One query's evaluation: fetched data, limits and the deadline."""

    def __init__(self, engine: Engine, source: Source, plan: Node, start: int, end: int) -> None:
        self.e = engine
        self.source = source
        self.plan = plan
        self.start, self.end = start, end
        self.deadline = time.monotonic() + engine.timeout_s
        self.data: dict[int, list[_Series]] = {}

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise QueryTimeout("query timed out in expression evaluation")

    def run(self, grid: np.ndarray) -> Value:
        self._fetch(grid)
        return self.eval(self.plan, grid)

    # -- data -----------------------------------------------------------------------

    def _at(self, at: At | None, grid: np.ndarray) -> np.ndarray:
        if at is None:
            return grid
        ms = {"start": self.start, "end": self.end}.get(at.kind, at.ms)
        return np.full(len(grid), ms, dtype=np.int64)

    def _intervals(self, node: Node, grid: np.ndarray, out: dict[int, _Need]) -> None:
        """The sample interval (and hint) each selector needs when ``node`` runs at
        ``grid``."""
        if isinstance(node, VectorSel | MatrixSel):
            sel = node if isinstance(node, VectorSel) else node.sel
            times = self._at(sel.at, grid) - sel.offset_ms
            reach = self.e.lookback_ms if isinstance(node, VectorSel) else node.range_ms
            instant = isinstance(node, VectorSel)
            a, b = int(times.min()) - reach, int(times.max())
            prev = out.get(id(sel))
            if prev is None:
                out[id(sel)] = _Need(a, b, from_times(times, reach, instant))
            else:  # one node reached twice: the union, all of it
                out[id(sel)] = _Need(min(a, prev.start), max(b, prev.end), None)
            return
        if isinstance(node, Subquery):
            g = self._subquery_grid(node, grid)
            if len(g):
                self._intervals(node.expr, g, out)
            return
        from monitoring.promql.plan import children

        for c in children(node):
            self._intervals(c, grid, out)

    def _fetch(self, grid: np.ndarray) -> None:
        needs: dict[int, _Need] = {}
        self._intervals(self.plan, grid, needs)
        sels = {id(n): n for n in walk(self.plan) if isinstance(n, VectorSel)}
        hinted = accepts_hint(self.source)
        total = 0
        for key, need in needs.items():
            self.check()
            matchers = list(sels[key].matchers)
            if hinted:
                found = self.source.select(matchers, need.start, need.end, hint=need.hint)  # type: ignore[call-arg]
            else:
                found = self.source.select(matchers, need.start, need.end)
            if len(found) > self.e.max_series:
                raise TooLarge(
                    f"the selector {sels[key].text} matches {len(found)} series, more than "
                    f"the limit of {self.e.max_series}"
                )
            total += sum(len(s.t_ms) for s in found)
            if total > self.e.max_samples:
                raise TooLarge(TOO_MANY_SAMPLES)
            self.data[key] = [self._series(s) for s in found]
            self.data[key].sort(key=lambda s: s.labels)

    @staticmethod
    def _series(s: SeriesData) -> _Series:
        t = np.asarray(s.t_ms, dtype=np.int64)
        v = np.asarray(s.values, dtype=np.float64)
        return _Series(labels_key(s.labels), t, v)

    def _limit_points(self, rows: int, steps: int) -> None:
        if rows * steps > self.e.max_samples:
            raise TooLarge(TOO_MANY_SAMPLES)

    # -- evaluation -----------------------------------------------------------------

    def eval(self, node: Node, grid: np.ndarray) -> Value:
        self.check()
        if isinstance(node, NumberLit):
            return Scalar(np.full(len(grid), node.value))
        if isinstance(node, StringLit):
            return Str(node.value)
        if isinstance(node, VectorSel):
            return self._instant_selector(node, grid)
        if isinstance(node, MatrixSel | Subquery):
            return self._windows(node, grid)
        if isinstance(node, Negate):
            inner = self.eval(node.expr, grid)
            if isinstance(inner, Scalar):
                return Scalar(-inner.vals)
            assert isinstance(inner, Vec)
            return Vec(inner.labels, -inner.vals, inner.ok).relabel(
                [drop_name(x) for x in inner.labels]
            )
        if isinstance(node, Binary):
            return self._binary(node, grid)
        if isinstance(node, Aggregate):
            return self._aggregate(node, grid)
        if isinstance(node, Call):
            from monitoring.promql.calls import call

            return call(self, node, grid)
        raise EvalError(f"unsupported expression {type(node).__name__}")  # pragma: no cover

    def _instant_selector(self, sel: VectorSel, grid: np.ndarray) -> Vec:
        """Newest sample in ``[t - lookback, t]`` (2.42's ``vectorSelectorSingle``:
        ``t < refTime - lookbackDelta`` is too old), unless it is a staleness marker."""
        ref = self._at(sel.at, grid) - sel.offset_ms
        series = self.data.get(id(sel), [])
        self._limit_points(len(series), len(grid))
        vals = np.zeros((len(series), len(grid)))
        ok = np.zeros((len(series), len(grid)), dtype=bool)
        ts = np.zeros((len(series), len(grid)), dtype=np.int64)
        low = ref - self.e.lookback_ms
        for i, s in enumerate(series):
            self.check()
            if not len(s.t):
                continue
            idx = np.searchsorted(s.t, ref, side="right") - 1
            has = idx >= 0
            idx = np.maximum(idx, 0)
            t = s.t[idx]
            v = s.v[idx]
            ok[i] = has & (t >= low) & ~is_stale(v)
            vals[i] = v
            ts[i] = t
        return Vec([s.labels for s in series], vals, ok, ts).compact()

    def _subquery_grid(self, node: Subquery, grid: np.ndarray) -> np.ndarray:
        """Prometheus's subquery steps: multiples of the step from the first one after
        ``start - offset - range`` up to ``end - offset``."""
        step = node.step_ms or self.e.default_step_ms
        base = self._at(node.at, grid)
        first = int(base[0]) - node.offset_ms - node.range_ms
        start = -((-first) // step) * step
        end = int(base[-1]) - node.offset_ms
        # counted before the steps are made: `x[7d:1ms]` would be 604.8 M of them
        if end >= start and (end - start) // step + 1 > self.e.max_points * 100:
            raise TooLarge(
                f"{TOO_MANY_SAMPLES}: the subquery [{node.range_ms}ms:{step}ms] has more "
                f"than {self.e.max_points * 100:,} steps"
            )
        return np.arange(start, end + 1, step, dtype=np.int64)

    def _windows(self, node: MatrixSel | Subquery, grid: np.ndarray) -> Windows:
        if isinstance(node, MatrixSel):
            ends = self._at(node.sel.at, grid) - node.sel.offset_ms
            series = self.data.get(id(node.sel), [])
            labels = [s.labels for s in series]
            points = []
            for s in series:
                keep = ~is_stale(s.v)
                points.append((s.t[keep], s.v[keep]))
            return windows_from_points(labels, points, ends, node.range_ms, self.check)
        inner_grid = self._subquery_grid(node, grid)
        ends = self._at(node.at, grid) - node.offset_ms
        inner = self.eval(node.expr, inner_grid) if len(inner_grid) else Vec.empty(0)
        if isinstance(inner, Scalar):
            inner = Vec([()], inner.vals[None, :], np.ones((1, len(inner_grid)), dtype=bool))
        assert isinstance(inner, Vec)
        inner = inner.compact()
        pts = [
            (inner_grid[inner.ok[i]], inner.vals[i][inner.ok[i]]) for i in range(len(inner.labels))
        ]
        return windows_from_points(list(inner.labels), pts, ends, node.range_ms, self.check)

    def _binary(self, node: Binary, grid: np.ndarray) -> Value:
        lhs = self.eval(node.lhs, grid)
        rhs = self.eval(node.rhs, grid)
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            return scalar_scalar(node.op, lhs.vals, rhs.vals)
        if isinstance(lhs, Vec) and isinstance(rhs, Scalar):
            return vector_scalar(node, lhs, rhs.vals, swap=False)
        if isinstance(lhs, Scalar) and isinstance(rhs, Vec):
            return vector_scalar(node, rhs, lhs.vals, swap=True)
        assert isinstance(lhs, Vec) and isinstance(rhs, Vec)
        if node.op in ("and", "or", "unless"):
            return set_op(node, lhs, rhs)
        return vector_vector(node, lhs, rhs)

    def _aggregate(self, node: Aggregate, grid: np.ndarray) -> Vec:
        param: np.ndarray | str | None = None
        if node.param is not None:
            p = self.eval(node.param, grid)
            if isinstance(p, Str):
                param = p.value
            else:
                assert isinstance(p, Scalar)
                param = p.vals
        inner = self.eval(node.expr, grid)
        assert isinstance(inner, Vec)
        return aggregate(node.op, inner, node.without, node.grouping, param)

    def scalar_arg(self, node: Node, grid: np.ndarray) -> np.ndarray:
        v = self.eval(node, grid)
        assert isinstance(v, Scalar)
        return v.vals

    def range_call(self, node: Call, w: Windows, grid: np.ndarray) -> Vec:
        """A range function over windows; the result drops ``__name__`` (but not
        ``last_over_time``'s) and may not hold two series with one label set."""
        args = [self.scalar_arg(a, grid) for a in node.args if a.kind == "scalar"]
        if node.func == "predict_linear":
            vals, ok = predict_linear(w, args, grid)
        else:
            vals, ok = RANGE_FUNCTIONS[node.func](w, args)
        vec = Vec(w.labels, vals, ok).compact()
        keep = node.func == "last_over_time"
        labels = vec.labels if keep else [drop_name(x) for x in vec.labels]
        return vec.relabel(labels, strict=True)


__all__ = ["NAME", "Engine", "resolution_error"]
