"""``monitoring bench pipeline``: the real pipeline under load, measured.

Phases, each on the local broker with a worker and a store as separate processes:

1. produce a backlog of batched samples (MetricBatch, the high-rate contract), then
   time the worker draining it: samples/s of wall time and per CPU-second of the
   worker process (its user+system time from /proc);
2. once the worker is idle again (its anomaly agent has scored phase 1's aggregates),
   the same with one sample per message (MetricSample), produced while the worker is
   paused (SIGSTOP) so that it too is a backlog;
3. live load at half the measured batched peak (one thread replaying pre-generated
   scrapes through the SDK's series handles, about 280 k samples/s alone; the rate
   it reached is printed), with probe samples stamped with the current time: end-to-end latency
   from event time until the row is queryable in ClickHouse (polled through the
   store), and from a window's end until its aggregate is queryable;
4. store rows/s over the whole run, and bytes on disk per raw sample and per
   aggregate after merges (``OPTIMIZE ... FINAL``).

The last line printed is machine-readable (see ``summary_line``).
"""

from __future__ import annotations

import itertools
import os
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from monitoring.dev.deploy import LocalDeployment, free_port
from monitoring.dev.loadgen import generate
from monitoring.metrics.collector import MetricsCollector
from monitoring.sdk.producer import SeriesHandle

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


SAMPLE_ROWS = 'monitoring_store_rows_inserted_total{table="samples"'


def scrape(port: int, name: str) -> float:
    """Sum of a metric's samples on a prometheus endpoint (0 when absent or not up yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Result:
    """Everything the benchmark measured."""

    producer_batch_per_s: float = 0.0
    producer_single_per_s: float = 0.0
    worker_batch_per_s: float = 0.0
    worker_batch_per_cpu_s: float = 0.0
    worker_single_per_s: float = 0.0
    worker_single_per_cpu_s: float = 0.0
    live_rate_per_s: float = 0.0
    e2e_ms: list[float] = field(default_factory=list)
    aggregate_ms: list[float] = field(default_factory=list)
    store_rows_per_s: float = 0.0
    live_sent: int = 0
    # from the end of the live phase until the store holds every sample sent: the
    # footprint is measured on the same rows whatever the store's lag (a store that
    # is behind keeps the rest in Kafka, not in memory)
    store_live_catchup_s: float = float("nan")
    bytes_per_sample: float = float("nan")  # every stored row, the live phase's too
    # the two scrape phases alone (one value per series and second, the same rows in
    # every run): what to compare across versions
    bytes_per_scraped_sample: float = float("nan")
    bytes_per_aggregate: float = float("nan")

    def summary_line(self) -> str:
        return (
            f"samples_per_s={self.worker_batch_per_s:.0f} "
            f"e2e_p50_ms={percentile(self.e2e_ms, 0.5):.0f} "
            f"e2e_p99_ms={percentile(self.e2e_ms, 0.99):.0f} "
            f"store_rows_per_s={self.store_rows_per_s:.0f} "
            f"store_live_catchup_s={self.store_live_catchup_s:.1f} "
            f"bytes_per_sample={self.bytes_per_sample:.3f} "
            f"bytes_per_scraped_sample={self.bytes_per_scraped_sample:.3f} "
            f"bytes_per_aggregate={self.bytes_per_aggregate:.2f}"
        )


def _produce(
    d: LocalDeployment,
    n_series: int,
    start_ms: int,
    ticks: int,
    interval_ms: int,
    batch: bool,
    batch_samples: int = 500,
) -> tuple[int, float]:
    """Send ``ticks`` scrapes of the load generator's series; (samples the broker
    acknowledged, samples/s). Samples that were not acknowledged are reported, and the
    worker is then only waited for up to what arrived."""
    n = 0
    t0 = time.perf_counter()
    size = batch_samples * d.settings.kafka.samples_partitions  # split by partition
    with MetricsCollector(d.settings, batch=batch, batch_size=size, linger=0.05) as mc:
        for tick in generate(n_series, start_ms, interval_ms, seed=1, ticks=ticks):
            for s in tick:
                mc.record(s.name, s.value, s.labels, s.timestamp_ms, s.kind, s.unit)
            n += len(tick)
        mc.flush(120)
        stats = mc.stats()
    if stats["delivered"] != n:
        print(f"producer: {n - stats['delivered']} of {n} samples not acknowledged: {stats}")
    return stats["delivered"], n / (time.perf_counter() - t0)


def _wait_idle(
    d: LocalDeployment, worker: str, progress: Callable[[str], None], timeout: float = 300
) -> None:
    """Wait until the worker uses under 20 % of a core over a second: the agents that
    read the aggregates (anomaly detection) have caught up too, so the next phase does
    not share the worker with the last one's leftovers."""
    pid = d.procs[worker].pid
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        c0 = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - c0 < 0.2:
            break
    progress(f"worker idle after {time.perf_counter() - t0:.1f} s")


