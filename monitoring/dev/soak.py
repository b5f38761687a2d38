"""The soak (`monitoring chaos --soak`): the real deployment under a constant load for a
long time, memory and lag sampled, the stored windows checked exactly.

The load is the load generator (``monitoring.dev.loadgen``) streamed: ``n_series``
series, one tick every ``interval_ms`` (``n_series * 1000 / rate`` rounded), each
tick's samples sent back to back through per-series SDK handles, event time the
tick's scheduled time. A tick behind its schedule is sent at once (catch-up, nothing
skipped), so the offered rate averages the target (``ARRIVAL``). The producer keeps
one generator state and one handle per series: constant memory however long it runs.
Next to it, one ``soak_hot`` series per cycle (``hot_s`` at 100, then ``cold_s`` at
0, one sample per second of event time) fires ``ChaosHot`` once and resolves it once.

Every ``sample_every_s`` a sampler records each process's resident memory (psutil, with
its children; the producer, this process, without) and each consumer group's lag
(records, summed over partitions, ``ops.lag`` through ``CommittedOffsets``). The report
gives per process the RSS at the end of the warm-up and at the end of producing, the
growth and a least-squares slope over the measured part; lag max and at the end; lost
and duplicated samples from the store's per-window counts against the generator's known
counts (every series has one sample per tick, so a window of size W holds exactly the
ticks inside it); and ``alerts_differing`` as the chaos suite counts it.

``measure_peak`` ramps the same load on a deployment of its own: steps of
``step_s`` at rates growing by ``factor`` (falling by it from the start until one holds,
if the first does not); a step holds when the producer reached
95 % of the rate and the worker (samples, and aggregates for the anomaly agent) and the
store committed everything within ``drain_s`` after it; the peak is the last rate that
held.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from monitoring.dev.chaos import Webhook, alerts_differing
from monitoring.dev.deploy import LocalDeployment, free_port
from monitoring.dev.loadgen import generate
from monitoring.ops import lag as lag_probe
from monitoring.runtime import topics
from monitoring.runtime.admin import admin_client
from monitoring.sinks.clickhouse.store import store_group

ARRIVAL = (
    "scrape ticks: every interval the generator's next tick (one sample per series) sent "
    "back to back, event time the scheduled time; late ticks sent at once, none skipped"
)
HOT = "soak_hot"
RULES = f"""
groups:
  - name: soak
    rules:
      - alert: ChaosHot
        expr: {HOT} > 50
"""
PIPELINE = ("worker", "store", "alerting", "notifier")
MAX_POINTS = 100_000  # samples kept per process or group (a 30 min run at 10 s: 180)
MiB = 1 << 20


def interval_for(rate: float, n_series: int) -> int:
    """The tick interval (ms) giving about ``rate`` samples/s with ``n_series`` series.

    >>> interval_for(25_000, 5_000)
    200
    """
    if rate <= 0 or n_series < 1:
        raise ValueError("rate and n_series must be positive")
    return max(1, round(n_series * 1000 / rate))


def slope_per_h(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per hour (0 under two points).

    >>> slope_per_h([(0, 1.0), (1800, 2.0), (3600, 3.0)])
    2.0
    """
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 3600 * sum((t - mx) * (v - my) for t, v in points) / var


