"""Deterministic generator of realistic system, application, model and business metrics.

Pure Python, no I/O: the same ``seed`` gives the same samples. ``generate`` yields one
list per tick (every ``interval_ms``) with one sample for each of ``n_series`` series:

* ``node_cpu_usage_percent{host,cpu}``: mean-reverting bounded random walk, 2 decimals
* ``node_memory_used_bytes{host}``: integer bytes drifting under the host's total
* ``http_requests_total{service,route,status}``: counters growing at per-status rates
* ``http_request_duration_seconds_bucket{service,route,le}`` with ``_sum``/``_count``:
  a Prometheus histogram of log-normal latencies (9 series per histogram)
* ``model_inference_latency_ms{model,version}``: log-normal with rare spikes
* ``model_prediction_confidence{model,version}``: in [0, 1], slowly drifting
* ``orders_total{region,channel,tenant}``: business counter with a daily cycle

``late_fraction`` holds that share of samples back 1..``max_late_ticks`` ticks (they
keep their event time, so they arrive late and out of order); values do not depend
on it. With a finite ``ticks``, samples still held are emitted with the last tick, so
every sample is yielded exactly once.

>>> ticks = list(generate(20, start_ms=1_700_000_000_000, interval_ms=1000, seed=1, ticks=2))
>>> [len(t) for t in ticks]
[20, 20]
>>> ticks[0][0].name, ticks[0][0].labels
('node_cpu_usage_percent', {'host': 'node-000', 'cpu': '0'})
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from typing import NamedTuple

SERVICES = ("api", "checkout", "search", "auth", "catalog", "payments", "inventory", "users")
ROUTES = ("/", "/items", "/items/{id}", "/cart", "/login", "/search")
STATUSES = (("200", 40.0), ("404", 1.5), ("500", 0.3))
MODELS = ("fraud-detector", "recommender", "churn", "ranker", "eta", "pricing")
REGIONS = ("eu-west", "us-east", "ap-south")
CHANNELS = ("web", "mobile", "partner")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf)
HISTOGRAM_SERIES = len(LATENCY_BUCKETS) + 2
GiB = 1 << 30
DAY_MS = 86_400_000


class GeneratedSample(NamedTuple):
    """One generated sample: (name, labels, value, timestamp_ms, kind, unit)."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int
    kind: str
    unit: str


def _nth(names: tuple[str, ...], i: int, prefix: str) -> str:
    return names[i] if i < len(names) else f"{prefix}-{i}"


def _le(b: float) -> str:
    return "+Inf" if b == math.inf else repr(float(b))


class _Series:
    """Base: one output series with state; ``step`` returns the next value."""

    __slots__ = ("kind", "labels", "name", "unit")

    def __init__(self, name: str, labels: dict[str, str], kind: str, unit: str) -> None:
        self.name, self.labels, self.kind, self.unit = name, labels, kind, unit

    def step(self, rng: random.Random, ts: int, dt: float) -> float:
        raise NotImplementedError


class _Cpu(_Series):
    __slots__ = ("base", "v")

    def __init__(self, k: int, rng: random.Random) -> None:
        super().__init__(
            "node_cpu_usage_percent",
            {"host": f"node-{k // 8:03d}", "cpu": str(k % 8)},
            "GAUGE",
            "percent",
        )
        self.base = rng.uniform(5, 70)
        self.v = self.base

    def step(self, rng: random.Random, ts: int, dt: float) -> float:
        v = self.v + 0.1 * (self.base - self.v) + rng.gauss(0.0, 3.0)
        if v < 0:
            v = -v
        if v > 100:
            v = 200 - v
        self.v = v
        return round(v, 2)


