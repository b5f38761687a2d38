"""Optimization advice computed from the data, each with its evidence (pure).

:func:`suggest` turns per-route totals, per-model totals, saturation findings and
per-process CPU into :class:`Suggestion` values, most important first:

``hot-route``      a route's share of all server time (rate x mean latency) is at least
                   ``min_share``: the place where a saving pays most
``error-hotspot``  a route with at least ``min_errors`` errors and an error ratio of at
                   least ``min_error_ratio``, with its share of all errors
``saturation``     per-window latency tracks a resource that is near its capacity
                   (Spearman rho >= 0.5, significant; p95 >= 80 % of capacity)
``under-capacity`` a process's CPU p95 is at least ``high_cpu`` of a core
``over-capacity``  every one of two or more processes stays under ``low_cpu`` of a core at
                   p95: fewer would do (the count that keeps the demand at p95 under
                   ``target_cpu`` per process)
``hot-model``      a model version's share of all inference time
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from monitoring.perf.analysis import Saturation
from monitoring.perf.stats import percentile


@dataclass(frozen=True)
class RouteStat:
    """One route and method over a period."""

    route: str
    method: str
    requests: float
    errors: float
    seconds: float  # total time spent serving it
    p99_s: float
    span_s: float

    @property
    def mean_s(self) -> float:
        return self.seconds / self.requests if self.requests > 0 else math.nan

    @property
    def rate_rps(self) -> float:
        return self.requests / self.span_s if self.span_s > 0 else math.nan


@dataclass(frozen=True)
class ModelStat:
    """One model version over a period: predictions and their total latency."""

    model: str
    version: str
    predictions: float
    seconds: float
    span_s: float

    @property
    def mean_s(self) -> float:
        return self.seconds / self.predictions if self.predictions > 0 else math.nan


@dataclass(frozen=True)
class Suggestion:
    kind: str
    subject: str
    message: str
    score: float  # ordering: higher first (a share, a ratio)
    evidence: dict[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Thresholds:
    min_share: float = 0.2
    min_errors: float = 10.0
    min_error_ratio: float = 0.01
    high_cpu: float = 0.85  # of one core
    low_cpu: float = 0.2
    target_cpu: float = 0.6
    max_items: int = 5


def _ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def hot_routes(routes: list[RouteStat], th: Thresholds) -> list[Suggestion]:
    total = sum(r.seconds for r in routes if r.seconds > 0)
    if total <= 0:
        return []
    out = []
    for r in sorted(routes, key=lambda r: -r.seconds)[: th.max_items]:
        share = r.seconds / total
        if share < th.min_share:
            break
        subject = f"{r.method} {r.route}"
        out.append(
            Suggestion(
                "hot-route",
                subject,
                f"{subject} takes {share:.0%} of all server time ({r.rate_rps:.2f} req/s x "
                f"{_ms(r.mean_s)} mean, p99 {_ms(r.p99_s)}): the first place to optimize",
                share,
                {
                    "share": share,
                    "rate_rps": r.rate_rps,
                    "mean_s": r.mean_s,
                    "p99_s": r.p99_s,
                    "seconds": r.seconds,
                    "requests": r.requests,
                },
            )
        )
    return out


def error_hotspots(routes: list[RouteStat], th: Thresholds) -> list[Suggestion]:
    total = sum(r.errors for r in routes if r.errors > 0)
    out = []
    for r in sorted(routes, key=lambda r: -r.errors):
        if r.errors < th.min_errors or r.requests <= 0:
            continue
        ratio = r.errors / r.requests
        if ratio < th.min_error_ratio:
            continue
        subject = f"{r.method} {r.route}"
        share = r.errors / total
        out.append(
            Suggestion(
                "error-hotspot",
                subject,
                f"{subject} fails {ratio:.1%} of its requests ({r.errors:.0f} errors, "
                f"{share:.0%} of all errors)",
                share,
                {
                    "errors": r.errors,
                    "error_ratio": ratio,
                    "share_of_errors": share,
                    "requests": r.requests,
                },
            )
        )
        if len(out) >= th.max_items:
            break
    return out


def saturations(found: list[Saturation]) -> list[Suggestion]:
    out = []
    for s in found:
        if not s.saturated:
            continue
        cap = s.capacity if s.capacity is not None else math.nan
        out.append(
            Suggestion(
                "saturation",
                s.resource,
                f"latency tracks {s.resource} (Spearman rho {s.correlation.rho:.2f}, "
                f"p {s.correlation.p_value:.1g}, {s.correlation.n} windows), which runs at "
                f"{s.p95:.2f} of {cap:g} at p95: add processes or cut its use per request",
                s.correlation.rho,
                {
                    "rho": s.correlation.rho,
                    "p_value": s.correlation.p_value,
                    "windows": s.correlation.n,
                    "p95": s.p95,
                    "capacity": cap,
                },
            )
        )
    return out


def capacity(instance_cpu: dict[str, np.ndarray], th: Thresholds) -> list[Suggestion]:
    p95 = {k: percentile(v, 0.95) for k, v in instance_cpu.items()}
    p95 = {k: v for k, v in p95.items() if math.isfinite(v)}
    if not p95:
        return []
    out = []
    for inst, v in sorted(p95.items(), key=lambda kv: -kv[1])[: th.max_items]:
        if v >= th.high_cpu:
            out.append(
                Suggestion(
                    "under-capacity",
                    inst,
                    f"process {inst} uses {v:.2f} of a core at p95 (limit {th.high_cpu:g}): "
                    "it is CPU-bound; add processes or spread the load",
                    v,
                    {"cpu_p95_cores": v},
                )
            )
    if len(p95) >= 2 and max(p95.values()) < th.low_cpu:
        stacked = np.vstack(list(instance_cpu.values()))
        with np.errstate(all="ignore"):
            demand = percentile(np.nansum(stacked, axis=0), 0.95)
        need = max(1, math.ceil(demand / th.target_cpu))
        if need < len(p95):
            out.append(
                Suggestion(
                    "over-capacity",
                    f"{len(p95)} processes",
                    f"all {len(p95)} processes stay under {th.low_cpu:g} of a core at p95 "
                    f"(busiest {max(p95.values()):.2f}); the demand, {demand:.2f} cores at p95, "
                    f"fits in {need} at {th.target_cpu:g} each",
                    1.0 - need / len(p95),
                    {
                        "processes": len(p95),
                        "busiest_p95_cores": max(p95.values()),
                        "demand_p95_cores": demand,
                        "processes_needed": need,
                    },
                )
            )
    return out


def hot_models(models: list[ModelStat], th: Thresholds) -> list[Suggestion]:
    total = sum(m.seconds for m in models if m.seconds > 0)
    if total <= 0:
        return []
    out = []
    for m in sorted(models, key=lambda m: -m.seconds)[: th.max_items]:
        share = m.seconds / total
        if share < th.min_share:
            break
        subject = f"{m.model} {m.version}"
        out.append(
            Suggestion(
                "hot-model",
                subject,
                f"model {subject} takes {share:.0%} of all inference time "
                f"({m.predictions:.0f} predictions x {_ms(m.mean_s)} mean)",
                share,
                {"share": share, "predictions": m.predictions, "mean_s": m.mean_s},
            )
        )
    return out


def suggest(
    routes: list[RouteStat] | None = None,
    models: list[ModelStat] | None = None,
    saturation: list[Saturation] | None = None,
    instance_cpu: dict[str, np.ndarray] | None = None,
    th: Thresholds | None = None,
) -> list[Suggestion]:
    """Every suggestion the data supports (see the module), by kind, then score."""
    th = th or Thresholds()
    return [
        *saturations(saturation or []),
        *capacity(instance_cpu or {}, th),
        *hot_routes(routes or [], th),
        *error_hotspots(routes or [], th),
        *hot_models(models or [], th),
    ]