def drain(
    d: LocalDeployment,
    worker: str,
    port: int,
    target: float,
    progress: Callable[[str], None],
    metric: str = 'agent_items_total{agent="aggregation"}',
) -> tuple[float, float]:
    """Wait until the worker's counter ``metric`` reaches ``target``; its increase per
    second of wall time and per CPU-second of the worker, from the first count on."""
    pid = d.procs[worker].pid
    d.wait(lambda: scrape(port, metric) > 0, 120, "worker started")
    t0, c0, s0 = time.perf_counter(), cpu_seconds(pid), scrape(port, metric)
    d.wait(lambda: scrape(port, metric) >= target, 900, "worker drained")
    dt, dc = time.perf_counter() - t0, cpu_seconds(pid) - c0
    done = scrape(port, metric) - s0
    progress(f"worker: {metric} +{done:.0f} in {dt:.1f} s wall, {dc:.1f} s CPU")
    return done / dt, done / max(dc, 1e-9)


def run(
    bootstrap: str,
    n_series: int = 1_000,
    batch_ticks: int = 2_000,
    single_ticks: int = 100,
    live_seconds: int = 30,
    progress: Callable[[str], None] = print,
    anomaly: bool = True,
    batch_samples: int = 500,
) -> Result:
    """Run every phase and return the measurements; batched messages carry about
    ``batch_samples`` samples each."""
    res = Result()
    directory = Path(tempfile.mkdtemp(prefix="monitoring-bench-"))
    d = LocalDeployment(
        bootstrap,
        directory,
        aggregation__idle_timeout="10s",
        aggregation__checkpoint_interval="5s",
        storage__flush_interval="250ms",
        anomaly__enabled=str(anomaly).lower(),  # off: the aggregation pipeline alone
    )
    now = int(time.time() * 1000)
    interval = 1_000
    start = now - now % interval - (batch_ticks + single_ticks + 30) * interval
    try:
        store_port = d.query_port
        wport = free_port()
        progress(f"phase 1: {n_series} series x {batch_ticks} scrapes, batched")
        n1, res.producer_batch_per_s = _produce(
            d, n_series, start, batch_ticks, interval, True, batch_samples
        )
        progress(f"producer: {n1} samples at {res.producer_batch_per_s:,.0f}/s")
        t_store = time.perf_counter()
        d.start_store()
        d.start("worker", "worker", worker__metrics_port=str(wport))
        res.worker_batch_per_s, res.worker_batch_per_cpu_s = drain(d, "worker", wport, n1, progress)

        _wait_idle(d, "worker", progress)
        progress(f"phase 2: {n_series} series x {single_ticks} scrapes, one sample per message")
        start2 = start + batch_ticks * interval
        # a backlog, as in phase 1: the worker is paused while the producer writes (it
        # would otherwise keep pace with it, and only the tail would be measured);
        # its group session (10 s) outlasts the pause at the producer's rates
        worker_pid = d.procs["worker"].pid
        os.kill(worker_pid, signal.SIGSTOP)
        try:
            n2, res.producer_single_per_s = _produce(
                d, n_series, start2, single_ticks, interval, False
            )
        finally:
            os.kill(worker_pid, signal.SIGCONT)
        progress(f"producer: {n2} samples at {res.producer_single_per_s:,.0f}/s")
        res.worker_single_per_s, res.worker_single_per_cpu_s = drain(
            d, "worker", wport, n1 + n2, progress
        )

        total = n1 + n2
        d.wait(
            lambda: scrape(store_port, SAMPLE_ROWS) >= total,
            900,
            "store caught up",
        )
        rows = scrape(store_port, "monitoring_store_rows_inserted_total")
        res.store_rows_per_s = rows / (time.perf_counter() - t_store)
        progress(f"store: {rows:.0f} rows at {res.store_rows_per_s:,.0f}/s over the run")

        rate = res.worker_batch_per_s / 2  # the live producer reports what it reached
        _wait_idle(d, "worker", progress)
        progress(f"phase 3: live load at {rate:,.0f} samples/s for {live_seconds} s")
        _live(d, n_series, rate, live_seconds, res, progress, batch_samples)
        t_live = time.perf_counter()
        want = total + res.live_sent
        try:
            d.wait(lambda: scrape(store_port, SAMPLE_ROWS) >= want, 600, "store caught up")
            res.store_live_catchup_s = time.perf_counter() - t_live
            progress(f"store: every live sample stored {res.store_live_catchup_s:.1f} s later")
        except TimeoutError:
            progress(f"store: {scrape(store_port, SAMPLE_ROWS):.0f} of {want} rows after 600 s")
    finally:
        d.stop_all()
    _footprint(d, res, start + (batch_ticks + single_ticks) * interval)
    return res


