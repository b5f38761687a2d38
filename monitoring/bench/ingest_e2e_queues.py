"""Where a scraped sample waits: the e2e bench's scrape path with its queues sampled.

``python -m monitoring.bench.ingest_e2e_queues [TARGETS]`` (the broker running; default
20 targets of 1,000 series every 1 s, 1 s windows, a worker and a store of a
``LocalDeployment``) runs ``ingest_e2e``'s scrape phase alone and prints, every second:
the SDK buffer (buffered plus unacknowledged samples), samples the broker acknowledged,
the scraper's push-thread queue (target pages waiting), missed intervals, this process's
CPU (cores), and the consumer lag in records of the worker's group (samples topic) and the
store's group (samples and aggregates), then the probe's receipt -> stored latency.
Numbers only (docs/ingest.md, "That slowdown, investigated").
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from monitoring.bench import ingest_e2e as e2e
from monitoring.config import Settings
from monitoring.dev.deploy import LocalDeployment
from monitoring.ingest import scrape


def _lags(d: LocalDeployment, consumers: dict[str, Any]) -> tuple[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    from monitoring.runtime import topics
    from monitoring.runtime.kafka_client import client_config
    from monitoring.sinks.clickhouse.store import store_group

    k = d.settings.kafka
    out = []
    for group, roles in (
        (f"{d.prefix}worker", [topics.SAMPLES]),
        (store_group(d.settings), [topics.SAMPLES, topics.AGGREGATES]),
    ):
        c = consumers.get(group)
        if c is None:
            c = consumers[group] = Consumer(client_config(k, **{"group.id": group}))
        total = 0
        for role in roles:
            t = topics.topic_name(k, role)
            tps = [TopicPartition(t, p) for p in range(k.samples_partitions)]
            for tp in c.committed(tps, timeout=5):
                end = c.get_watermark_offsets(tp, timeout=5, cached=False)[1]
                total += max(0, end - max(tp.offset, 0))
        out.append(total)
    return out[0], out[1]


def main(targets: int = 20) -> None:
    """Run the scrape phase with ``targets`` targets and print the queues every second."""
    scrapers: list[scrape.Scraper] = []
    original = scrape.Scraper.__init__

    def capture(self: scrape.Scraper, *a: Any, **kw: Any) -> None:
        original(self, *a, **kw)
        scrapers.append(self)

    scrape.Scraper.__init__ = capture  # type: ignore[method-assign]
    settings = Settings.load(None)
    directory = Path(tempfile.mkdtemp(prefix="bench-e2e-queues-"))
    d = LocalDeployment(
        settings.kafka.bootstrap_servers,
        directory,
        aggregation__windows='["1000ms"]',
        aggregation__allowed_lateness="1000ms",
        alerting__window="1000ms",
        anomaly__enabled="false",
        storage__flush_interval="1000ms",
    )
    stop = threading.Event()
    consumers: dict[str, Any] = {}

    def monitor() -> None:
        last_d = last_cpu = None
        t0 = time.time()
        while not stop.wait(1.0):
            if not scrapers:
                continue
            s = scrapers[-1]
            core = s.outlet.recorder._core  # type: ignore[attr-defined]
            ru = resource.getrusage(resource.RUSAGE_SELF)
            cpu = ru.ru_utime + ru.ru_stime
            delivered = core.delivered
            rate = delivered - last_d if last_d is not None else 0
            cores = cpu - last_cpu if last_cpu is not None else 0.0
            last_d, last_cpu = delivered, cpu
            try:
                lag = "worker={} store={}".format(*_lags(d, consumers))
            except Exception as e:  # a bench line, not a failure
                lag = f"lag unavailable ({type(e).__name__})"
            print(
                f"t={time.time() - t0:5.1f}s buffer={core.occupancy():6d} "
                f"acknowledged/s={rate:6d} push_queue={s.executor._work_queue.qsize():3d} "
                f"missed={s.missed_total:4d} cores={cores:.2f} lag {lag}",
                flush=True,
            )

    threading.Thread(target=monitor, daemon=True).start()
    cfg = e2e._Config(20.0, 1000, 1000, 1000, targets, 0.25, 1.0, 1.0, 0.1, 5.0)
    try:
        d.start_store()
        d.start("worker", "worker")
        e2e._warm_up(d)
        r = e2e._scrape(d, cfg, lambda m: print(m, flush=True))
        print(f"probes {r.probes}, not stored {r.missing}; {r.note}")
        if r.e2e_ms:
            p = e2e.percentile
            e, a = r.e2e_ms, r.after_close_ms
            print(
                f"receipt -> stored p50/p99 {p(e, 50):.0f}/{p(e, 99):.0f} ms; "
                f"after close p50/p99 {p(a, 50):.0f}/{p(a, 99):.0f} ms"
            )
    finally:
        stop.set()
        for c in consumers.values():
            c.close()
        d.stop_all()
        e2e._delete_topics(d)
        shutil.rmtree(directory, ignore_errors=True)
        scrape.Scraper.__init__ = original  # type: ignore[method-assign]


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
