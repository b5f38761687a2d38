"""The reliability suite (`monitoring chaos`): faults against a real pipeline, checked
against an exact oracle.

A run starts its own single-node broker (``LocalKafka`` on a free port and data
directory: restarting the shared one would break everyone else's work), a
``LocalDeployment`` on it (store, worker, alert evaluator, notifier with a webhook
receiver served here), and produces a seeded dataset paced over ``produce_s`` seconds
with 1 % poison records (garbage) on the samples topic. Meanwhile a seeded plan
(``plan``) kills each process type with SIGKILL once per round at a random moment and
restarts it after a short random pause, stops and restarts the broker, and keeps the
store down for ``store_down_s``. A supervisor restarts any process that exits by
itself (workers stop rather than ack when the broker is gone), as systemd or
Kubernetes would.

Then it waits (with a deadline) until the worker and the store have committed
everything and the alerts have resolved, and compares:

* ``lost`` / ``duplicated``: per window of the dataset (series, size, start), stored
  ``aggregates FINAL`` against the oracle: samples missing (a count below the oracle's,
  a window missing, or equal counts with other values) and samples counted twice (a
  count above, a window that should not exist, two rows for one key);
* ``alerts_differing``: the notifications the webhook got against the faultless
  expectation (each hot series fires once and resolves once, one alert per group):
  missing, extra or repeated notifications;
* ``rss_growth_pct``: resident memory of the pipeline's processes at the end against
  a measurement 10 % into producing (restarted processes start small again: it is a
  soak figure, meaningful for long runs without kills).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import yaml
from confluent_kafka import Producer

from monitoring.dev.deploy import LocalDeployment, free_port
from monitoring.dev.local_kafka import LocalKafka
from monitoring.metrics.samples import series_key
from monitoring.runtime.kafka_client import client_config
from monitoring.runtime.topics import SAMPLES, topic_name

ROLES = ("worker", "store", "alerting", "notifier")
VALUE, HOT = "chaos_value", "chaos_hot"
RULES = f"""
groups:
  - name: chaos
    rules:
      - alert: ChaosHot
        expr: {HOT} > 50