def expected_count(start_ms: int, w: int, first_ms: int, ticks: int, interval_ms: int) -> int:
    """Ticks ``first_ms + k * interval_ms`` (k < ticks) inside the window [start, start+w).

    >>> expected_count(0, 10, 5, 10, 1), expected_count(10, 10, 5, 10, 1)
    (5, 5)
    """
    lo = max(start_ms, first_ms)
    hi = min(start_ms + w, first_ms + ticks * interval_ms)
    if hi <= lo:
        return 0
    return -(-(hi - first_ms) // interval_ms) - -(-(lo - first_ms) // interval_ms)


def count_check(
    rows: list[list[Any]], windows_ms: list[int], n_series: int, first_ms: int, ticks: int,
    interval_ms: int,
) -> tuple[int, int]:  # fmt: skip
    """(lost, duplicated) samples of stored (window_ms, window_start_ms, count, series
    with that count) against the generator's counts: every series has ``E`` samples in a
    window, ``E`` the ticks inside it; a series missing from a window lost all ``E``.

    >>> count_check([[10, 0, 10, 2], [10, 10, 9, 1], [10, 10, 11, 1]], [10], 2, 0, 20, 1)
    (1, 1)
    """
    lost = duplicated = 0
    present: dict[tuple[int, int], int] = defaultdict(int)
    for w, start, count, n in rows:
        want = expected_count(int(start), int(w), first_ms, ticks, interval_ms)
        present[(int(w), int(start))] += int(n)
        lost += int(n) * max(0, want - int(count))
        duplicated += int(n) * max(0, int(count) - want)
    end = first_ms + ticks * interval_ms
    for w in windows_ms:
        for start in range(first_ms - first_ms % w, end, w):
            want = expected_count(start, w, first_ms, ticks, interval_ms)
            missing = n_series - present.get((w, start), 0)
            lost += max(0, missing) * want
            duplicated += max(0, -missing) * want  # series that should not exist
    return lost, duplicated


class Feeder:
    """Streams the load generator into the samples topic (module docstring)."""

    def __init__(
        self, d: LocalDeployment, n_series: int, interval_ms: int, seed: int,
        hot_s: int = 0, cold_s: int = 0,
    ) -> None:  # fmt: skip
        self.d, self.n_series, self.interval_ms, self.seed = d, n_series, interval_ms, seed
        self.hot_s, self.cold_s = hot_s, cold_s
        self.first_ms = 0
        self.ticks = 0
        self.hot_sent = 0
        self.names: set[str] = set()  # the generator's metric names
        self.behind_max_s = 0.0
        self.messages = 0
        self.hot: dict[str, tuple[int, int]] = {}  # cycle -> (first, last hot second)
        self.elapsed_s = 0.0

    def run(self, seconds: float, stop: threading.Event) -> None:
        """Produce for ``seconds`` (or until ``stop``), flush; raises if not all delivered."""
        from monitoring.metrics.collector import MetricsCollector

        iv = self.interval_ms
        now_ms = int(time.time() * 1000)
        self.first_ms = start_ms = now_ms - now_ms % iv
        period = self.hot_s + self.cold_s
        cycles = int(seconds // period) if self.hot_s and period else 0
        size = 500 * self.d.settings.kafka.samples_partitions
        config = {"message.timeout.ms": 600_000}
        with MetricsCollector(self.d.settings, batch=True, batch_size=size, linger=0.05,
                              producer_config=config, block_timeout=120) as mc:  # fmt: skip
            handles: list[Callable[..., bool]] = []
            last_sec = -1
            t0 = time.monotonic()
            for t, tick in enumerate(generate(self.n_series, start_ms, iv, seed=self.seed)):
                due = t0 + t * iv / 1000
                if stop.is_set() or t * iv >= seconds * 1000:
                    break
                lag_s = time.monotonic() - due
                if lag_s < 0:
                    stop.wait(-lag_s)  # pacing the load, not waiting for a result
                else:
                    self.behind_max_s = max(self.behind_max_s, lag_s)
                if not handles:
                    handles = [mc.series(s.name, s.labels, s.kind, s.unit).record for s in tick]
                    self.names = {s.name for s in tick}
                ts = start_ms + t * iv
                for record, s in zip(handles, tick, strict=True):
                    record(s.value, ts)
                self.ticks = t + 1
                sec = t * iv // 1000
                if sec != last_sec and sec // max(1, period) < cycles:
                    last_sec = sec
                    c, phase = divmod(sec, period)
                    self.hot.setdefault(str(c), (c * period, c * period + self.hot_s - 1))
                    mc.record(HOT, 100.0 if phase < self.hot_s else 0.0, {"i": str(c)}, ts)
                    self.hot_sent += 1
            self.elapsed_s = time.monotonic() - t0
            if mc.flush(600) != 0:
                raise RuntimeError(f"the producer did not deliver every sample: {mc.stats()}")
            self.messages = mc.stats()["messages"]

    @property
    def samples(self) -> int:
        """Load generator samples sent (the hot series not counted)."""
        return self.ticks * self.n_series


@dataclass
class Sampler:
    """Every ``every_s``: each process's RSS and each group's lag (module docstring)."""

    d: LocalDeployment
    every_s: float
    extra: dict[str, int] = field(default_factory=dict)  # name -> pid (broker, producer)
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    lag: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    errors: int = 0
    t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Sampler:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)

    def _loop(self) -> None:
        k = self.d.settings.kafka
        admin = admin_client(k)
        offsets = lag_probe.CommittedOffsets(k)
        try:
            while True:
                self.sample(admin, offsets)
                if self.stop.wait(self.every_s):
                    return
        finally:
            offsets.close()

    def sample(self, admin: Any, offsets: lag_probe.CommittedOffsets) -> None:
        """One measurement of every process and group."""
        t = time.monotonic() - self.t0
        pids = {name: p.pid for name, p in self.d.procs.items() if p.poll() is None}
        for name, pid in {**pids, **self.extra}.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                rss = proc.memory_info().rss
                # a pipeline process's children are its own; the producer's are the
                # deployment's processes, measured apart
                for child in proc.children(recursive=True) if name in pids else ():
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
                if len(self.rss[name]) < MAX_POINTS:
                    self.rss[name].append((t, rss))
        prefix = self.d.settings.kafka.topic_prefix
        try:
            groups = lag_probe.list_groups(admin, [prefix, store_group(self.d.settings)], 10)
            rows = lag_probe.lag(admin, groups, 10, topic_prefix=prefix, offsets=offsets)
        except lag_probe.LagUnavailable:
            self.errors += 1
            return
        per: dict[str, int] = defaultdict(int)
        for r in rows:
            per[r.group] += r.lag
        for g, n in per.items():
            if len(self.lag[g]) < MAX_POINTS:
                self.lag[g].append((t, n))


@dataclass
class SoakConfig:
    """What a soak does (defaults: the 30-minute run at a measured peak's half)."""

    duration_s: float = 1800.0
    warmup_s: float = 120.0
    rate: float | None = None  # samples/s; None: half the peak
    peak: float | None = None  # given; None: measured by a ramp
    n_series: int = 5_000
    seed: int = 1
    sample_every_s: float = 10.0
    settle_s: float = 300.0
    hot_s: int = 30
    cold_s: int = 40
    ramp_start: float = 10_000.0
    ramp_min: float = 500.0
    ramp_factor: float = 1.5
    ramp_max: float = 400_000.0
    ramp_step_s: float = 40.0
    ramp_drain_s: float = 20.0
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class SoakResult:
    """What a soak measured (``lines`` prints it)."""

    cfg: SoakConfig
    peak: float
    peak_how: str
    rate: float
    interval_ms: int
    samples: int
    behind_max_s: float
    loads: list[tuple[str, tuple[float, float, float]]]
    rss: dict[str, list[tuple[float, int]]]
    lag: dict[str, list[tuple[float, int]]]
    produce_end_s: float
    lost: int
    duplicated: int
    alerts_differing: int
    converged: bool
    settle_took_s: float
    exits: dict[str, int]
    lag_errors: int
    alerts_expected: int = 0
    ramp: list[str] = field(default_factory=list)

    def _window(self, name: str) -> list[tuple[float, int]]:
        w = self.cfg.warmup_s
        return [(t, v) for t, v in self.rss.get(name, []) if w <= t <= self.produce_end_s]

    def rss_row(self, name: str) -> tuple[float, float, float, float, float] | None:
        """(start MiB, end MiB, growth %, slope MiB/h, slope of the second half MiB/h)
        over the measured part: growth that stops (a bound reached) has a second-half
        slope near 0, a steady leak the same slope in both."""
        pts = self._window(name)
        if len(pts) < 2:
            return None
        a, b = pts[0][1], pts[-1][1]
        mib = [(t, v / MiB) for t, v in pts]
        slope, late = slope_per_h(mib), slope_per_h(mib[len(mib) // 2 :])
        return a / MiB, b / MiB, 100.0 * (b - a) / a, slope, late

    @property
    def rss_growth_pct(self) -> float:
        """The largest growth of a pipeline process over the measured part."""
        rows = [self.rss_row(n) for n in self.rss if n in PIPELINE]
        return max((r[2] for r in rows if r is not None), default=0.0)

    def lines(self) -> list[str]:
        """The report, ending with the suite's last line."""
        c = self.cfg
        out = [
            f"peak: {self.peak:,.0f} samples/s ({self.peak_how})",
            f"rate: {self.rate:,.0f} samples/s offered ({c.n_series} series every "
            f"{self.interval_ms} ms; arrival: {ARRIVAL}); producer at most "
            f"{self.behind_max_s:.2f} s behind its schedule",
            f"duration: warm-up {c.warmup_s:.0f} s, then {c.duration_s:.0f} s measured; "
            f"{self.samples:,} samples; RSS and lag every {c.sample_every_s:.0f} s",
            "load averages (1/5/15 min): "
            + "; ".join(f"{k} {a:.2f} {b:.2f} {z:.2f}" for k, (a, b, z) in self.loads),
            f"{'process':<10} {'rss_start_mib':>13} {'rss_end_mib':>11} {'growth_pct':>10} "
            f"{'slope_mib_per_h':>15} {'2nd_half_slope':>14}",
        ]
        for name in sorted(self.rss):
            row = self.rss_row(name)
            note = "" if name in PIPELINE else "  (not in rss_growth_pct)"
            if row is not None:
                out.append(f"{name:<10} {row[0]:>13.1f} {row[1]:>11.1f} {row[2]:>10.1f} "
                           f"{row[3]:>15.2f} {row[4]:>14.2f}{note}")  # fmt: skip
        out.append(f"{'group':<40} {'lag_max':>9} {'lag_max_warm':>12} {'lag_end':>8} (records)")
        for g in sorted(self.lag):
            pts = [(t, v) for t, v in self.lag[g] if t <= self.produce_end_s]
            warm = [v for t, v in pts if t >= c.warmup_s]
            if pts:
                out.append(f"{g:<40} {max(v for _, v in pts):>9} {max(warm, default=0):>12} "
                           f"{pts[-1][1]:>8}")  # fmt: skip
        if self.lag_errors:
            out.append(f"lag samples the broker did not answer: {self.lag_errors}")
        exits = ", ".join(f"{k} {n}" for k, n in sorted(self.exits.items())) or "none"
        out.append(f"processes that exited (restarted): {exits}")
        out.append(f"alerts: {self.alerts_expected} expected to fire and resolve once each")
        out.append(
            f"converged: {'yes' if self.converged else 'NO (deadline)'} "
            f"{self.settle_took_s:.0f} s after producing stopped; lost and duplicated from "
            "the stored windows' counts against the generator's (exact)"
        )
        out.append(self.last_line())
        return out

    def last_line(self) -> str:
        """The suite's last line."""
        return (
            f"rounds=0 lost={self.lost} duplicated={self.duplicated} "
            f"alerts_differing={self.alerts_differing} rss_growth_pct={self.rss_growth_pct:.1f}"
        )


def _loads() -> tuple[float, float, float]:
    return os.getloadavg()


class SoakRun:
    """A soak on the broker at ``bootstrap``; deployments under ``directory``."""

    def __init__(
        self, cfg: SoakConfig, directory: Path, bootstrap: str, broker_pid: int | None = None,
        say: Callable[[str], None] = print, delete_topics: bool = False,
    ) -> None:  # fmt: skip
        self.cfg, self.dir, self.bootstrap, self.say = cfg, directory, bootstrap, say
        self.delete_topics = delete_topics  # on a shared broker: leave nothing behind
        self.extra = {"producer": os.getpid()}
        if broker_pid is not None:
            self.extra["broker"] = broker_pid

    def deployment(self, name: str, hook: Webhook) -> LocalDeployment:
        """A deployment (store, worker, evaluator, notifier) started and healthy."""
        base = self.dir / name
        base.mkdir(parents=True, exist_ok=True)
        rules = base / "soak.rules.yml"
        rules.write_text(RULES)
        notifier = base / "notifier.yml"
        notifier.write_text(yaml.safe_dump({
            "route": {"receiver": "hook", "group_by": ["alertname", "i"],
                      "group_wait": "100ms", "group_interval": "1s", "repeat_interval": "24h"},
            "receivers": [{"name": "hook", "webhook_configs": [{"url": hook.url}]}],
        }))  # fmt: skip
        overrides = {
            "aggregation__idle_timeout": "30s",  # production's, as the chaos suite
            "alerting__rules": f'["{rules}"]', "alerting__watchdog": "false",
            "alerting__resend_interval": "24h", "notifier__config": str(notifier),
            "notifier__api_port": str(free_port()), **self.cfg.overrides,
        }  # fmt: skip
        d = LocalDeployment(self.bootstrap, base / "pipeline", None, None, **overrides)
        d.start_store(timeout=240)
        for role in ("worker", "alerting", "notifier"):
            d.start(role, role)
        return d

    def measure_peak(self) -> tuple[float, list[str]]:
        """The ramp (module docstring): the last rate that held, and a line per step."""
        c = self.cfg
        hook = Webhook().start()
        d = self.deployment("ramp", hook)
        lines: list[str] = []
        peak = 0.0
        try:
            rate, down = c.ramp_start, False
            # what the worker reads: the anomaly agent's input too
            sources: tuple[str, ...] = (topics.SAMPLES,)
            sources += (topics.AGGREGATES,) if d.settings.anomaly.enabled else ()
            while c.ramp_min <= rate <= c.ramp_max:
                iv = interval_for(rate, c.n_series)
                offered = c.n_series * 1000 / iv
                feeder = Feeder(d, c.n_series, iv, c.seed)
                feeder.run(c.ramp_step_s, threading.Event())
                reached = feeder.samples / max(feeder.elapsed_s, 1e-9)
                t = time.monotonic()
                drained = False
                while time.monotonic() - t < c.ramp_drain_s and not drained:
                    with contextlib.suppress(Exception):
                        drained = d.drained(worker=sources)
                    if not drained:
                        time.sleep(1.0)  # polling interval
                took = time.monotonic() - t
                held = drained and reached >= 0.95 * offered
                drain = f"in {took:.0f} s" if drained else "NO"
                verdict = "held" if held else "did not hold"
                lines.append(f"ramp {offered:>9,.0f}/s: producer {reached:>9,.0f}/s, "
                             f"drained {drain} -> {verdict}")  # fmt: skip
                self.say(lines[-1])
                if held:
                    peak = offered
                    if down:
                        break
                    rate *= c.ramp_factor
                elif peak > 0:
                    break
                else:  # the first step did not hold: down until one does
                    down = True
                    rate /= c.ramp_factor
        finally:
            self._stop(d, hook)
        return peak, lines

    def _stop(self, d: LocalDeployment, hook: Webhook) -> None:
        d.stop_all()
        hook.stop()
        if self.delete_topics:
            with contextlib.suppress(Exception):
                d.delete_topics()

    def run(self) -> SoakResult:
        """Peak (given or measured), then the soak at the rate; always cleans up."""
        c = self.cfg
        ramp: list[str] = []
        if c.rate is not None:
            peak, how = c.peak or 2 * c.rate, "given rate; peak taken as twice it"
        elif c.peak is not None:
            peak, how = c.peak, "given"
        else:
            peak, ramp = self.measure_peak()
            how = (f"measured: ramp x{c.ramp_factor} from {c.ramp_start:,.0f}/s, "
                   f"{c.ramp_step_s:.0f} s steps, held = drained within "
                   f"{c.ramp_drain_s:.0f} s")  # fmt: skip
            if peak <= 0:
                raise RuntimeError("no step of the ramp held:\n" + "\n".join(ramp))
        rate = c.rate or peak / 2
        iv = interval_for(rate, c.n_series)
        hook = Webhook().start()
        d = self.deployment("soak", hook)
        exits: dict[str, int] = defaultdict(int)
        loads = [("start", _loads())]
        stop = threading.Event()
        sampler = Sampler(d, c.sample_every_s, dict(self.extra)).start()
        feeder = Feeder(d, c.n_series, iv, c.seed, c.hot_s, c.cold_s)
        total = c.warmup_s + c.duration_s
        self.say(f"soak: {c.n_series * 1000 / iv:,.0f} samples/s for {total:.0f} s")
        produced = threading.Thread(target=feeder.run, args=(total, stop), daemon=True)
        try:
            produced.start()
            t0 = time.monotonic()
            middle = False
            while produced.is_alive():
                produced.join(1.0)
                for role in PIPELINE:  # a soak has no faults: an exit is a finding
                    p = d.procs[role]
                    if p.poll() is not None:
                        exits[role] += 1
                        self.say(f"{role} exited with {p.returncode}; restarted")
                        d.start(role, role)
                if not middle and time.monotonic() - t0 >= total / 2:
                    loads.append(("middle", _loads()))
                    middle = True
            end_s = time.monotonic() - sampler.t0
            loads.append(("end", _loads()))
            self.say("producing stopped; waiting for the store and the alerts")
            windows = d.settings.aggregation.windows_ms
            # the generator's series only: not soak_hot, not the anomaly agent's scores
            names = ", ".join(f"'{n}'" for n in sorted(feeder.names))
            check: list[tuple[int, int]] = [(feeder.samples, 0)]
            sql = (
                "SELECT window_ms, toUnixTimestamp64Milli(window_start), count, count() "
                f"FROM aggregates FINAL WHERE name IN ({names}) "
                f"AND window_start >= fromUnixTimestamp64Milli({feeder.first_ms - max(windows)})"
                " GROUP BY window_ms, window_start, count"
            )

            def converged() -> bool:
                try:
                    rows = d.query(sql)
                except Exception:
                    return False
                check[0] = count_check(rows, windows, c.n_series, feeder.first_ms,
                                       feeder.ticks, iv)  # fmt: skip
                return check[0] == (0, 0) and alerts_differing(feeder.hot, hook.bodies) == 0

            t_settle = time.monotonic()
            ok = False
            while time.monotonic() - t_settle < c.settle_s and not (ok := converged()):
                time.sleep(5.0)  # polling interval: the check is a FINAL query
            took = time.monotonic() - t_settle
        finally:
            stop.set()
            sampler.close()
            self._stop(d, hook)
        lost, duplicated = check[0]
        return SoakResult(
            cfg=c, peak=peak, peak_how=how, rate=c.n_series * 1000 / iv, interval_ms=iv,
            samples=feeder.samples, behind_max_s=feeder.behind_max_s, loads=loads,
            rss=dict(sampler.rss), lag=dict(sampler.lag), produce_end_s=end_s, lost=lost,
            duplicated=duplicated, alerts_differing=alerts_differing(feeder.hot, hook.bodies),
            converged=ok, settle_took_s=took, exits=dict(exits), lag_errors=sampler.errors,
            alerts_expected=len(feeder.hot), ramp=ramp,
        )  # fmt: skip
