"""Functions of instant vectors and scalars (``abs``, ``clamp``, ``label_replace``,
``histogram_quantile``...), over every step at once."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import re2

from monitoring.metrics.prom_syntax import LABEL_NAME
from monitoring.promql.model import EvalError, Labels
from monitoring.promql.values import NAME, Vec, drop_name, drop_these, set_label


def _round(v: np.ndarray, to_nearest: np.ndarray) -> np.ndarray:
    inv = 1.0 / to_nearest
    return np.floor(v * inv + 0.5) / inv


def _sgn(v: np.ndarray) -> np.ndarray:
    return np.where(v > 0, 1.0, np.where(v < 0, -1.0, v))


MATH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "exp": np.exp,
    "ln": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "sqrt": np.sqrt,
    "sgn": _sgn,
    "acos": np.arccos,
    "acosh": np.arccosh,
    "asin": np.arcsin,
    "asinh": np.arcsinh,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "cos": np.cos,
    "cosh": np.cosh,
    "sin": np.sin,
    "sinh": np.sinh,
    "tan": np.tan,
    "tanh": np.tanh,
    "deg": np.degrees,
    "rad": np.radians,
}


def math_fn(name: str, vec: Vec) -> Vec:
    """A value-wise math function; the result drops ``__name__``."""
    with np.errstate(all="ignore"):
        vals = MATH[name](vec.vals)
    return Vec(vec.labels, vals, vec.ok).relabel([drop_name(x) for x in vec.labels])


def round_fn(vec: Vec, to_nearest: np.ndarray) -> Vec:
    with np.errstate(all="ignore"):
        vals = _round(vec.vals, to_nearest[None, :])
    return Vec(vec.labels, vals, vec.ok).relabel([drop_name(x) for x in vec.labels])


def clamp(vec: Vec, lo: np.ndarray | None, hi: np.ndarray | None) -> Vec:
    """clamp / clamp_min / clamp_max (Go's ``math.Max``/``Min``: NaN propagates);
    ``clamp`` with max < min gives an empty vector at that step."""
    vals, ok = vec.vals, vec.ok
    if lo is not None:
        vals = np.maximum(vals, lo[None, :])
    if hi is not None:
        vals = np.minimum(vals, hi[None, :])
    if lo is not None and hi is not None:
        ok = ok & ~(hi < lo)[None, :]
    out = Vec(vec.labels, vals, ok).compact()
    return out.relabel([drop_name(x) for x in out.labels])


_DATE_FNS = (
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
)


def date_fn(name: str, seconds: np.ndarray) -> np.ndarray:
    """The UTC calendar field of unix times in seconds (NaN stays NaN)."""
    out = np.full(seconds.shape, np.nan)
    fin = np.isfinite(seconds)
    s = np.floor(seconds[fin]).astype(np.int64)
    dt = s.astype("datetime64[s]")
    days = dt.astype("datetime64[D]")
    months = dt.astype("datetime64[M]")
    years = dt.astype("datetime64[Y]")
    if name == "minute":
        r = (s // 60) % 60
    elif name == "hour":
        r = (s // 3600) % 24
    elif name == "day_of_week":
        r = (days.astype(np.int64) + 4) % 7  # 1970-01-01 was a Thursday
    elif name == "day_of_month":
        r = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    elif name == "day_of_year":
        r = (days - years.astype("datetime64[D]")).astype(np.int64) + 1
    elif name == "days_in_month":
        r = ((months + 1).astype("datetime64[D]") - months.astype("datetime64[D]")).astype(np.int64)
    elif name == "month":
        r = months.astype(np.int64) % 12 + 1
    else:
        r = years.astype(np.int64) + 1970
    out[fin] = r
    return out


def go_expand(template: str, text: str, m: re2._Match, groupindex: dict[str, int]) -> str:
    """Go's ``Regexp.ExpandString``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        i += 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        brace = i < n and template[i] == "{"
        j = i + 1 if brace else i
        k = j
        while k < n and (template[k].isalpha() or template[k].isdecimal() or template[k] == "_"):
            k += 1
        name = template[j:k]
        if not name or (brace and (k >= n or template[k] != "}")):
            out.append("$")  # not a valid reference: Go keeps the '$' literally
            continue
        i = k + 1 if brace else k
        idx = int(name) if name.isascii() and name.isdigit() else groupindex.get(name, -1)
        if 0 <= idx <= len(m.groups()):
            g = m.group(idx)
            if g is not None:
                out.append(g)
    return "".join(out)


def label_replace(vec: Vec, dst: str, repl: str, src: str, regex: str) -> Vec:
    try:
        rx = re2.compile(f"^(?:{regex})$")
    except Exception as e:
        raise EvalError(f"invalid regular expression in label_replace(): {regex}: {e}") from None
    if not LABEL_NAME.match(dst):
        raise EvalError(f"invalid destination label name in label_replace(): {dst}")
    groupindex = dict(rx.groupindex)
    labels: list[Labels] = []
    for lab in vec.labels:
        value = dict(lab).get(src, "")
        m = rx.match(value)
        if m is None:
            labels.append(lab)
            continue
        labels.append(set_label(lab, dst, go_expand(repl, value, m, groupindex)))
    return Vec(vec.labels, vec.vals, vec.ok).relabel(labels)


def label_join(vec: Vec, dst: str, sep: str, srcs: list[str]) -> Vec:
    if not LABEL_NAME.match(dst):
        raise EvalError(f"invalid destination label name in label_join(): {dst}")
    for s in srcs:
        if not LABEL_NAME.match(s):
            raise EvalError(f"invalid source label name in label_join(): {s}")
    labels = []
    for lab in vec.labels:
        d = dict(lab)
        labels.append(set_label(lab, dst, sep.join(d.get(s, "") for s in srcs)))
    return Vec(vec.labels, vec.vals, vec.ok).relabel(labels)


def sort_rows(vec: Vec, descending: bool) -> Vec:
    """sort / sort_desc: only an instant query's order changes (NaNs first, as Go)."""
    if vec.vals.shape[1] != 1:
        return vec
    vals = vec.vals[:, 0]

    def key(i: int) -> tuple[bool, float]:
        v = float(vals[i])
        return (not math.isnan(v), -v if descending else v)

    return vec.take(sorted(range(len(vec.labels)), key=key))


def _parse_le(value: str | None) -> float | None:
    """Go's ``strconv.ParseFloat`` for a bucket bound (no underscores; hex allowed)."""
    if value is None or "_" in value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return float.fromhex(value)
        except ValueError:
            return None


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus 2.42's ``bucketQuantile`` over (upper bound, cumulative count) pairs:
    needs a ``+Inf`` bucket, merges equal bounds, forces counts monotonic, and
    interpolates linearly inside the bucket holding the rank."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets, key=lambda b: b[0])
    if not math.isinf(buckets[-1][0]) or buckets[-1][0] < 0:
        return math.nan
    merged: list[list[float]] = [list(buckets[0])]
    for ub, c in buckets[1:]:
        if ub == merged[-1][0]:
            merged[-1][1] += c
        else:
            merged.append([ub, c])
    mx = -math.inf
    for bk in merged:  # ensureMonotonic
        if bk[1] > mx:
            mx = bk[1]
        elif bk[1] < mx:
            bk[1] = mx
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = len(merged) - 1
    for i in range(len(merged) - 1):
        if merged[i][1] >= rank:
            b = i
            break
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


def histogram_quantile(q: np.ndarray, vec: Vec) -> Vec:
    """Per group of series differing only in ``le`` (the name counts for the grouping,
    the output drops it and ``le``)."""
    groups: dict[Labels, list[tuple[int, float]]] = {}
    out_labels: dict[Labels, Labels] = {}
    for i, lab in enumerate(vec.labels):
        le = _parse_le(dict(lab).get("le"))
        if le is None:
            continue
        key = drop_these(lab, {"le"})
        groups.setdefault(key, []).append((i, le))
        out_labels[key] = drop_these(lab, {"le", NAME})
    steps = vec.vals.shape[1]
    labels = [out_labels[k] for k in groups]
    vals = np.zeros((len(groups), steps))
    ok = np.zeros((len(groups), steps), dtype=bool)
    for g, members in enumerate(groups.values()):
        rows = [r for r, _ in members]
        present = vec.ok[rows]
        for j in np.flatnonzero(present.any(axis=0)):
            buckets = [(le, float(vec.vals[r, j])) for r, le in members if vec.ok[r, j]]
            vals[g, j] = bucket_quantile(float(q[j]), buckets)
            ok[g, j] = True
    return Vec(labels, vals, ok).merge_same()


DATE_FUNCTIONS = _DATE_FNS
