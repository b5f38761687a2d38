"""Function calls: which evaluation each PromQL function gets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from monitoring.promql import functions as fn
from monitoring.promql.model import EvalError, Labels
from monitoring.promql.plan import NAME, Call, MatrixSel, Node, StringLit, Subquery, VectorSel
from monitoring.promql.rangefuncs import RANGE_FUNCTIONS
from monitoring.promql.values import Scalar, Value, Vec, Windows, drop_name

if TYPE_CHECKING:
    from monitoring.promql.engine import _Evaluator


def absent_labels(arg: Node) -> Labels:
    """Prometheus's ``createLabelsForAbsentFunction``: the selector's equality matchers,
    minus names that also have another matcher."""
    sel = arg.sel if isinstance(arg, MatrixSel) else arg
    if not isinstance(sel, VectorSel):
        return ()
    found: dict[str, str] = {}
    dropped: set[str] = set()
    for m in sel.matchers:
        if m.name == NAME:
            continue
        if m.op == "=" and m.name not in found:
            found[m.name] = m.value
        else:
            dropped.add(m.name)
    return tuple(sorted((k, v) for k, v in found.items() if k not in dropped and v != ""))


def _string(node: Node) -> str:
    assert isinstance(node, StringLit)
    return node.value


def _one(steps: int, labels: Labels, present: object) -> Vec:
    mask = np.asarray(present, dtype=bool).reshape(1, steps)
    return Vec([labels], np.ones((1, steps)), mask).compact()


def call(ev: _Evaluator, node: Call, grid: np.ndarray) -> Value:
    """Evaluate ``node`` (a function call) over ``grid``."""
    name, args = node.func, node.args
    steps = len(grid)
    if name in RANGE_FUNCTIONS or name == "predict_linear":
        w = ev.eval(next(a for a in args if isinstance(a, MatrixSel | Subquery)), grid)
        assert isinstance(w, Windows)
        return ev.range_call(node, w, grid)
    if name == "absent_over_time":
        w = ev.eval(args[0], grid)
        assert isinstance(w, Windows)
        present = (w.hi > w.lo).any(axis=0) if len(w.labels) else np.zeros(steps, dtype=bool)
        return _one(steps, absent_labels(args[0]), ~present)
    if name == "time":
        return Scalar(grid.astype(np.float64) / 1000)
    if name == "pi":
        return Scalar(np.full(steps, np.pi))
    if name == "vector":
        return Vec([()], ev.scalar_arg(args[0], grid)[None, :], np.ones((1, steps), dtype=bool))
    if name in fn.DATE_FUNCTIONS and not args:
        return Vec([()], fn.date_fn(name, grid / 1000)[None, :], np.ones((1, steps), dtype=bool))
    if name == "histogram_quantile":
        q = ev.scalar_arg(args[0], grid)
        return fn.histogram_quantile(q, _vec(ev, args[1], grid))
    vec = _vec(ev, args[0], grid)
    if name == "scalar":
        counts = vec.ok.sum(axis=0)
        vals = np.where(vec.ok, vec.vals, 0).sum(axis=0) if len(vec.labels) else np.zeros(steps)
        return Scalar(np.where(counts == 1, vals, np.nan))
    if name == "absent":
        present = vec.ok.any(axis=0) if len(vec.labels) else np.zeros(steps, dtype=bool)
        return _one(steps, absent_labels(args[0]), ~present)
    if name in fn.MATH:
        return fn.math_fn(name, vec)
    if name == "round":
        nearest = ev.scalar_arg(args[1], grid) if len(args) > 1 else np.ones(steps)
        return fn.round_fn(vec, nearest)
    if name == "clamp":
        return fn.clamp(vec, ev.scalar_arg(args[1], grid), ev.scalar_arg(args[2], grid))
    if name == "clamp_min":
        return fn.clamp(vec, ev.scalar_arg(args[1], grid), None)
    if name == "clamp_max":
        return fn.clamp(vec, None, ev.scalar_arg(args[1], grid))
    if name == "timestamp":
        if isinstance(args[0], VectorSel) and vec.ts is not None:
            t = vec.ts.astype(np.float64) / 1000
        else:
            t = np.broadcast_to(grid[None, :].astype(np.float64) / 1000, vec.vals.shape)
        return Vec(vec.labels, t, vec.ok).relabel([drop_name(x) for x in vec.labels])
    if name in fn.DATE_FUNCTIONS:
        vals = fn.date_fn(name, vec.vals)
        return Vec(vec.labels, vals, vec.ok).relabel([drop_name(x) for x in vec.labels])
    if name == "label_replace":
        strs = [_string(a) for a in args[1:5]]
        return fn.label_replace(vec, *strs)
    if name == "label_join":
        return fn.label_join(
            vec, _string(args[1]), _string(args[2]), [_string(a) for a in args[3:]]
        )
    if name in ("sort", "sort_desc"):
        return fn.sort_rows(vec, name == "sort_desc")
    raise EvalError(f"function {name!r} is not supported by this engine")


def _vec(ev: _Evaluator, node: Node, grid: np.ndarray) -> Vec:
    v = ev.eval(node, grid)
    if not isinstance(v, Vec):
        raise EvalError(f"expected an instant vector, got {type(v).__name__}")
    return v
