"""Performance analysis of a service or a model (pure: values in, findings out).

A service's period is its RED series read per window (``store_io``): mean and
percentile latency, throughput and error ratio per window, and totals over the whole
period. :func:`analyze` compares the current period with a baseline period window by
window (``stats.compare``: Mann-Whitney U, effect size, a regression only when
significant and at least ``min_change``), and checks saturation: Spearman's correlation
of per-window mean latency with each resource series, and whether that resource is near
its capacity (a process's CPU near one core: a Python process's GIL bound).

A model's versions are compared on their per-prediction latencies (``model_latency_ms``):
:func:`analyze_model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from monitoring.perf.stats import Comparison, Correlation, align, compare, correlate, percentile

QUANTITIES: dict[str, Literal["higher", "lower"]] = {
    "mean_latency_s": "higher",
    "p50_latency_s": "higher",
    "p90_latency_s": "higher",
    "p99_latency_s": "higher",
    "throughput_rps": "lower",
    "error_ratio": "higher",
}
TRACKS_RHO = 0.5


@dataclass(frozen=True)
class Windows:
    """Per-window values of one period (NaN where a window had no data)."""

    t_ms: np.ndarray
    values: dict[str, np.ndarray]  # QUANTITIES' names -> arrays aligned with t_ms


@dataclass(frozen=True)
class Totals:
    """Whole-period figures."""

    start_s: float
    end_s: float
    requests: float
    errors: float
    p50_s: float
    p90_s: float
    p99_s: float
    mean_s: float

    @property
    def rate_rps(self) -> float:
        return self.requests / (self.end_s - self.start_s) if self.end_s > self.start_s else 0.0

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests > 0 else math.nan


@dataclass(frozen=True)
class Period:
    totals: Totals
    windows: Windows


@dataclass(frozen=True)
class Resource:
    """A resource's per-window use in the current period and its capacity (if known)."""

    name: str
    t_ms: np.ndarray
    values: np.ndarray
    capacity: float | None = None  # e.g. 1.0 core for one Python process
    unit: str = ""


@dataclass(frozen=True)
class Saturation:
    resource: str
    correlation: Correlation
    p95: float
    capacity: float | None
    near_capacity: bool  # p95 >= 80 % of capacity
    tracks: bool  # latency rises with it: rho >= 0.5 and p < alpha

    @property
    def saturated(self) -> bool:
        """Latency tracks a resource that is near its capacity."""
        return self.tracks and self.near_capacity


@dataclass(frozen=True)
class Analysis:
    subject: str
    current: Totals
    baseline: Totals
    comparisons: dict[str, Comparison]
    saturation: list[Saturation] = field(default_factory=list)

    @property
    def regressions(self) -> list[str]:
        """The quantities flagged as regressions."""
        return [k for k, c in self.comparisons.items() if c.regression]


def saturation(
    latency_t_ms: np.ndarray,
    latency: np.ndarray,
    resource: Resource,
    alpha: float = 0.01,
) -> Saturation:
    """Does per-window latency rise with ``resource``, and is it near capacity?"""
    x, y = align(latency_t_ms, latency, resource.t_ms, resource.values)
    corr = correlate(x, y)
    p95 = percentile(resource.values, 0.95)
    near = resource.capacity is not None and math.isfinite(p95) and p95 >= 0.8 * resource.capacity
    tracks = math.isfinite(corr.rho) and corr.rho >= TRACKS_RHO and corr.p_value < alpha
    return Saturation(resource.name, corr, p95, resource.capacity, near, tracks)


def analyze(
    subject: str,
    current: Period,
    baseline: Period,
    resources: list[Resource] | None = None,
    *,
    alpha: float = 0.01,
    min_change: float = 0.1,
) -> Analysis:
    """Current against baseline, quantity by quantity, plus saturation (module doc)."""
    comparisons = {
        name: compare(
            current.windows.values.get(name, np.array([])),
            baseline.windows.values.get(name, np.array([])),
            worse=worse,
            alpha=alpha,
            min_change=min_change,
        )
        for name, worse in QUANTITIES.items()
    }
    lat = current.windows.values.get("mean_latency_s", np.array([]))
    sats = [saturation(current.windows.t_ms, lat, r, alpha) for r in resources or []]
    return Analysis(subject, current.totals, baseline.totals, comparisons, sats)


@dataclass(frozen=True)
class ModelAnalysis:
    model: str
    version: str
    against: str
    n_current: int
    n_baseline: int
    current_quantiles: dict[float, float]
    baseline_quantiles: dict[float, float]
    latency: Comparison


def analyze_model(
    model: str,
    version: str,
    against: str,
    current_ms: np.ndarray,
    baseline_ms: np.ndarray,
    *,
    alpha: float = 0.01,
    min_change: float = 0.1,
) -> ModelAnalysis:
    """One version's per-prediction latencies against another's."""
    qs = (0.5, 0.9, 0.99)
    return ModelAnalysis(
        model,
        version,
        against,
        int(np.isfinite(current_ms).sum()),
        int(np.isfinite(baseline_ms).sum()),
        {q: percentile(current_ms, q) for q in qs},
        {q: percentile(baseline_ms, q) for q in qs},
        compare(current_ms, baseline_ms, alpha=alpha, min_change=min_change),
    )
