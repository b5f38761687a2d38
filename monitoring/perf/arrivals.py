"""The open-loop schedule and the latency summary of a benchmark (pure, no I/O).

An open-loop generator sends request i at its intended time ``t0 + offsets[i]``
whatever happened to earlier requests, and measures its latency from that intended
time. A closed-loop one (a fixed number of workers, each sending when its last answer
arrived) stops sending while the system stalls, so the requests that would have waited
are never made and the stall hides in a handful of samples: Gil Tene's "coordinated
omission", the reason wrk2 (``-R``, constant throughput) and HdrHistogram's
``recordValueWithExpectedInterval`` exist. Here latency = completion - intended start;
service time = completion - actual send; their difference is the queueing a client at
that rate would have seen.

Arrival models: ``constant`` (wrk2's: request i at i/rate, exactly floor(rate x duration)
requests) or ``poisson`` (independent users: exponential gaps of mean 1/rate, a
seeded generator, on average rate x duration requests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Arrivals = Literal["constant", "poisson"]
MAX_REQUESTS = 5_000_000
QUANTILES = (0.5, 0.9, 0.99, 0.999)


def schedule(
    rate: float, duration_s: float, arrivals: Arrivals = "constant", seed: int | None = None
) -> np.ndarray:
    """Intended send offsets (seconds from the start, ascending, all < ``duration_s``).

    >>> schedule(4, 1.0).tolist()
    [0.0, 0.25, 0.5, 0.75]
    >>> len(schedule(100, 2.5))
    250
    """
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number of requests per second, not {rate}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration must be positive, not {duration_s}")
    expected = rate * duration_s
    if expected > MAX_REQUESTS:
        raise ValueError(
            f"rate x duration = {expected:,.0f} requests; at most {MAX_REQUESTS:,} per run"
        )
    if arrivals == "constant":
        n = math.floor(expected + 1e-9)
        return np.arange(n, dtype=np.float64) / rate
    if arrivals == "poisson":
        rng = np.random.default_rng(seed)
        n = int(expected + 10 * math.sqrt(expected) + 10)  # P(more) is negligible
        gaps = rng.exponential(1.0 / rate, n)
        t = np.cumsum(gaps) - gaps[0]  # the first request at 0
        while t[-1] < duration_s:  # pragma: no cover - 10 sigma
            more = np.cumsum(rng.exponential(1.0 / rate, n)) + t[-1]
            t = np.concatenate([t, more])
        return t[t < duration_s]
    raise ValueError(f"arrivals must be 'constant' or 'poisson', not {arrivals!r}")


def quantiles(values: np.ndarray, qs: tuple[float, ...] = QUANTILES) -> dict[float, float]:
    """Quantiles as HdrHistogram reports them (the smallest value with at least q of
    the values at or below it: numpy's ``inverted_cdf``); NaN when there are none.

    >>> quantiles(np.arange(1.0, 101.0), (0.5, 0.99, 0.999))
    {0.5: 50.0, 0.99: 99.0, 0.999: 100.0}
    """
    v = values[np.isfinite(values)]
    if not len(v):
        return {q: math.nan for q in qs}
    out = np.quantile(v, qs, method="inverted_cdf")
    return {q: float(x) for q, x in zip(qs, out, strict=True)}


@dataclass(frozen=True)
class Summary:
    """What a run measured (seconds; rates in requests per second)."""

    target_rate: float
    duration_s: float
    scheduled: int
    completed: int
    errors: int
    unfinished: int
    achieved_rate: float
    latency: dict[float, float]
    service: dict[float, float]
    max_latency_s: float
    mean_latency_s: float
    max_send_lag_s: float
    outcomes: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The printed summary."""

        def ms(d: dict[float, float]) -> str:
            return "  ".join(f"p{_qname(q)}={v * 1000:.2f}ms" for q, v in d.items())

        top = sorted(self.outcomes.items(), key=lambda kv: -kv[1])[:10]
        return [
            f"requests scheduled={self.scheduled} completed={self.completed} "
            f"errors={self.errors} unfinished={self.unfinished}",
            f"rate target={self.target_rate:.1f}/s achieved={self.achieved_rate:.1f}/s "
            f"over {self.duration_s:g}s",
            f"latency (from intended start)  {ms(self.latency)}  "
            f"max={self.max_latency_s * 1000:.2f}ms mean={self.mean_latency_s * 1000:.2f}ms",
            f"service time (from send)       {ms(self.service)}",
            f"generator's largest send lag {self.max_send_lag_s * 1000:.2f}ms; outcomes: "
            + ", ".join(f"{k}={v}" for k, v in top),
        ]


def _qname(q: float) -> str:
    """A quantile's percentile name.

    >>> _qname(0.5), _qname(0.999)
    ('50', '99.9')
    """
    return f"{q * 100:g}"


def summarize(
    *,
    target_rate: float,
    duration_s: float,
    latency_s: np.ndarray,
    service_s: np.ndarray,
    errors: np.ndarray,
    finished: np.ndarray,
    elapsed_s: float,
    max_send_lag_s: float,
    outcomes: dict[str, int],
) -> Summary:
    """A run's :class:`Summary` from per-request arrays (NaN where not finished)."""
    done = latency_s[finished]
    return Summary(
        target_rate=target_rate,
        duration_s=duration_s,
        scheduled=len(latency_s),
        completed=int(finished.sum()),
        errors=int(errors.sum()),
        unfinished=int((~finished).sum()),
        achieved_rate=float(finished.sum()) / max(elapsed_s, duration_s),
        latency=quantiles(done),
        service=quantiles(service_s[finished]),
        max_latency_s=float(done.max()) if len(done) else math.nan,
        mean_latency_s=float(done.mean()) if len(done) else math.nan,
        max_send_lag_s=max_send_lag_s,
        outcomes=dict(outcomes),
    )
