"""Rule evaluation cost: 1,000 rules over 10,000 series per window close.

``run_eval_bench`` builds a realistic load (10 metrics x 1,000 series with host,
service, env and dc labels; thresholds with label matchers, aggregations ``by``,
range functions, composites and ``absent``), fills the history with enough closes
for the longest range, then times ``AlertEngine.evaluate`` per close (the windows of
each close are added untimed and measured separately). ``eval_ms_per_close`` is the
number the ``bench alerts`` command reports.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from monitoring.alerts.evaluator import AlertEngine
from monitoring.alerts.rules import Rule
from monitoring.metrics.aggregator import Aggregate

WINDOW_MS = 10_000
METRICS = {  # name: (mean, stationary sd) of a mean-reverting AR(1) walk
    "cpu_usage": (50.0, 10.0),
    "memory_usage": (60.0, 8.0),
    "disk_free_bytes": (5e10, 5e8),
    "http_requests_total": (0.0, 2000.0),  # counters: grow by up to sd per window
    "http_errors_total": (0.0, 100.0),
    "http_latency_seconds": (0.2, 0.08),
    "queue_depth": (100.0, 40.0),
    "inference_latency_ms": (120.0, 30.0),
    "gpu_util": (40.0, 12.0),
    "anomaly_score": (0.3, 0.15),
}
PHI = 0.9  # AR(1) coefficient per window: innovations of sd * sqrt(1 - PHI^2)
INNOVATION = (1 - PHI**2) ** 0.5
COUNTERS = ("http_requests_total", "http_errors_total")
SERVICES = [f"svc{i}" for i in range(10)]


@dataclass(frozen=True)
class EvalBenchResult:
    """What one run measured."""

    rules: int
    series: int
    closes: int
    eval_ms_per_close: float
    eval_ms_max: float
    eval_cpu_ms_per_close: float
    """CPU time of this process: what the load costs when other processes share the cores."""
    add_us_per_window: float
    alerts: int


def make_series(n: int) -> list[tuple[str, str, dict[str, str]]]:
    """``n`` series spread over the metrics: (key, name, labels)."""
    names = list(METRICS)
    per = max(1, n // len(names))
    out = []
    for k in range(n):
        name = names[(k // per) % len(names)]
        i = k % per
        labels = {
            "host": f"h{i:04d}",
            "service": SERVICES[i % len(SERVICES)],
            "env": "prod" if i % 4 else "staging",
            "dc": f"dc{i % 3}",
        }
        key = name + "{" + ",".join(f'{a}="{labels[a]}"' for a in sorted(labels)) + "}"
        out.append((key, name, labels))
    return out


def make_rules(n: int, seed: int = 0) -> list[Rule]:
    """``n`` rules of realistic shapes, with thresholds that fire for a few series."""
    rnd = random.Random(seed)
    shapes = [
        # thresholds with matchers (half the load)
        lambda s, dc: f'cpu_usage{{service="{s}", env="prod"}} > {rnd.randint(85, 99)}',
        lambda s, dc: f'memory_usage{{service="{s}", dc="{dc}"}} >= {rnd.randint(88, 99)}',
        lambda s, dc: f'gpu_util{{service=~"{s}|svc9"}} > {rnd.randint(80, 99)}',
        lambda s, dc: f'queue_depth{{dc="{dc}", env!="staging"}} > {rnd.randint(250, 400)}',
        lambda s, dc: f'inference_latency_ms{{service="{s}"}} > {rnd.randint(250, 400)}',
        # aggregations by
        lambda s, dc: f'avg by (service) (cpu_usage{{dc="{dc}"}}) > {rnd.randint(60, 80)}',
        lambda s, dc: f'max by (dc) (queue_depth{{service="{s}"}}) > {rnd.randint(300, 500)}',
        lambda s, dc: (
            f'sum by (service) (rate(http_errors_total{{dc="{dc}"}}[1m])) / '
            f'sum by (service) (rate(http_requests_total{{dc="{dc}"}}[1m])) > 0.{rnd.randint(2, 4)}'
        ),
        # range functions
        lambda s, dc: f'avg_over_time(memory_usage{{service="{s}"}}[1m]) > {rnd.randint(85, 95)}',
        lambda s, dc: f'max_over_time(cpu_usage{{service="{s}", dc="{dc}"}}[2m]) > 98',
        lambda s, dc: f'rate(http_requests_total{{service="{s}"}}[1m]) > {rnd.randint(150, 300)}',
        lambda s, dc: (
            f'quantile_over_time(0.99, http_latency_seconds{{service="{s}"}}[1m]) '
            f"> 0.{rnd.randint(6, 9)}"
        ),
        lambda s, dc: f'predict_linear(disk_free_bytes{{dc="{dc}", service="{s}"}}[5m], 3600) < 0',
        lambda s, dc: f'deriv(queue_depth{{service="{s}"}}[1m]) > {rnd.randint(5, 15)}',
        # composites and missing data
        lambda s, dc: (
            f'anomaly_score{{service="{s}"}} > 0.{rnd.randint(8, 9)} and on(host) '
            f'cpu_usage{{service="{s}"}} > {rnd.randint(60, 80)}'
        ),
        lambda s, dc: f'absent(cpu_usage{{service="{s}", env="prod"}})',
    ]
    weights = [10, 10, 8, 8, 8, 6, 6, 4, 8, 6, 6, 6, 4, 4, 4, 2]
    rules = []
    for k in range(n):
        shape = rnd.choices(shapes, weights)[0]
        expr = shape(rnd.choice(SERVICES), f"dc{rnd.randrange(3)}")
        rules.append(
            Rule.build(
                f"Rule{k:04d}",
                expr,
                for_ms=rnd.choice([0, 30_000, 60_000]),
                labels={"severity": rnd.choice(["warning", "critical"])},
                annotations={"summary": "{{ $labels.host }} at {{ $value | humanize }}"},
                group=f"g{k // 50}",
            )
        )
    return rules


class _Load:
    """Random walks per series, emitted as one closed window per series per close."""

    def __init__(self, series: list[tuple[str, str, dict[str, str]]], seed: int) -> None:
        self.rnd = random.Random(seed)
        self.series = series
        self.values = [METRICS[name][0] for _, name, _ in series]

    def close(self, end_ms: int) -> list[Aggregate]:
        out = []
        rnd = self.rnd
        for i, (key, name, labels) in enumerate(self.series):
            mean, sd = METRICS[name]
            prev = self.values[i]
            if name in COUNTERS:  # samples of a window lie between the previous last and v
                v = prev + rnd.random() * sd
                lo = prev + (v - prev) * 0.1
            else:
                v = mean + PHI * (prev - mean) + rnd.gauss(0.0, sd * INNOVATION)
                lo = v - abs(v) * 0.02
            self.values[i] = v
            out.append(
                Aggregate(
                    key,
                    name,
                    labels,
                    WINDOW_MS,
                    end_ms - WINDOW_MS,
                    end_ms,
                    10,
                    v * 10,
                    lo,
                    v,
                    v,
                    v,
                    v,
                    v,
                    v,
                )
            )
        return out


def run_eval_bench(
    rules: int = 1_000, series: int = 10_000, closes: int = 20, seed: int = 0
) -> EvalBenchResult:
    """Fill the history (5 min of closes), then time ``closes`` evaluations (with the
    evaluator process's GC thresholds)."""
    import gc

    from monitoring.agents.alerting import GC_THRESHOLD

    saved = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        return _run_eval_bench(rules, series, closes, seed)
    finally:
        gc.set_threshold(*saved)


def _run_eval_bench(rules: int, series: int, closes: int, seed: int) -> EvalBenchResult:
    ruleset = make_rules(rules, seed)
    load = _Load(make_series(series), seed)
    eng = AlertEngine(ruleset, window_ms=WINDOW_MS)
    t = 1_700_000_000_000 - 1_700_000_000_000 % WINDOW_MS
    warmup = max(r.max_range_ms for r in ruleset) // WINDOW_MS + 1
    alerts = 0
    for _ in range(warmup):
        t += WINDOW_MS
        for a in load.close(t):
            eng.add(a)
        alerts += len(eng.evaluate(t))
    timings, cpu, add_s, added = [], 0.0, 0.0, 0
    for _ in range(closes):
        t += WINDOW_MS
        aggs = load.close(t)
        t0 = time.perf_counter()
        for a in aggs:
            eng.add(a)
        t1 = time.perf_counter()
        c1 = time.process_time()
        alerts += len(eng.evaluate(t))
        cpu += time.process_time() - c1
        timings.append(time.perf_counter() - t1)
        add_s += t1 - t0
        added += len(aggs)
    return EvalBenchResult(
        rules=rules,
        series=series,
        closes=closes,
        eval_ms_per_close=sum(timings) / len(timings) * 1000,
        eval_ms_max=max(timings) * 1000,
        eval_cpu_ms_per_close=cpu / closes * 1000,
        add_us_per_window=add_s / added * 1e6,
        alerts=alerts,
    )


def eval_ms_per_close(
    rules: int = 1_000, series: int = 10_000, closes: int = 20, seed: int = 0
) -> float:
    """Mean milliseconds to evaluate every rule at one window close."""
    return run_eval_bench(rules, series, closes, seed).eval_ms_per_close
