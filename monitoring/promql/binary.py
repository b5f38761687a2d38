"""Binary operators: scalar/scalar, vector/scalar and vector/vector (with ``on``,
``ignoring``, ``group_left``/``group_right``, ``bool``) and the set operators, as
Prometheus 2.42's ``VectorBinop``/``VectorscalarBinop``/``VectorAnd``/``Or``/``Unless``.

Matching depends on labels only, so pairs are found once; the per-step presence masks
decide which pairs produce a point at each step, and the many-to-many and duplicate
checks run on those masks with Prometheus's error texts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from monitoring.promql.model import EvalError, Labels
from monitoring.promql.plan import Binary
from monitoring.promql.values import NAME, Scalar, Vec, drop_name, labels_str, set_label

ARITH: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "%": np.fmod,
    "^": np.power,
    "atan2": np.arctan2,
}
CMP: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}


def scalar_scalar(op: str, a: np.ndarray, b: np.ndarray) -> Scalar:
    with np.errstate(all="ignore"):
        if op in ARITH:
            return Scalar(ARITH[op](a, b).astype(np.float64))
        return Scalar(CMP[op](a, b).astype(np.float64))


def vector_scalar(node: Binary, vec: Vec, s: np.ndarray, swap: bool) -> Vec:
    """``vec op s`` (or ``s op vec`` when ``swap``); comparisons filter unless ``bool``."""
    op = node.op
    sv = np.broadcast_to(s[None, :], vec.vals.shape)
    lv, rv = (sv, vec.vals) if swap else (vec.vals, sv)
    with np.errstate(all="ignore"):
        if op in ARITH:
            vals = ARITH[op](lv, rv)
            return Vec(vec.labels, vals, vec.ok).relabel([drop_name(x) for x in vec.labels])
        cond = CMP[op](lv, rv)
    if node.return_bool:
        vals = cond.astype(np.float64)
        return Vec(vec.labels, vals, vec.ok).relabel([drop_name(x) for x in vec.labels])
    return Vec(vec.labels, vec.vals, vec.ok & cond, vec.ts).compact()


def _sig_fn(node: Binary) -> Callable[[Labels], Labels]:
    names = frozenset(node.matching)
    if node.on:
        return lambda lab: tuple(p for p in lab if p[0] in names)
    return lambda lab: tuple(p for p in lab if p[0] not in names and p[0] != NAME)


def set_op(node: Binary, lhs: Vec, rhs: Vec) -> Vec:
    """``and``, ``or``, ``unless``: membership by signature, per step."""
    sig = _sig_fn(node)
    steps = lhs.vals.shape[1]

    def present(vec: Vec) -> dict[Labels, np.ndarray]:
        out: dict[Labels, np.ndarray] = {}
        for lab, ok in zip(vec.labels, vec.ok, strict=True):
            s = sig(lab)
            out[s] = out[s] | ok if s in out else ok.copy()
        return out

    none = np.zeros(steps, dtype=bool)
    if node.op == "or":
        left = present(lhs)
        ok = np.zeros(rhs.ok.shape, dtype=bool)
        for i, lab in enumerate(rhs.labels):
            ok[i] = rhs.ok[i] & ~left.get(sig(lab), none)
        both = Vec(
            lhs.labels + rhs.labels,
            np.concatenate([lhs.vals, rhs.vals]),
            np.concatenate([lhs.ok, ok]),
        )
        return both.compact().merge_same()
    right = present(rhs)
    mask = np.zeros(lhs.ok.shape, dtype=bool)
    for i, lab in enumerate(lhs.labels):
        mask[i] = right.get(sig(lab), none)
    keep = lhs.ok & mask if node.op == "and" else lhs.ok & ~mask
    return Vec(lhs.labels, lhs.vals, keep, lhs.ts).compact()


def _result_labels(node: Binary, many: Labels, one: Labels) -> Labels:
    """Prometheus's ``resultMetric`` (plus the name drop of ``bool``)."""
    lab = many
    if node.op in ARITH or node.return_bool:
        lab = drop_name(lab)
    if node.card == "one-to-one":
        names = frozenset(node.matching)
        if node.on:
            lab = tuple(p for p in lab if p[0] in names)
        else:
            lab = tuple(p for p in lab if p[0] not in names)
    one_map = dict(one)
    for name in node.include:
        lab = set_label(lab, name, one_map.get(name, ""))
    return lab


def vector_vector(node: Binary, lhs: Vec, rhs: Vec) -> Vec:
    """Arithmetic and comparison between two vectors."""
    sig = _sig_fn(node)
    one_to_many = node.card == "one-to-many"
    many, one = (rhs, lhs) if one_to_many else (lhs, rhs)
    steps = lhs.vals.shape[1]
    groups: dict[Labels, list[int]] = {}
    for r, lab in enumerate(one.labels):
        groups.setdefault(sig(lab), []).append(r)
    side = "left" if one_to_many else "right"
    for s, rows in groups.items():
        if len(rows) < 2:
            continue
        counts = one.ok[rows].sum(axis=0)
        if (counts > 1).any():
            j = int(np.flatnonzero(counts > 1)[0])
            first, second = [r for r in rows if one.ok[r, j]][:2]
            matched = s if node.on else tuple(p for p in s if p[0] != NAME)
            raise EvalError(
                f"found duplicate series for the match group {labels_str(matched)} on the "
                f"{side} hand-side of the operation: [{labels_str(one.labels[second])}, "
                f"{labels_str(one.labels[first])}];many-to-many matching not allowed: "
                "matching labels must be unique on one side"
            )
    out_labels: list[Labels] = []
    out_vals: list[np.ndarray] = []
    out_ok: list[np.ndarray] = []
    sigs: list[Labels] = []
    is_cmp = node.op in CMP
    with np.errstate(all="ignore"):
        for i, lab in enumerate(many.labels):
            s = sig(lab)
            for r in groups.get(s, ()):
                m = many.ok[i] & one.ok[r]
                if not m.any():
                    continue
                vl, vr = (one.vals[r], many.vals[i]) if one_to_many else (many.vals[i], one.vals[r])
                if is_cmp:
                    cond = CMP[node.op](vl, vr)
                    if node.return_bool:
                        vals = cond.astype(np.float64)
                    else:
                        vals = vl
                        m = m & cond
                else:
                    vals = ARITH[node.op](vl, vr)
                out_labels.append(_result_labels(node, lab, one.labels[r]))
                out_vals.append(vals)
                out_ok.append(m)
                sigs.append(s)
    _check_many(node, sigs, out_labels, out_ok, steps)
    if not out_labels:
        return Vec.empty(steps)
    res = Vec(out_labels, np.array(out_vals), np.array(out_ok))
    return res.compact().merge_same()


def _check_many(
    node: Binary, sigs: list[Labels], labels: list[Labels], oks: list[np.ndarray], steps: int
) -> None:
    """One-to-one: a signature matched twice at a step; many-to-one: two results with
    the same labels for one signature."""
    one_to_one = node.card == "one-to-one"
    seen: dict[tuple[Labels, Labels] | Labels, np.ndarray] = {}
    for s, lab, ok in zip(sigs, labels, oks, strict=True):
        key: tuple[Labels, Labels] | Labels = s if one_to_one else (s, lab)
        prev = seen.get(key)
        if prev is not None and (prev & ok).any():
            if one_to_one:
                raise EvalError(
                    "multiple matches for labels: many-to-one matching must be explicit "
                    "(group_left/group_right)"
                )
            raise EvalError(
                "multiple matches for labels: grouping labels must ensure unique matches"
            )
        seen[key] = ok if prev is None else prev | ok