"""
MAX_BODIES = 10_000
UNHEALTHY_S = 30.0  # a store unhealthy this long is killed and restarted
STARTING_S = 10.0  # a process younger than this may not handle SIGUSR1 yet


@dataclass(frozen=True, order=True)
class Event:
    """One fault: at ``at_s`` after producing starts, ``action`` on ``role``, which stays
    down ``down_s`` seconds."""

    at_s: float
    action: str  # kill | store-outage | broker-restart
    role: str
    down_s: float


def plan(
    seed: int,
    rounds: int,
    round_s: float,
    store_down_s: float,
    broker_restart: bool = True,
    roles: tuple[str, ...] = ROLES,
) -> list[Event]:
    """The faults of a run, the same for the same arguments.

    >>> [(e.action, e.role) for e in plan(1, 1, 10, 5, roles=("worker",))]
    [('kill', 'worker'), ('store-outage', 'store'), ('broker-restart', 'broker')]
    """
    rng = random.Random(seed)
    events: list[Event] = []
    if rounds <= 0:  # a soak: no faults
        return events
    for r in range(rounds):
        for role in roles:
            at = (r + rng.uniform(0.1, 0.9)) * round_s
            events.append(Event(round(at, 2), "kill", role, round(rng.uniform(0.5, 3.0), 2)))
    total = rounds * round_s
    # after the kills of the first round has begun, before the end: on a stream
    events.append(Event(round(rng.uniform(0.3, 0.5) * total, 2), "store-outage", "store",
                        store_down_s))  # fmt: skip
    if broker_restart:
        down = round(rng.uniform(2.0, 5.0), 2)
        events.append(Event(round(rng.uniform(0.55, 0.75) * total, 2), "broker-restart",
                            "broker", down))  # fmt: skip
    return sorted(events)


@dataclass(frozen=True)
class Dataset:
    """Points (name, labels, timestamp_ms, value) in production order, tick by tick, and
    the hot series (index -> first and last hot tick)."""

    points: list[tuple[str, dict[str, str], int, float]]
    hot: dict[str, tuple[int, int]]
    ticks: int


def dataset(seed: int, n_series: int, n_hot: int, ticks: int, start_ms: int) -> Dataset:
    """Gauges with values in 1/8 steps (sums exact in any order), on time; ``n_hot``
    series of ``chaos_hot`` at 100 for at least 25 ticks, else 0.

    >>> d = dataset(1, 2, 1, 60, 0)
    >>> len(d.points), sorted(d.hot)
    (180, ['0'])
    """
    rng = random.Random(seed)
    level = [rng.randint(0, 800) / 8 for _ in range(n_series)]
    # hot over at least two whole 10 s windows, then cold for 15 s: it fires and resolves
    stretch = max(25, ticks // 6)
    if ticks < stretch + 30:
        raise ValueError(f"at least {stretch + 30} ticks")
    hot = {}
    for k in range(n_hot):
        first = rng.randint(ticks // 4, max(ticks // 4, ticks - stretch - 15))
        hot[str(k)] = (first, first + stretch - 1)
    points = []
    for t in range(ticks):
        ts = start_ms + t * 1000
        for i in range(n_series):
            level[i] = max(0.0, level[i] + rng.randint(-16, 16) / 8)
            points.append((VALUE, {"i": str(i)}, ts, level[i]))
        for h, (a, b) in hot.items():
            points.append((HOT, {"i": h}, ts, 100.0 if a <= t <= b else 0.0))
    return Dataset(points, hot, ticks)


Window = tuple[str, int, int]  # series key, window_ms, window_start


def oracle(points: list[tuple[str, dict[str, str], int, float]], windows_ms: list[int]
           ) -> dict[Window, tuple[int, float, float, float, float]]:  # fmt: skip
    """(count, sum, min, max, last) per window of the points."""
    acc: dict[Window, list[tuple[int, float]]] = defaultdict(list)
    for name, labels, ts, v in points:
        key = series_key(name, labels)
        for w in windows_ms:
            acc[(key, w, ts - ts % w)].append((ts, v))
    out = {}
    for k, pts in acc.items():
        values = [v for _, v in pts]
        last_ts = max(t for t, _ in pts)
        last = [v for t, v in pts if t == last_ts][-1]
        out[k] = (len(values), sum(values), min(values), max(values), last)
    return out


def compare(
    expected: dict[Window, tuple[int, float, float, float, float]], rows: list[list[Any]]
) -> tuple[int, int]:
    """(lost, duplicated) samples of stored rows (series, window_ms, window_start,
    count, sum, min, max, last) against the oracle (module docstring).

    >>> e = {("a", 10, 0): (2, 3.0, 1.0, 2.0, 2.0), ("b", 10, 0): (1, 1.0, 1.0, 1.0, 1.0)}
    >>> compare(e, [["a", 10, 0, 3, 4.0, 1.0, 2.0, 2.0]])
    (1, 1)
    """
    lost = duplicated = 0
    seen: Counter[Window] = Counter()
    for series, w, start, count, s, lo, hi, last in rows:
        key = (series, int(w), int(start))
        seen[key] += 1
        if seen[key] > 1:
            duplicated += int(count)
            continue
        want = expected.get(key)
        if want is None:
            duplicated += int(count)
        elif int(count) > want[0]:
            duplicated += int(count) - want[0]
        elif int(count) < want[0]:
            lost += want[0] - int(count)
        elif (s, lo, hi, last) != want[1:]:
            lost += 1  # the same number of samples, other values: one lost, one extra
    lost += sum(want[0] for key, want in expected.items() if key not in seen)
    return lost, duplicated


def alerts_differing(hot: dict[str, tuple[int, int]], bodies: list[dict[str, Any]]) -> int:
    """Notifications that differ from a faultless run: each hot series ``i`` fires once
    and resolves once; anything missing, extra or repeated counts one.

    >>> fire = {"alerts": [{"status": "firing", "labels": {"alertname": "ChaosHot", "i": "0"}}]}
    >>> alerts_differing({"0": (1, 2)}, [fire, fire])
    2
    """
    got: Counter[tuple[str, str]] = Counter()
    for body in bodies:
        for a in body.get("alerts", []):
            labels = a.get("labels", {})
            if labels.get("alertname") == "ChaosHot":
                got[(str(labels.get("i")), str(a.get("status")))] += 1
    want = {(i, s) for i in hot for s in ("firing", "resolved")}
    differing = sum(1 for k in want if got[k] == 0)
    differing += sum(n - 1 if k in want else n for k, n in got.items() if n > (k in want))
    return differing


def free_port_pair() -> int:
    """A port p such that p (the broker) and p + 1 (its controller) are free on loopback."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 40000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free consecutive ports on loopback")


