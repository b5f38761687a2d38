"""Seeded synthetic series with known anomalies, for tests and examples.

Gaussian noise around a level, optionally with a daily cycle, plus at most one each
of: a spike (one point), a level shift (a step that persists), a drift (a linear ramp
that persists). Timestamps are regular, ``step_ms`` apart.

>>> s = generate(5, seed=1, spike_at=3, spike=10.0)
>>> len(s.values), s.timestamps_ms[1] - s.timestamps_ms[0], s.anomalies
(5, 300000, {'spike': 3})
>>> generate(5, seed=1).values == generate(5, seed=1).values
True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

T0_MS = 1_700_006_400_000  # 2023-11-15 00:00:00 UTC
DAY_MS = 86_400_000


@dataclass(frozen=True)
class SyntheticSeries:
    timestamps_ms: list[int]
    values: list[float]
    anomalies: dict[str, int] = field(default_factory=dict)  # kind -> first anomalous index


def generate(
    n: int,
    *,
    seed: int = 0,
    level: float = 100.0,
    noise: float = 1.0,
    daily_amplitude: float = 0.0,
    step_ms: int = 300_000,
    start_ms: int = T0_MS,
    spike_at: int | None = None,
    spike: float = 0.0,
    shift_at: int | None = None,
    shift: float = 0.0,
    drift_at: int | None = None,
    drift_per_point: float = 0.0,
) -> SyntheticSeries:
    """``n`` points; each anomaly is applied from its index (see the module docstring)."""
    if n < 0 or step_ms <= 0:
        raise ValueError(f"need n >= 0 and step_ms > 0, got n={n}, step_ms={step_ms}")
    for name, at in (("spike_at", spike_at), ("shift_at", shift_at), ("drift_at", drift_at)):
        if at is not None and not 0 <= at < n:
            raise ValueError(f"{name}={at} is outside 0..{n - 1}")
    rng = random.Random(seed)
    ts = [start_ms + i * step_ms for i in range(n)]
    values = []
    for i, t in enumerate(ts):
        v = level + rng.gauss(0.0, noise)
        if daily_amplitude:
            v += daily_amplitude * math.sin(2 * math.pi * (t % DAY_MS) / DAY_MS)
        if spike_at is not None and i == spike_at:
            v += spike
        if shift_at is not None and i >= shift_at:
            v += shift
        if drift_at is not None and i >= drift_at:
            v += drift_per_point * (i - drift_at + 1)
        values.append(v)
    anomalies = {
        k: at
        for k, at in (("spike", spike_at), ("shift", shift_at), ("drift", drift_at))
        if at is not None
    }
    return SyntheticSeries(ts, values, anomalies)
