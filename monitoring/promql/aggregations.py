"""Aggregation operators (``sum by (a) (v)`` ...) over every step at once.

Groups depend on labels only, so they are formed once; each group then runs
Prometheus 2.42's per-element update (in input order) across its member rows, as
vector operations over the steps. ``topk``/``bottomk``/``quantile``/``count_values``
go step by step (their result membership changes per step).
"""

from __future__ import annotations

import math

import numpy as np

from monitoring.metrics.prom_syntax import format_value
from monitoring.promql.model import EvalError, Labels
from monitoring.promql.rangefuncs import quantile
from monitoring.promql.values import NAME, Vec, drop_these, keep_only, set_label

LABEL_NAME_OK = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"


def group_key(labels: Labels, without: bool, grouping: frozenset[str]) -> Labels:
    """The group of a series: only ``by`` labels, or all but ``without`` ones and the name."""
    if without:
        return tuple(p for p in labels if p[0] not in grouping and p[0] != NAME)
    return keep_only(labels, grouping)


def aggregate(
    op: str, vec: Vec, without: bool, grouping: tuple[str, ...], param: np.ndarray | str | None
) -> Vec:
    """``op [by|without (grouping)] ([param,] vec)`` for every step."""
    names = frozenset(grouping)
    if op == "count_values":
        assert isinstance(param, str)
        return _count_values(vec, without, names, param)
    if op in ("topk", "bottomk"):
        assert isinstance(param, np.ndarray)
        return _topk(vec, without, names, param, op == "topk")
    groups: dict[Labels, list[int]] = {}
    for i, lab in enumerate(vec.labels):
        groups.setdefault(group_key(lab, without, names), []).append(i)
    steps = vec.vals.shape[1]
    out_vals = np.zeros((len(groups), steps))
    out_ok = np.zeros((len(groups), steps), dtype=bool)
    with np.errstate(all="ignore"):
        for g, rows in enumerate(groups.values()):
            if op == "quantile":
                assert isinstance(param, np.ndarray)
                out_vals[g], out_ok[g] = _quantile(vec, rows, param)
            else:
                out_vals[g], out_ok[g] = _fold(op, vec, rows)
    return Vec(list(groups), out_vals, out_ok).compact()