class Webhook:
    """A webhook receiver on loopback that keeps every JSON body (at most MAX_BODIES)."""

    def __init__(self) -> None:
        bodies: list[dict[str, Any]] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(min(n, 1 << 20))
                with contextlib.suppress(ValueError):
                    if len(bodies) < MAX_BODIES:
                        bodies.append(json.loads(data))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Webhook:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class ChaosConfig:
    """What a run does (defaults: the full run; the suite's test runs a short one)."""

    seed: int = 1
    rounds: int = 3
    produce_s: float = 120.0
    n_series: int = 40
    n_hot: int = 4
    store_down_s: float = 60.0
    broker_restart: bool = True
    poison_fraction: float = 0.01
    settle_s: float = 300.0
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class ChaosResult:
    """What a run measured."""

    rounds: int
    lost: int
    duplicated: int
    alerts_differing: int
    rss_growth_pct: float
    windows: int
    samples: int
    poison: int
    events: list[tuple[Event, str]]
    restarts: Counter[str]
    converged: bool
    unhealthy_kills: int = 0
    waiting_for: str = ""  # what convergence last waited for, if it did not come
    stacks: str = ""  # if it did not come: each process's threads' stacks (its log's end)

    def last_line(self) -> str:
        """The suite's last line."""
        return (
            f"rounds={self.rounds} lost={self.lost} duplicated={self.duplicated} "
            f"alerts_differing={self.alerts_differing} rss_growth_pct={self.rss_growth_pct:.1f}"
        )

    def table(self) -> str:
        """The faults and what became of them, then the figures."""
        lines = [f"{'at_s':>7}  {'fault':<15} {'target':<9} {'down_s':>6}  outcome"]
        for e, outcome in self.events:
            lines.append(f"{e.at_s:>7.1f}  {e.action:<15} {e.role:<9} {e.down_s:>6.1f}  {outcome}")
        lines.append("")
        restarts = ", ".join(f"{r} {n}" for r, n in sorted(self.restarts.items())) or "none"
        lines.append(f"unplanned restarts (exited by themselves): {restarts}")
        lines.append(f"stores killed for failing /healthz over {UNHEALTHY_S:.0f} s: "
                     f"{self.unhealthy_kills}")  # fmt: skip
        lines.append(
            f"windows={self.windows} samples={self.samples} poison={self.poison} "
            f"converged={'yes' if self.converged else 'NO (deadline)'}"
        )
        if not self.converged:
            lines.append(f"still waiting for: {self.waiting_for}")
        return "\n".join(lines)