def _live(
    d: LocalDeployment,
    n_series: int,
    rate: float,
    seconds: int,
    res: Result,
    progress: Callable[[str], None],
    batch_samples: int = 500,
) -> None:
    from monitoring.sinks.clickhouse.rows import series_id

    probe = "bench_probe"
    probe_key = 'bench_probe{probe="1"}'
    sid = series_id(probe_key)
    sent: dict[int, float] = {}
    stop = threading.Event()
    n_sent = 0

    def producer() -> None:
        nonlocal n_sent
        per_tick = max(1, int(rate / 10))
        size = batch_samples * d.settings.kafka.samples_partitions
        with MetricsCollector(d.settings, batch=True, batch_size=size, linger=0.02) as mc:
            # twenty scrapes of the load generated up front, then replayed in a cycle
            # with the current time, through per-series handles: the generator and
            # the name-and-labels lookup would cap the rate of this one thread
            handles: dict[tuple[str, str], SeriesHandle] = {}
            replay = []
            for tick in generate(n_series, 0, 1000, seed=2, ticks=20):
                for s in tick:
                    key = (s.name, repr(sorted(s.labels.items())))
                    h = handles.get(key) or handles.setdefault(
                        key, mc.series(s.name, s.labels, s.kind, s.unit)
                    )
                    replay.append((h.record, s.value))
            load = itertools.cycle(replay)
            probe_record = mc.series(probe, {"probe": "1"}).record
            t_next = time.perf_counter()
            while not stop.is_set():
                ts = int(time.time() * 1000)
                for record, value in itertools.islice(load, per_tick):
                    record(value, ts)
                probe_record(1.0, ts)
                sent[ts] = time.time()
                n_sent += per_tick + 1
                t_next += 0.1
                time.sleep(max(0.0, t_next - time.perf_counter()))

    th = threading.Thread(target=producer, daemon=True)
    t0 = time.perf_counter()
    th.start()
    seen: set[int] = set()
    seen_windows: set[int] = set()
    while time.perf_counter() - t0 < seconds:
        now_ms = time.time() * 1000
        for (ts,) in d.query(
            f"SELECT toUnixTimestamp64Milli(ts) FROM samples "
            f"WHERE series_id = {sid} AND ts > now64(3) - 30"
        ):
            if ts not in seen:
                seen.add(ts)
                res.e2e_ms.append(now_ms - ts)
        for (end,) in d.query(
            f"SELECT toUnixTimestamp64Milli(window_end) FROM aggregates "
            f"WHERE series_id = {sid} AND window_ms = 10000"
        ):
            if end not in seen_windows:
                seen_windows.add(end)
                res.aggregate_ms.append(now_ms - end)
        time.sleep(0.05)
    stop.set()
    th.join(10)
    res.live_sent = n_sent
    res.live_rate_per_s = n_sent / (time.perf_counter() - t0)
    progress(f"live: {res.live_rate_per_s:,.0f} samples/s sent, {len(res.e2e_ms)} probes seen")


def _footprint(d: LocalDeployment, res: Result, scrapes_end_ms: int) -> None:
    from monitoring.sinks.clickhouse.connection import connect
    from monitoring.sinks.clickhouse.footprint import samples_before, storage_footprint

    client = connect(d.settings.storage.dsn)
    try:
        fp = storage_footprint(client, optimize=True)
        res.bytes_per_scraped_sample = samples_before(client, scrapes_end_ms) or float("nan")
    finally:
        client.close()
    res.bytes_per_sample = fp["bytes_per_sample"] or float("nan")
    res.bytes_per_aggregate = fp["bytes_per_aggregate"] or float("nan")
