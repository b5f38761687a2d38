"""Values during evaluation, over all steps at once.

A range query evaluates every node once over the whole step grid ``T`` (J times):

* ``Scalar``: one float per step, shape ``(J,)``.
* ``Vec``: an instant vector per step, as rows (series) x steps: ``vals`` and a
  presence mask ``ok`` of shape ``(S, J)``; ``ts`` holds the sample times for rows
  that come straight from a selector (``timestamp()`` needs them).
* ``Windows``: a range vector per step: every series' samples concatenated into flat
  ``t``/``v`` arrays, and per row and step the slice ``[lo, hi)`` in them.
* ``Str``: a string literal.

An instant query is the same with J = 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitoring.promql.model import EvalError, Labels

NAME = "__name__"


@dataclass
class Scalar:
    vals: np.ndarray


@dataclass
class Str:
    value: str


@dataclass
class Vec:
    labels: list[Labels]
    vals: np.ndarray
    ok: np.ndarray
    ts: np.ndarray | None = None

    @staticmethod
    def empty(steps: int) -> Vec:
        return Vec([], np.zeros((0, steps)), np.zeros((0, steps), dtype=bool))

    def take(self, rows: np.ndarray | list[int]) -> Vec:
        """The given rows (an index array or list)."""
        idx = np.asarray(rows, dtype=np.int64)
        ts = None if self.ts is None else self.ts[idx]
        return Vec([self.labels[i] for i in idx], self.vals[idx], self.ok[idx], ts)

    def compact(self) -> Vec:
        """Without rows that have no point at any step."""
        if not self.labels:
            return self
        keep = np.flatnonzero(self.ok.any(axis=1))
        if len(keep) == len(self.labels):
            return self
        return self.take(keep)

    def relabel(self, labels: list[Labels], strict: bool = False) -> Vec:
        """The same rows under new labels, merging rows that now share a label set.

        Rows with equal labels merge when they never have a point at the same step;
        otherwise Prometheus fails with "vector cannot contain metrics with the same
        labelset" (``strict``: whenever two such rows have points at all, as its
        range-function path checks the whole matrix).
        """
        out = Vec(labels, self.vals, self.ok, None)
        if len(set(labels)) == len(labels):
            return out
        return out.merge_same(strict)

    def merge_same(self, strict: bool = False) -> Vec:
        """Merge rows with equal label sets (see ``relabel``)."""
        groups: dict[Labels, list[int]] = {}
        for i, lab in enumerate(self.labels):
            groups.setdefault(lab, []).append(i)
        if len(groups) == len(self.labels):
            return self
        vals = np.empty((len(groups), self.vals.shape[1]))
        ok = np.zeros((len(groups), self.vals.shape[1]), dtype=bool)
        labels: list[Labels] = []
        for g, (lab, rows) in enumerate(groups.items()):
            labels.append(lab)
            vals[g] = self.vals[rows[0]]
            ok[g] = self.ok[rows[0]]
            for r in rows[1:]:
                both = ok[g] & self.ok[r]
                if both.any() or (strict and ok[g].any() and self.ok[r].any()):
                    raise EvalError("vector cannot contain metrics with the same labelset")
                vals[g] = np.where(self.ok[r], self.vals[r], vals[g])
                ok[g] |= self.ok[r]
        return Vec(labels, vals, ok, None)


@dataclass
class Windows:
    labels: list[Labels]
    t: np.ndarray
    v: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    ends: np.ndarray
    range_ms: int
    check: Callable[[], None] = lambda: None  # raises past the query's deadline

    @property
    def count(self) -> np.ndarray:
        return self.hi - self.lo


Value = Scalar | Vec | Windows | Str


def drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != NAME)


def keep_only(labels: Labels, names: frozenset[str] | set[str]) -> Labels:
    return tuple(p for p in labels if p[0] in names)


def drop_these(labels: Labels, names: frozenset[str] | set[str]) -> Labels:
    return tuple(p for p in labels if p[0] not in names)


def set_label(labels: Labels, name: str, value: str) -> Labels:
    """``labels`` with ``name`` set to ``value`` (removed when empty), kept sorted."""
    rest = [p for p in labels if p[0] != name]
    if value != "":
        rest.append((name, value))
        rest.sort()
    return tuple(rest)


def labels_str(labels: Labels) -> str:
    """Prometheus's ``labels.String()``: ``{a="1", b="2"}``."""
    import json

    return "{" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in labels) + "}"


def windows_from_points(
    labels: list[Labels],
    series: list[tuple[np.ndarray, np.ndarray]],
    ends: np.ndarray,
    range_ms: int,
    check: Callable[[], None] = lambda: None,
) -> Windows:
    """Windows ``[end - range, end]`` (both ends closed, as Prometheus 2.42's
    ``matrixIterSlice``: ``mint = maxt - range``, samples with ``t >= mint`` and ``t <=
    maxt``) over each series' points, for every step's ``end``. ``check`` is called
    once per series (the query's deadline)."""
    rows, steps = len(series), len(ends)
    lo = np.empty((rows, steps), dtype=np.int64)
    hi = np.empty((rows, steps), dtype=np.int64)
    base = 0
    starts = ends - range_ms
    for i, (t, _) in enumerate(series):
        check()
        lo[i] = base + np.searchsorted(t, starts, side="left")
        hi[i] = base + np.searchsorted(t, ends, side="right")
        base += len(t)
    if series:
        t_all = np.concatenate([s[0] for s in series])
        v_all = np.concatenate([s[1] for s in series])
    else:
        t_all, v_all = np.zeros(0, dtype=np.int64), np.zeros(0)
    return Windows(labels, t_all, v_all, lo, hi, ends, range_ms, check)