class ChaosRun:
    """One run in ``directory`` (kept for its logs; the broker's data is deleted)."""

    def __init__(
        self, config: ChaosConfig, directory: Path, say: Callable[[str], None] = print
    ) -> None:
        self.cfg = config
        self.dir = directory
        self.say = say
        self.lock = threading.Lock()
        self.down: set[str] = set()  # roles a fault holds down (the supervisor waits)
        self.restarts: Counter[str] = Counter()
        self.unhealthy_kills = 0
        self.stop = threading.Event()

    # -- processes -----------------------------------------------------------------
    def _start(self, d: LocalDeployment, role: str) -> None:
        d.start(role, role)

    def _supervise(self, d: LocalDeployment) -> None:
        """Restart what exited by itself; and, as a liveness probe would, a store that
        is up but has answered /healthz with an error for UNHEALTHY_S (its inserts
        failing for good: chDB keeps a process whose engine hit a fatal error)."""
        sick_since: float | None = None
        while not self.stop.wait(1.0):
            store = d.procs.get("store")
            sick = store is not None and store.poll() is None and not d.healthy()
            sick_since = (sick_since or time.monotonic()) if sick else None
            with self.lock:
                if sick_since is not None and time.monotonic() - sick_since > UNHEALTHY_S:
                    if "store" not in self.down and store is not None:
                        d.kill("store", signal.SIGKILL)
                        self.unhealthy_kills += 1
                    sick_since = None
                for role in ROLES:
                    p = d.procs.get(role)
                    if role not in self.down and p is not None and p.poll() is not None:
                        self.restarts[role] += 1
                        self._start(d, role)

    def _stacks(self, d: LocalDeployment, timeout_s: float = 10.0) -> str:
        """Every live process's thread stacks (``kill -USR1``: faulthandler writes them to
        its log), each log from the dump on: what a run that did not converge waits in."""
        marks: dict[str, tuple[Path, int]] = {}
        for role, p in list(d.procs.items()):
            log = d.dir / f"{role}.log"
            try:  # SIGUSR1 ends a process that has not registered the dump yet
                young = time.time() - psutil.Process(p.pid).create_time() < STARTING_S
            except psutil.Error:
                continue
            if p.poll() is None and log.exists() and not young:
                marks[role] = (log, log.stat().st_size)
                with contextlib.suppress(OSError):
                    os.kill(p.pid, signal.SIGUSR1)

        def dumped() -> bool:  # faulthandler writes the whole dump at once
            return all(
                b"most recent call first" in log.read_bytes()[at:] for log, at in marks.values()
            )

        deadline = time.monotonic() + timeout_s
        while not dumped() and time.monotonic() < deadline:
            time.sleep(0.1)  # polling interval
        return "\n".join(
            f"--- {role} (from the dump on)\n"
            + log.read_bytes()[at:].decode(errors="replace")[:20_000]
            for role, (log, at) in sorted(marks.items())
        )

    def _rss(self, d: LocalDeployment) -> int:
        total = 0
        for p in list(d.procs.values()):
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(p.pid).memory_info().rss
        return total

    def _fault(self, d: LocalDeployment, broker: LocalKafka, e: Event) -> str:
        if e.action == "broker-restart":
            started = time.monotonic()
            broker.stop(timeout=20)  # SIGTERM, then SIGKILL
            time.sleep(e.down_s)  # the outage itself: how long the broker stays down
            broker.start(timeout=180)
            return f"broker back after {time.monotonic() - started:.1f} s"
        with self.lock:
            self.down.add(e.role)
            proc = d.procs[e.role]
            if proc.poll() is None:
                d.kill(e.role, signal.SIGKILL)
        time.sleep(e.down_s)  # the outage itself
        with self.lock:
            self.down.discard(e.role)
            if d.procs[e.role].poll() is not None:
                self._start(d, e.role)
        return f"SIGKILL pid {proc.pid}, restarted"

    def _produce(self, d: LocalDeployment, data: Dataset, done: threading.Event) -> None:
        from monitoring.metrics.collector import MetricsCollector

        rng = random.Random(self.cfg.seed + 1)
        config = {"reconnect.backoff.max.ms": 500, "message.timeout.ms": 600_000}
        poison = Producer(client_config(d.settings.kafka, **config))
        samples = topic_name(d.settings.kafka, SAMPLES)
        per_tick = len(data.points) // data.ticks
        pace = self.cfg.produce_s / data.ticks
        t0 = time.monotonic()
        try:
            with MetricsCollector(d.settings, batch=True, linger=0.05, producer_config=config,
                                  block_timeout=120) as mc:  # fmt: skip
                for t in range(data.ticks):
                    for name, labels, ts, v in data.points[t * per_tick : (t + 1) * per_tick]:
                        mc.record(name, v, labels, timestamp_ms=ts)
                        if rng.random() < self.cfg.poison_fraction:
                            poison.produce(samples, b"\x00" + rng.randbytes(31), key=b"poison")
                            self.poisoned += 1
                    poison.poll(0)
                    wait = t0 + (t + 1) * pace - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)  # pacing the load, not waiting for a result
                if mc.flush(300) != 0:
                    raise RuntimeError("the producer did not deliver every sample")
            if poison.flush(300) != 0:
                raise RuntimeError("the poison producer did not deliver")
        finally:
            done.set()

    # -- the run -------------------------------------------------------------------
    def run(self) -> ChaosResult:
        """Start everything, inject the faults, converge, compare; always cleans up."""
        return self._run(free_port_pair())

    def _run(self, port: int) -> ChaosResult:
        cfg = self.cfg
        self.poisoned = 0
        broker = LocalKafka(port=port, data_dir=self.dir / "kafka")
        hook = Webhook().start()
        d: LocalDeployment | None = None
        supervisor: threading.Thread | None = None
        try:
            self.say(f"starting a broker of our own on 127.0.0.1:{port}")
            broker.start(timeout=180)
            rules = self.dir / "chaos.rules.yml"
            rules.write_text(RULES)
            notifier = self.dir / "notifier.yml"
            notifier.write_text(yaml.safe_dump({
                "route": {"receiver": "hook", "group_by": ["alertname", "i"],
                          "group_wait": "100ms", "group_interval": "1s",
                          "repeat_interval": "24h"},
                "receivers": [{"name": "hook", "webhook_configs": [{"url": hook.url}]}],
            }))  # fmt: skip
            overrides = {
                # the production idle timeout, not the test deployments' 6 s: a fault's
                # stall (a broker restart holds the producer ~10 s) must not idle-close
                # windows mid-stream, whose later samples would then be late by design
                # (docs/aggregation.md, "Idle close and what comes after")
                "aggregation__idle_timeout": "30s",
                "alerting__rules": f'["{rules}"]', "alerting__watchdog": "false",
                "alerting__resend_interval": "24h", "alerting__checkpoint_interval": "200ms",
                "notifier__config": str(notifier), "notifier__api_port": str(free_port()),
                "notifier__checkpoint_interval": "200ms", **cfg.overrides,
            }  # fmt: skip
            d = LocalDeployment(broker.bootstrap, self.dir / "pipeline", None, None, **overrides)
            now = int(time.time() * 1000)
            ticks = max(60, int(cfg.produce_s))  # 1 s of event time each, paced over produce_s
            start_ms = now - now % 60_000 - (ticks // 60 + 3) * 60_000
            data = dataset(cfg.seed, cfg.n_series, cfg.n_hot, ticks, start_ms)
            expected = oracle(data.points, d.settings.aggregation.windows_ms)
            self.say(f"{len(data.points)} samples, {len(expected)} windows, "
                     f"{len(data.hot)} alerts expected")  # fmt: skip
            with self.lock:  # first: the others compete for the CPU at start
                self._start(d, "store")
            supervisor = threading.Thread(target=self._supervise, args=(d,), daemon=True)
            supervisor.start()  # a process that dies at start is started again, counted
            self._wait(d, d.healthy, 240, "the store healthy")
            with self.lock:
                for role in ROLES[:1] + ROLES[2:]:
                    self._start(d, role)
            round_s = cfg.produce_s / max(1, cfg.rounds)
            events = plan(cfg.seed, cfg.rounds, round_s, cfg.store_down_s, cfg.broker_restart)
            done = threading.Event()
            producer = threading.Thread(target=self._produce, args=(d, data, done), daemon=True)
            t0 = time.monotonic()
            producer.start()
            # resident memory once warm (imports done, caches filling): 10 % into the run
            rss0: list[int] = []
            warm = threading.Timer(max(5.0, 0.1 * cfg.produce_s), lambda: rss0.append(self._rss(d)))
            warm.daemon = True
            warm.start()
            outcomes = []
            for e in events:
                wait = t0 + e.at_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # the fault's moment in the plan
                self.say(f"t={time.monotonic() - t0:.1f}s {e.action} {e.role}")
                outcomes.append((e, self._fault(d, broker, e)))
            producer.join(cfg.produce_s + 600)
            n_agg = len(expected)
            names = f"name IN ('{VALUE}', '{HOT}')"

            waiting = [""]

            def converged() -> bool:
                try:
                    stored = d.query(f"SELECT count() FROM aggregates FINAL WHERE {names}")
                    if stored[0][0] < n_agg:
                        waiting[0] = f"aggregates stored: {stored[0][0]} of {n_agg}"
                        return False
                    if not d.drained():
                        waiting[0] = "the worker and the store to commit their input"
                        return False
                except Exception as e:
                    waiting[0] = f"the store to answer ({e!r:.200})"
                    return False
                differing = alerts_differing(data.hot, hook.bodies)
                waiting[0] = f"notifications: {differing} differing"
                return differing == 0

            ok = self._wait(d, converged, cfg.settle_s, "convergence", raise_=False)
            stacks = "" if ok else self._stacks(d)
            sql = (
                "SELECT series, window_ms, toUnixTimestamp64Milli(window_start), count, sum, "
                f"min, max, last FROM aggregates FINAL WHERE {names}"
            )
            got: list[list[list[Any]]] = []

            def read() -> bool:  # the store may be restarting (the supervisor's doing)
                with contextlib.suppress(Exception):
                    got.append(d.query(sql))
                return bool(got)

            self._wait(d, read, 120, "the store to answer the final query")
            rows = got[0]
            lost, duplicated = compare(expected, rows)
            rss1 = self._rss(d)
            return ChaosResult(
                rounds=cfg.rounds, lost=lost, duplicated=duplicated,
                alerts_differing=alerts_differing(data.hot, hook.bodies),
                rss_growth_pct=100.0 * (rss1 - rss0[0]) / rss0[0] if rss0 and rss0[0] else 0.0,
                windows=n_agg, samples=len(data.points), poison=self.poisoned,
                events=outcomes, restarts=self.restarts, converged=ok,
                unhealthy_kills=self.unhealthy_kills, waiting_for=waiting[0], stacks=stacks,
            )  # fmt: skip
        finally:
            self.stop.set()
            if supervisor is not None:
                supervisor.join(10)
            if d is not None:
                d.stop_all()
            hook.stop()
            broker.destroy()

    def _wait(
        self, d: LocalDeployment, cond: Callable[[], bool], timeout: float, what: str,
        raise_: bool = True,
    ) -> bool:  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.5)  # polling interval
        if raise_:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{d.logs()}")
        return False
