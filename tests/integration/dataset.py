"""A deterministic metric dataset with out-of-order and late samples, and its oracle.

Values are multiples of 1/8, so sums are exact whatever order they are added in.
On-time samples are shifted back by at most ``jitter_ms`` (less than the allowed
lateness), so they are never late; late samples are ``late_by_ms`` older than the
tick that carries them (more than the longest window plus the lateness), so they
always are. The oracle is therefore independent of partitioning and batching.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from monitoring.metrics.samples import series_key


class Point(NamedTuple):
    name: str
    labels: dict[str, str]
    timestamp_ms: int
    value: float
    late: bool


@dataclass(frozen=True)
class Expected:
    count: int
    sum: float
    min: float
    max: float
    last: float
    values: tuple[float, ...]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.values)
        return ordered[math.floor(q * (len(ordered) - 1))]


def series_list(n_series: int) -> list[tuple[str, dict[str, str]]]:
    names = ["node_cpu_usage_percent", "http_requests_total", "model_latency_ms", "queue_depth"]
    return [
        (names[i % len(names)], {"host": f"h{i // len(names):03d}", "dc": f"dc{i % 3}"})
        for i in range(n_series)
    ]


def generate(
    n_series: int = 200,
    ticks: int = 500,
    start_ms: int = 1_700_000_000_000,
    interval_ms: int = 1_000,
    jitter_ms: int = 2_000,
    late_fraction: float = 0.01,
    late_by_ms: int = 600_000,
    seed: int = 7,
) -> list[Point]:
    """Points in production order: tick by tick, shuffled within a tick."""
    rng = random.Random(seed)
    series = series_list(n_series)
    level = [rng.randint(0, 800) / 8 for _ in series]
    out: list[Point] = []
    for t in range(ticks):
        tick_ms = start_ms + t * interval_ms
        batch = []
        for i, (name, labels) in enumerate(series):
            level[i] = max(0.0, level[i] + rng.randint(-16, 16) / 8)
            late = t >= 10 and rng.random() < late_fraction
            ts = tick_ms - late_by_ms - rng.randint(0, 5_000) if late else (
                tick_ms - rng.randint(0, jitter_ms))
            batch.append(Point(name, labels, ts, level[i], late))
        rng.shuffle(batch)
        out.extend(batch)
    return out


def oracle(points: list[Point], windows_ms: list[int]) -> dict[tuple[str, int, int], Expected]:
    """Exact aggregates per (series key, window size, window start) of on-time points."""
    acc: dict[tuple[str, int, int], list[tuple[int, float]]] = defaultdict(list)
    for p in points:
        if p.late:
            continue
        key = series_key(p.name, p.labels)
        for w in windows_ms:
            acc[(key, w, p.timestamp_ms - p.timestamp_ms % w)].append((p.timestamp_ms, p.value))
    out = {}
    for k, pts in acc.items():
        values = tuple(v for _, v in pts)
        best = max(t for t, _ in pts)
        out[k] = Expected(len(values), sum(values), min(values), max(values),
                          [v for t, v in pts if t == best][-1], values)
    return out
