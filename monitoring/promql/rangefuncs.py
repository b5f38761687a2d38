"""Functions of a range vector, computed for every row and step at once.

Each function gets ``Windows`` (flat samples plus each window's slice ``[lo, hi)``)
and returns ``(vals, ok)`` of shape (rows, steps). Sequential algorithms (Prometheus
sums in sample order) run "in lockstep": iteration ``k`` handles the k-th sample of
every window at once, so the floating-point operations happen in the same order as
Prometheus's loops and the results agree to the bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from monitoring.promql.values import Windows

Out = tuple[np.ndarray, np.ndarray]
RangeFn = Callable[[Windows, list[np.ndarray]], Out]


def _lockstep(w: Windows, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For k = start, start+1, ...: (windows having a k-th sample, that sample's value)."""
    cnt = w.hi - w.lo
    kmax = int(cnt.max()) if cnt.size else 0
    for k in range(start, kmax):
        if k % 256 == 0:
            w.check()
        m = cnt > k
        idx = np.where(m, w.lo + k, 0)
        yield m, w.v[idx]


def _at(arr: np.ndarray, idx: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return arr[np.where(ok, idx, 0)] if arr.size else np.zeros(idx.shape, dtype=arr.dtype)


def _pair_counts(w: Windows, flags: np.ndarray) -> np.ndarray:
    """How many positions i in (lo, hi) of each window have ``flags[i]`` (pairs i-1, i)."""
    full = np.zeros(len(w.v) + 1, dtype=np.int64)
    full[1 : len(flags) + 1] = flags
    c = np.cumsum(full)  # c[p]: flagged positions in 1..p
    return c[np.maximum(w.hi - 1, w.lo)] - c[w.lo]


def extrapolated_rate(w: Windows, is_counter: bool, is_rate: bool) -> Out:
    """rate / increase / delta as Prometheus 2.42's ``extrapolatedRate``."""
    cnt = w.hi - w.lo
    ok = cnt >= 2
    fv, lv = _at(w.v, w.lo, ok), _at(w.v, w.hi - 1, ok)
    ft, lt = _at(w.t, w.lo, ok), _at(w.t, w.hi - 1, ok)
    with np.errstate(all="ignore"):
        result = lv - fv
        if is_counter and w.v.size > 1:
            # resultValue += prev for every drop, in sample order (exact, like Go's loop)
            drops = np.flatnonzero(w.v[1:] < w.v[:-1]) + 1
            first = np.searchsorted(drops, w.lo + 1)
            last = np.searchsorted(drops, w.hi)
            n_drops = np.where(ok, last - first, 0)
            for r in range(int(n_drops.max()) if n_drops.size else 0):
                m = n_drops > r
                pos = drops[np.where(m, first + r, 0)]
                result = np.where(m, result + w.v[pos - 1], result)
        range_start = w.ends - w.range_ms
        to_start = (ft - range_start[None, :]) / 1000
        to_end = (w.ends[None, :] - lt) / 1000
        sampled = (lt - ft) / 1000
        avg = sampled / np.maximum(cnt - 1, 1)
        if is_counter:
            zero = sampled * (fv / result)
            use_zero = (result > 0) & (fv >= 0) & (zero < to_start)
            to_start = np.where(use_zero, zero, to_start)
        threshold = avg * 1.1
        interval = sampled + np.where(to_start < threshold, to_start, avg / 2)
        interval = interval + np.where(to_end < threshold, to_end, avg / 2)
        factor = interval / sampled
        if is_rate:
            factor = factor / (w.range_ms / 1000)
        result = result * factor
    return result, ok


def _instant_value(w: Windows, is_rate: bool) -> Out:
    """irate / idelta: the last two samples (``instantValue``)."""
    ok = (w.hi - w.lo) >= 2
    last, prev = _at(w.v, w.hi - 1, ok), _at(w.v, w.hi - 2, ok)
    lt, pt = _at(w.t, w.hi - 1, ok), _at(w.t, w.hi - 2, ok)
    with np.errstate(all="ignore"):
        if is_rate:
            res = np.where(last < prev, last, last - prev)
            res = res / ((lt - pt) / 1000)
        else:
            res = last - prev
    return res, ok & (lt != pt)


def _changes(w: Windows, _: list[np.ndarray]) -> Out:
    v = w.v
    flags = (v[1:] != v[:-1]) & ~(np.isnan(v[1:]) & np.isnan(v[:-1]))
    return _pair_counts(w, flags).astype(np.float64), w.hi > w.lo


def _resets(w: Windows, _: list[np.ndarray]) -> Out:
    flags = w.v[1:] < w.v[:-1]
    return _pair_counts(w, flags).astype(np.float64), w.hi > w.lo


def _kahan_inc(inc: np.ndarray, s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus's ``kahanSumInc`` (Neumaier's variant): the new sum and compensation."""
    t = s + inc
    c = np.where(np.abs(s) >= np.abs(inc), c + ((s - t) + inc), c + ((inc - t) + s))
    return t, c


def _sum(w: Windows, _: list[np.ndarray]) -> Out:
    """Kahan-compensated, as Prometheus (``sum + c`` unless the sum is infinite)."""
    acc = np.zeros(w.lo.shape)
    comp = np.zeros(w.lo.shape)
    with np.errstate(all="ignore"):
        for m, x in _lockstep(w):
            ns, nc = _kahan_inc(x, acc, comp)
            acc, comp = np.where(m, ns, acc), np.where(m, nc, comp)
        return np.where(np.isinf(acc), acc, acc + comp), w.hi > w.lo


def _avg(w: Windows, _: list[np.ndarray]) -> Out:
    """Incremental mean with Kahan compensation, skipping what would turn an infinite
    mean into NaN (Prometheus's ``funcAvgOverTime``)."""
    mean = np.zeros(w.lo.shape)
    comp = np.zeros(w.lo.shape)
    count = np.zeros(w.lo.shape)
    with np.errstate(all="ignore"):
        for m, x in _lockstep(w):
            count = np.where(m, count + 1, count)
            inf_mean = np.isinf(mean)
            skip = inf_mean & (
                (np.isinf(x) & ((mean > 0) == (x > 0))) | (~np.isinf(x) & ~np.isnan(x))
            )
            ns, nc = _kahan_inc(x / count - mean / count, mean, comp)
            upd = m & ~skip
            mean, comp = np.where(upd, ns, mean), np.where(upd, nc, comp)
        return np.where(np.isinf(mean), mean, mean + comp), w.hi > w.lo


def _minmax(is_min: bool) -> RangeFn:
    def fn(w: Windows, _: list[np.ndarray]) -> Out:
        ok = w.hi > w.lo
        acc = _at(w.v, w.lo, ok).astype(np.float64)
        for m, x in _lockstep(w, 1):
            better = (x < acc) if is_min else (x > acc)
            acc = np.where(m & (better | np.isnan(acc)), x, acc)
        return acc, ok

    return fn


def _variance(w: Windows) -> np.ndarray:
    """Welford's update with Kahan-compensated mean and sum of squares."""
    count = np.zeros(w.lo.shape)
    mean, c_mean = np.zeros(w.lo.shape), np.zeros(w.lo.shape)
    aux, c_aux = np.zeros(w.lo.shape), np.zeros(w.lo.shape)
    with np.errstate(all="ignore"):
        for m, x in _lockstep(w):
            count = np.where(m, count + 1, count)
            delta = x - (mean + c_mean)
            nm, ncm = _kahan_inc(delta / count, mean, c_mean)
            na, nca = _kahan_inc(delta * (x - (nm + ncm)), aux, c_aux)
            mean, c_mean = np.where(m, nm, mean), np.where(m, ncm, c_mean)
            aux, c_aux = np.where(m, na, aux), np.where(m, nca, c_aux)
        return (aux + c_aux) / count


def _stdvar(w: Windows, _: list[np.ndarray]) -> Out:
    return _variance(w), w.hi > w.lo


def _stddev(w: Windows, _: list[np.ndarray]) -> Out:
    with np.errstate(all="ignore"):
        return np.sqrt(_variance(w)), w.hi > w.lo


def _count(w: Windows, _: list[np.ndarray]) -> Out:
    return (w.hi - w.lo).astype(np.float64), w.hi > w.lo


def _present(w: Windows, _: list[np.ndarray]) -> Out:
    return np.ones(w.lo.shape), w.hi > w.lo


def _last(w: Windows, _: list[np.ndarray]) -> Out:
    ok = w.hi > w.lo
    return _at(w.v, w.hi - 1, ok).astype(np.float64), ok


def quantile(q: float, values: np.ndarray) -> float:
    """Prometheus's ``quantile``: linear between closest ranks; NaNs sort first."""
    n = len(values)
    if n == 0:
        return float("nan")
    if q < 0:
        return float("-inf")
    if q > 1:
        return float("inf")
    if np.isnan(q):
        return float("nan")
    nan = np.isnan(values)
    s = np.concatenate((values[nan], np.sort(values[~nan])))
    rank = q * (n - 1)
    lower = max(0.0, np.floor(rank))
    upper = min(n - 1.0, lower + 1)
    weight = rank - np.floor(rank)
    return float(s[int(lower)] * (1 - weight) + s[int(upper)] * weight)


def _quantile(w: Windows, args: list[np.ndarray]) -> Out:
    q = args[0]
    ok = w.hi > w.lo
    out = np.zeros(w.lo.shape)
    for i, j in zip(*np.nonzero(ok), strict=True):
        out[i, j] = quantile(float(q[j]), w.v[w.lo[i, j] : w.hi[i, j]])
    return out, ok


def linear_regression(w: Windows, intercept_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares over each window (Prometheus 2.42's ``linearRegression``, with
    Kahan-compensated sums and the constant-series shortcut)."""
    shape = w.lo.shape
    n = np.zeros(shape)
    sums = [np.zeros(shape) for _ in range(4)]  # x, y, xy, x^2
    comps = [np.zeros(shape) for _ in range(4)]
    ok = w.hi > w.lo
    init_y = _at(w.v, w.lo, ok)
    const_y = np.ones(shape, dtype=bool)
    with np.errstate(all="ignore"):
        for k, (m, y) in enumerate(_lockstep(w)):
            tk = w.t[np.where(m, w.lo + k, 0)]
            if k > 0:
                const_y &= ~m | (y == init_y)
            n = np.where(m, n + 1, n)
            x = (tk - intercept_t).astype(np.float64) / 1e3
            for i, val in enumerate((x, y, x * y, x * x)):
                ns, nc = _kahan_inc(val, sums[i], comps[i])
                sums[i] = np.where(m, ns, sums[i])
                comps[i] = np.where(m, nc, comps[i])
        sx, sy, sxy, sx2 = (s + c for s, c in zip(sums, comps, strict=True))
        cov = sxy - sx * sy / n
        var = sx2 - sx * sx / n
        slope = cov / var
        intercept = sy / n - slope * sx / n
        inf_y = np.isinf(init_y)
        slope = np.where(const_y, np.where(inf_y, np.nan, 0.0), slope)
        intercept = np.where(const_y, np.where(inf_y, np.nan, init_y), intercept)
    return slope, intercept


def _deriv(w: Windows, args: list[np.ndarray]) -> Out:
    ok = (w.hi - w.lo) >= 2
    first_t = _at(w.t, w.lo, ok)
    slope, _intercept = linear_regression(w, first_t)
    return slope, ok


def predict_linear(w: Windows, args: list[np.ndarray], eval_t: np.ndarray) -> Out:
    """``predict_linear(v[d], s)``: the regression line (intercept at the evaluation
    time, not the offset one) ``s`` seconds later."""
    ok = (w.hi - w.lo) >= 2
    slope, intercept = linear_regression(w, np.broadcast_to(eval_t[None, :], w.lo.shape))
    with np.errstate(all="ignore"):
        return slope * args[0][None, :] + intercept, ok


RANGE_FUNCTIONS: dict[str, RangeFn] = {
    "rate": lambda w, _: extrapolated_rate(w, True, True),
    "increase": lambda w, _: extrapolated_rate(w, True, False),
    "delta": lambda w, _: extrapolated_rate(w, False, False),
    "irate": lambda w, _: _instant_value(w, True),
    "idelta": lambda w, _: _instant_value(w, False),
    "changes": _changes,
    "resets": _resets,
    "sum_over_time": _sum,
    "avg_over_time": _avg,
    "min_over_time": _minmax(True),
    "max_over_time": _minmax(False),
    "count_over_time": _count,
    "last_over_time": _last,
    "present_over_time": _present,
    "stddev_over_time": _stddev,
    "stdvar_over_time": _stdvar,
    "quantile_over_time": _quantile,
    "deriv": _deriv,
}
"""Range functions by name; scalar arguments (e.g. quantile's ``q``) come per step."""
