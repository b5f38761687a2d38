"""Statistics of performance analysis (pure: numpy and scipy, no I/O).

* :func:`compare`: is ``current`` worse than ``baseline``? A one-sided Mann-Whitney U
  test (no normality assumed: latencies are skewed), its effect size as the
  rank-biserial correlation ``r = 2U/(n1 n2) - 1`` (the probability that a current value
  exceeds a baseline one, minus the reverse: -1..1) and the Hodges-Lehmann shift
  (median of all pairwise differences), plus the relative change of the medians. A
  change is flagged only when it is significant (p < ``alpha``) *and* large enough to
  matter (relative change >= ``min_change``): with thousands of windows a test finds
  a 1 % change significant, which nobody should be paged for.
* :func:`align` and :func:`correlate`: Spearman's rank correlation of two series on
  their common timestamps (saturation: does latency rise with a resource's use?).

Caveat, stated: per-window values of one service are autocorrelated (a slow hour has
slow windows back to back), so a p-value over windows is optimistic. The effect-size
floor guards against acting on that; per-event values (a model's latency per
prediction) are nearer to the test's independence assumption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

MAX_PAIRS = 4_000_000  # Hodges-Lehmann's pairwise differences; larger inputs are thinned


@dataclass(frozen=True)
class Comparison:
    """Current against baseline for one quantity."""

    n_current: int
    n_baseline: int
    median_current: float
    median_baseline: float
    relative_change: float  # (median_current - median_baseline) / median_baseline
    u: float  # Mann-Whitney U of current
    p_value: float  # one-sided, in the worse direction
    rank_biserial: float  # effect size, -1..1, positive = current larger
    hodges_lehmann: float  # median pairwise difference current - baseline
    alpha: float
    min_change: float
    worse: Literal["higher", "lower"]
    significant: bool
    regression: bool

    def verdict(self) -> str:
        """``regression``, ``not significant``, ``too small`` or ``no data``."""
        if self.n_current == 0 or self.n_baseline == 0:
            return "no data"
        if self.regression:
            return "regression"
        if not self.significant:
            return "not significant"
        return "too small"


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[np.isfinite(x)]


def rank_biserial(u: float, n1: int, n2: int) -> float:
    """``2U/(n1 n2) - 1``: P(x > y) - P(x < y) for a random pair (ties count half).

    >>> rank_biserial(50, 10, 10), rank_biserial(100, 10, 10)
    (0.0, 1.0)
    """
    return 2.0 * u / (n1 * n2) - 1.0


def hodges_lehmann(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Median of all pairwise differences ``x_i - y_j`` (a robust shift estimate); a
    random subsample of each side when there are more than ``MAX_PAIRS`` pairs.

    >>> hodges_lehmann(np.array([3.0, 4, 5]), np.array([1.0, 2, 3]))
    2.0
    """
    x, y = _finite(x), _finite(y)
    if not len(x) or not len(y):
        return math.nan
    if len(x) * len(y) > MAX_PAIRS:
        rng = np.random.default_rng(seed)
        k = int(math.sqrt(MAX_PAIRS))
        x = rng.choice(x, min(k, len(x)), replace=False)
        y = rng.choice(y, min(k, len(y)), replace=False)
    return float(np.median(np.subtract.outer(x, y)))


def compare(
    current: np.ndarray,
    baseline: np.ndarray,
    *,
    worse: Literal["higher", "lower"] = "higher",
    alpha: float = 0.01,
    min_change: float = 0.1,
) -> Comparison:
    """Mann-Whitney U (one-sided toward ``worse``) with effect sizes; see the module.

    ``min_change`` is the relative change of medians that counts (0.1 = 10 %).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if not (math.isfinite(min_change) and min_change >= 0):
        raise ValueError(f"min_change must be >= 0, not {min_change}")
    x, y = _finite(current), _finite(baseline)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        nan = math.nan
        return Comparison(n1, n2, nan, nan, nan, nan, nan, nan, nan, alpha, min_change, worse,
                          False, False)  # fmt: skip
    alternative = "greater" if worse == "higher" else "less"
    if np.all(x == x[0]) and np.all(y == x[0]):
        u, p = n1 * n2 / 2.0, 1.0  # identical constants: no evidence either way
    else:
        res = sps.mannwhitneyu(x, y, alternative=alternative, method="auto")
        u, p = float(res.statistic), float(res.pvalue)
    m1, m2 = float(np.median(x)), float(np.median(y))
    rel = _relative(m1, m2)
    toward = rel if worse == "higher" else -rel
    significant = p < alpha
    return Comparison(
        n_current=n1,
        n_baseline=n2,
        median_current=m1,
        median_baseline=m2,
        relative_change=rel,
        u=u,
        p_value=p,
        rank_biserial=rank_biserial(u, n1, n2),
        hodges_lehmann=hodges_lehmann(x, y),
        alpha=alpha,
        min_change=min_change,
        worse=worse,
        significant=significant,
        regression=significant and toward >= min_change,
    )


def _relative(now: float, before: float) -> float:
    """(now - before) / |before|; 0 when both are 0, ±inf from 0."""
    if before != 0:
        return (now - before) / abs(before)
    return 0.0 if now == 0 else math.copysign(math.inf, now)


def align(
    t1: np.ndarray, v1: np.ndarray, t2: np.ndarray, v2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The values of two series at their common timestamps (both finite).

    >>> align(np.array([1, 2, 3]), np.array([1.0, 2, 3]), np.array([2, 3, 4]),
    ...       np.array([20.0, np.nan, 40]))
    (array([2.]), array([20.]))
    """
    _common, i, j = np.intersect1d(np.asarray(t1), np.asarray(t2), return_indices=True)
    a = np.asarray(v1, dtype=np.float64)[i]
    b = np.asarray(v2, dtype=np.float64)[j]
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


@dataclass(frozen=True)
class Correlation:
    """Spearman's rank correlation of two aligned series."""

    n: int
    rho: float
    p_value: float


def correlate(x: np.ndarray, y: np.ndarray) -> Correlation:
    """Spearman's rho and its two-sided p-value (NaN with fewer than 3 points or a
    constant side)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return Correlation(n, math.nan, math.nan)
    res = sps.spearmanr(x, y)
    return Correlation(n, float(res.statistic), float(res.pvalue))


def percentile(values: np.ndarray, q: float) -> float:
    """The q-quantile of the finite values (HdrHistogram's definition), NaN if none."""
    v = _finite(values)
    if not len(v):
        return math.nan
    return float(np.quantile(v, q, method="inverted_cdf"))