class _Memory(_Series):
    __slots__ = ("total", "v")

    def __init__(self, k: int, rng: random.Random) -> None:
        super().__init__("node_memory_used_bytes", {"host": f"node-{k:03d}"}, "GAUGE", "bytes")
        self.total = rng.choice((16, 32, 64)) * GiB
        self.v = int(self.total * rng.uniform(0.3, 0.7))

    def step(self, rng: random.Random, ts: int, dt: float) -> float:
        v = self.v + int(rng.gauss(0.0, self.total * 0.004))
        self.v = min(max(v, self.total // 10), self.total - GiB // 4)
        return float(self.v)


class _Counter(_Series):
    __slots__ = ("daily", "rate", "reset_prob", "v")

    def __init__(
        self,
        name: str,
        labels: dict[str, str],
        unit: str,
        rate: float,
        reset_prob: float,
        daily: bool = False,
    ) -> None:
        super().__init__(name, labels, "COUNTER", unit)
        self.rate, self.reset_prob, self.daily, self.v = rate, reset_prob, daily, 0.0

    def step(self, rng: random.Random, ts: int, dt: float) -> float:
        rate = self.rate
        if self.daily:  # busiest mid-day UTC, a third of the peak at night
            rate *= 0.67 - 0.33 * math.cos(2 * math.pi * (ts % DAY_MS) / DAY_MS)
        mean = rate * dt
        inc = round(rng.gauss(mean, math.sqrt(mean))) if mean > 0 else 0
        if self.reset_prob and rng.random() < self.reset_prob:
            self.v = 0.0  # process restart
        self.v += max(inc, 0)
        return self.v


class _Histogram:
    """One histogram: the ``_bucket`` series, then ``_sum`` and ``_count``."""

    __slots__ = ("counts", "mu", "n", "rate", "series", "sigma", "total")

    def __init__(self, k: int, rng: random.Random) -> None:
        labels = {
            "service": _nth(SERVICES, k // len(ROUTES), "service"),
            "route": ROUTES[k % len(ROUTES)],
        }
        name = "http_request_duration_seconds"
        self.series = [
            _Series(f"{name}_bucket", {**labels, "le": _le(b)}, "HISTOGRAM_BUCKET", "seconds")
            for b in LATENCY_BUCKETS
        ] + [
            _Series(f"{name}_sum", labels, "COUNTER", "seconds"),
            _Series(f"{name}_count", labels, "COUNTER", ""),
        ]
        self.mu = math.log(rng.uniform(0.03, 0.3))
        self.sigma = rng.uniform(0.3, 0.8)
        self.rate = rng.uniform(2.0, 15.0)
        self.counts = [0] * len(LATENCY_BUCKETS)
        self.total = 0.0
        self.n = 0

    def step(self, rng: random.Random, dt: float) -> list[float]:
        n = max(0, round(rng.gauss(self.rate * dt, math.sqrt(self.rate * dt))))
        for _ in range(n):
            x = rng.lognormvariate(self.mu, self.sigma)
            i = 0
            while x > LATENCY_BUCKETS[i]:
                i += 1
            self.counts[i] += 1
            self.total += x
        self.n += n
        out: list[float] = []
        acc = 0
        for c in self.counts:
            acc += c
            out.append(float(acc))
        out.append(round(self.total, 6))
        out.append(float(self.n))
        return out


class _ModelLatency(_Series):
    __slots__ = ("mu",)

    def __init__(self, k: int, rng: random.Random) -> None:
        super().__init__(
            "model_inference_latency_ms",
            {"model": _nth(MODELS, k // 2, "model"), "version": f"v{k % 2 + 1}"},
            "GAUGE",
            "ms",
        )
        self.mu = math.log(rng.uniform(8, 80))

    def step(self, rng: random.Random, ts: int, dt: float) -> float:
        v = rng.lognormvariate(self.mu, 0.25)
        if rng.random() < 0.002:
            v *= rng.uniform(5, 10)  # a rare stall
        return round(v, 3)


class _Confidence(_Series):
    __slots__ = ("drift", "level")

    def __init__(self, k: int, rng: random.Random) -> None:
        super().__init__(
            "model_prediction_confidence",
            {"model": _nth(MODELS, k // 2, "model"), "version": f"v{k % 2 + 1}"},
            "GAUGE",
            "ratio",
        )
        self.level = rng.uniform(0.75, 0.95)
        self.drift = -rng.uniform(0.0, 2e-5)

    def step(self, rng: random.Random, ts: int, dt: float) -> float:
        self.level = min(max(self.level + self.drift * dt, 0.3), 0.99)
        return round(min(max(rng.gauss(self.level, 0.03), 0.0), 1.0), 4)


def _plan(n_series: int) -> dict[str, int]:
    """How many series of each family (largest remainder), histograms in groups of 9."""
    weights = {
        "cpu": 0.30,
        "http": 0.25,
        "hist": 0.15,
        "latency": 0.10,
        "confidence": 0.10,
        "memory": 0.05,
        "orders": 0.05,
    }
    exact = {k: w * n_series for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[
        : n_series - sum(counts.values())
    ]:
        counts[k] += 1
    spare = counts["hist"] % HISTOGRAM_SERIES
    counts["hist"] -= spare
    counts["cpu"] += spare
    return counts


def _build(n_series: int, rng: random.Random, reset_prob: float) -> list[_Series | _Histogram]:
    plan = _plan(n_series)
    out: list[_Series | _Histogram] = []
    out += [_Cpu(k, rng) for k in range(plan["cpu"])]
    out += [_Memory(k, rng) for k in range(plan["memory"])]
    for k in range(plan["http"]):
        status, rate = STATUSES[k % len(STATUSES)]
        j = k // len(STATUSES)
        labels = {
            "service": _nth(SERVICES, j // len(ROUTES), "service"),
            "route": ROUTES[j % len(ROUTES)],
            "status": status,
        }
        out.append(
            _Counter(
                "http_requests_total", labels, "requests", rate * rng.uniform(0.5, 2.0), reset_prob
            )
        )
    out += [_Histogram(k, rng) for k in range(plan["hist"] // HISTOGRAM_SERIES)]
    out += [_ModelLatency(k, rng) for k in range(plan["latency"])]
    out += [_Confidence(k, rng) for k in range(plan["confidence"])]
    for k in range(plan["orders"]):
        labels = {
            "region": REGIONS[k % len(REGIONS)],
            "channel": CHANNELS[(k // len(REGIONS)) % len(CHANNELS)],
            "tenant": f"t{k // (len(REGIONS) * len(CHANNELS))}",
        }
        out.append(
            _Counter(
                "orders_total", labels, "orders", rng.uniform(0.5, 5.0), reset_prob, daily=True
            )
        )
    return out


def generate(
    n_series: int,
    start_ms: int,
    interval_ms: int = 1000,
    seed: int = 0,
    *,
    ticks: int | None = None,
    late_fraction: float = 0.0,
    max_late_ticks: int = 3,
    counter_reset_prob: float = 0.0,
) -> Iterator[list[GeneratedSample]]:
    """Yield, per tick, one ``GeneratedSample`` for each of ``n_series`` series.

    Tick ``t`` has event time ``start_ms + t * interval_ms``; ``ticks=None`` runs
    forever. Labels dicts are shared between ticks of a series: do not mutate them.
    """
    if n_series < 1:
        raise ValueError("n_series must be at least 1")
    if interval_ms < 1:
        raise ValueError("interval_ms must be at least 1")
    if not 0.0 <= late_fraction <= 1.0:
        raise ValueError("late_fraction must be in [0, 1]")
    if max_late_ticks < 1:
        raise ValueError("max_late_ticks must be at least 1")
    rng = random.Random(seed)
    late_rng = random.Random(f"{seed}-late")
    series = _build(n_series, rng, counter_reset_prob)
    dt = interval_ms / 1000.0
    held: list[tuple[int, int, GeneratedSample]] = []  # (release tick, seq, sample)
    seq = 0
    t = 0
    while ticks is None or t < ticks:
        ts = start_ms + t * interval_ms
        out: list[GeneratedSample] = []
        for s in series:
            if isinstance(s, _Histogram):
                for sub, v in zip(s.series, s.step(rng, dt), strict=True):
                    out.append(GeneratedSample(sub.name, sub.labels, v, ts, sub.kind, sub.unit))
            else:
                out.append(
                    GeneratedSample(s.name, s.labels, s.step(rng, ts, dt), ts, s.kind, s.unit)
                )
        if late_fraction:
            keep: list[GeneratedSample] = []
            for smp in out:
                if late_rng.random() < late_fraction:
                    heapq.heappush(held, (t + late_rng.randint(1, max_late_ticks), seq, smp))
                    seq += 1
                else:
                    keep.append(smp)
            out = keep
            last = ticks is not None and t == ticks - 1
            while held and (last or held[0][0] <= t):
                out.append(heapq.heappop(held)[2])
        yield out
        t += 1