def _fold(op: str, vec: Vec, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    steps = vec.vals.shape[1]
    value = np.zeros(steps)
    mean = np.zeros(steps)
    count = np.zeros(steps)
    seen = np.zeros(steps, dtype=bool)
    for r in rows:
        m, v = vec.ok[r], vec.vals[r]
        first = m & ~seen
        more = m & seen
        count = np.where(m, count + 1, count)
        if op == "sum":
            value = np.where(first, v, np.where(more, value + v, value))
        elif op == "avg":
            inf = np.isinf(mean)
            skip = inf & ((np.isinf(v) & ((mean > 0) == (v > 0))) | (~np.isinf(v) & ~np.isnan(v)))
            upd = mean + (v / count - mean / count)
            mean = np.where(first, v, np.where(more & ~skip, upd, mean))
        elif op in ("min", "max"):
            better = (value > v) if op == "min" else (value < v)
            value = np.where(first | (more & (better | np.isnan(value))), v, value)
        elif op in ("stddev", "stdvar"):
            delta = v - mean
            new_mean = mean + delta / count
            value = np.where(first, 0.0, np.where(more, value + delta * (v - new_mean), value))
            mean = np.where(first, v, np.where(more, new_mean, mean))
        elif op not in ("count", "group"):
            raise EvalError(f"unsupported aggregation {op!r}")
        seen |= m
    if op == "avg":
        value = mean
    elif op == "count":
        value = count
    elif op == "group":
        value = np.ones(steps)
    elif op == "stdvar":
        value = value / count
    elif op == "stddev":
        value = np.sqrt(value / count)
    return value, seen


def _quantile(vec: Vec, rows: list[int], q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    steps = vec.vals.shape[1]
    out = np.zeros(steps)
    ok = np.asarray(vec.ok[rows].any(axis=0), dtype=bool)
    for j in np.flatnonzero(ok):
        present = vec.vals[rows, j][vec.ok[rows, j]]
        out[j] = quantile(float(q[j]), present)
    return out, ok


def _count_values(vec: Vec, without: bool, names: frozenset[str], label: str) -> Vec:
    if not label or label[0].isdigit() or any(c not in LABEL_NAME_OK for c in label):
        raise EvalError(f'invalid label name "{label}"')
    if not without:
        names = names | {label}
    steps = vec.vals.shape[1]
    counts: dict[Labels, np.ndarray] = {}
    for j in range(steps):
        for i in np.flatnonzero(vec.ok[:, j]):
            lab = set_label(vec.labels[i], label, format_value(float(vec.vals[i, j])))
            key = group_key(lab, without, names)
            arr = counts.get(key)
            if arr is None:
                arr = counts[key] = np.zeros(steps)
            arr[j] += 1
    labels = list(counts)
    vals = np.array([counts[k] for k in labels]).reshape(len(labels), steps)
    return Vec(labels, vals, vals > 0)


def _topk(vec: Vec, without: bool, names: frozenset[str], k_per_step: np.ndarray, top: bool) -> Vec:
    """topk / bottomk: Go's heap, fed in input order, as Prometheus 2.42 (ties and NaNs
    resolve the same way). Output rows keep the input's full labels."""
    groups: dict[Labels, list[int]] = {}
    for i, lab in enumerate(vec.labels):
        groups.setdefault(group_key(lab, without, names), []).append(i)
    ok = np.zeros(vec.ok.shape, dtype=bool)
    order: list[int] = []
    steps = vec.vals.shape[1]
    for j in range(steps):
        kf = float(k_per_step[j])
        if math.isnan(kf) or kf < 1:
            continue
        k = int(kf)
        for rows in groups.values():
            present = [r for r in rows if vec.ok[r, j]]
            if not present:
                continue
            chosen = _heap_select(present, vec.vals[:, j], k, top)
            ok[chosen, j] = True
            if steps == 1:
                order.extend(_sorted_for_output(chosen, vec.vals[:, 0], top))
    out = Vec(vec.labels, vec.vals, ok)
    if steps == 1:
        return out.take(order)
    return out.compact()


def _heap_select(rows: list[int], vals: np.ndarray, k: int, top: bool) -> list[int]:
    def less(a: int, b: int) -> bool:
        va, vb = vals[a], vals[b]
        if va != va:
            return True
        return bool(va < vb) if top else bool(va > vb)

    heap: list[int] = [rows[0]]

    def up(j: int) -> None:
        while True:
            i = (j - 1) // 2
            if i == j or j <= 0 or not less(heap[j], heap[i]):
                break
            heap[i], heap[j] = heap[j], heap[i]
            j = i

    def down(i: int, n: int) -> None:
        while True:
            j1 = 2 * i + 1
            if j1 >= n:
                break
            j = j1
            if j1 + 1 < n and less(heap[j1 + 1], heap[j1]):
                j = j1 + 1
            if not less(heap[j], heap[i]):
                break
            heap[i], heap[j] = heap[j], heap[i]
            i = j

    for r in rows[1:]:
        v, top_v = vals[r], vals[heap[0]]
        replace = (top_v < v) if top else (top_v > v)
        if len(heap) < k or replace or top_v != top_v:
            if len(heap) == k:
                if k == 1:
                    heap[0] = r
                    continue
                heap[0], heap[-1] = heap[-1], heap[0]  # heap.Pop
                down(0, len(heap) - 1)
                heap.pop()
            heap.append(r)  # heap.Push
            up(len(heap) - 1)
    return heap


def _sorted_for_output(rows: list[int], vals: np.ndarray, top: bool) -> list[int]:
    def key(r: int) -> tuple[bool, float]:
        v = float(vals[r])
        return (v != v, -v if top else v)

    return sorted(rows, key=key)


def without_name(labels: Labels) -> Labels:
    return drop_these(labels, {NAME})
