"""Cost of rules outside the window subset (evaluated by ``monitoring.promql``).

``run_samples_bench`` loads histogram series as the SDK emits them (``<name>_bucket``
with ``le``, cumulative counts growing every window) for ``services`` services x
``buckets`` bounds, and ``rules`` alert rules ``histogram_quantile(q, sum by (le)
(rate(<name>_bucket{service="sN"}[5m]))) > x``, each rule on one service with its own
quantile and threshold (so results are not shared between rules), then times
``AlertEngine.evaluate`` per close as ``bench alerts`` does.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from monitoring.alerts.evaluator import AlertEngine
from monitoring.alerts.rules import Rule
from monitoring.metrics.aggregator import Aggregate

WINDOW_MS = 10_000
NAME = "request_seconds_bucket"


@dataclass(frozen=True)
class SamplesBenchResult:
    """What one run measured."""

    rules: int
    series: int
    closes: int
    eval_ms_per_close: float
    eval_cpu_ms_per_close: float
    alerts: int


def _bounds(n: int) -> list[str]:
    return [*(f"{0.005 * 2**i:g}" for i in range(n - 1)), "+Inf"]


def _window(key: str, labels: dict[str, str], end: int, v: float) -> Aggregate:
    """One window holding the single sample ``v`` (a bucket counter's value)."""
    return Aggregate(key, NAME, labels, WINDOW_MS, end - WINDOW_MS, end, 1, v, v, v, v, v, v, v, v)


def run_samples_bench(
    rules: int = 100, services: int = 50, buckets: int = 20, closes: int = 20, seed: int = 0
) -> SamplesBenchResult:
    """Fill 5 minutes of history, then time ``closes`` evaluations."""
    rnd = random.Random(seed)
    bounds = _bounds(buckets)
    ruleset = [
        Rule.build(
            f"Slow{k:03d}",
            f"histogram_quantile(0.{rnd.randint(50, 99)}, sum by (le) "
            f'(rate({NAME}{{service="s{k % services}"}}[5m]))) > {rnd.uniform(0.5, 3):.3f}',
        )
        for k in range(rules)
    ]
    eng = AlertEngine(ruleset, window_ms=WINDOW_MS)
    counts = [[0.0] * buckets for _ in range(services)]
    t = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW_MS

    def close(end: int) -> None:
        for s in range(services):
            acc = 0.0
            c = counts[s]
            for b in range(buckets):  # cumulative: each bucket gains what the lower ones did
                acc += rnd.randint(0, 20)
                c[b] += acc
                labels = {"service": f"s{s}", "le": bounds[b]}
                key = NAME + "{" + ",".join(f'{k}="{labels[k]}"' for k in sorted(labels)) + "}"
                eng.add(_window(key, labels, end, c[b]))

    alerts = 0
    for _ in range(max(r.max_range_ms for r in ruleset) // WINDOW_MS + 1):
        t += WINDOW_MS
        close(t)
        alerts += len(eng.evaluate(t))
    wall, cpu = 0.0, 0.0
    for _ in range(closes):
        t += WINDOW_MS
        close(t)
        t0, c0 = time.perf_counter(), time.process_time()
        alerts += len(eng.evaluate(t))
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    if eng.errors:
        raise RuntimeError(f"rules failed: {eng.errors[0][1]}")
    return SamplesBenchResult(
        rules, services * buckets, closes, wall / closes * 1000, cpu / closes * 1000, alerts
    )
