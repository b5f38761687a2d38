"""Staleness on target loss, end to end: Debian's node_exporter scraped into the real
broker, then stopped. The failed scrape writes up=0 and a staleness marker for every
series of the last good one; those records, stored in a real embedded ClickHouse, make
a PromQL instant query stop returning the series at once (not after the 5-minute
lookback), while range functions still count the samples before the marker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures.ingest import consume_raw, node_exporter
from fixtures.store import StoreMessage
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.ingest.outlet import Outlet
from monitoring.ingest.scrape import Scraper
from monitoring.ingest.scrape_config import ScrapeFile
from monitoring.metrics.samples import Sample, is_stale, samples_from_record
from monitoring.promql import Engine
from monitoring.query.source import StoreSource
from monitoring.runtime.topics import SAMPLES, topic_name
from monitoring.sdk.producer import MetricsCollector
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.integration
REPORT = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
          "scrape_samples_post_metric_relabeling"}  # fmt: skip


class _NoCommit:
    def commit(self, asynchronous: bool = True) -> None:
        pass


def _count(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value(
        "monitoring_scrape_scrapes_total", {"job": "node", "result": result}
    )
    return value or 0.0


def test_a_target_that_goes_away_is_stale_at_once_in_promql(
    settings_factory: Callable[..., Settings],
    chdb_settings: Settings,
    chdb_client: Any,
    tmp_path: Path,
) -> None:
    settings = settings_factory()
    topic = topic_name(settings.kafka, SAMPLES)
    registry = CollectorRegistry()
    mc = MetricsCollector(settings, source="stale-test", registry=registry, batch_size=1000)
    with node_exporter(tmp_path) as (address, proc):
        scrape_file = ScrapeFile.parse(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                "scrape_configs": [
                    {"job_name": "node", "static_configs": [{"targets": [address]}]}
                ],
            }
        )
        scraper = Scraper(scrape_file, Outlet(mc, registry, "scrape"), settings.scrape, registry)

        async def scrape_until_the_target_is_gone() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(scraper.run(stop))

            async def until(cond: Callable[[], bool], what: str) -> None:
                deadline = time.monotonic() + 60
                while not cond():
                    assert not task.done(), task
                    assert time.monotonic() < deadline, what
                    await asyncio.sleep(0.05)

            await until(lambda: _count(registry, "ok") >= 2, "two good scrapes")
            proc.terminate()  # the target goes away
            await asyncio.to_thread(proc.wait, 30)
            await until(lambda: _count(registry, "http") >= 1, "a failed scrape")
            stop.set()
            await asyncio.wait_for(task, 30)

        asyncio.run(scrape_until_the_target_is_gone())
    assert mc.close(30) == 0
    sent = registry.get_sample_value(
        "monitoring_ingest_samples_total", {"source": "scrape", "outcome": "sent"}
    )
    marks = registry.get_sample_value("monitoring_scrape_stale_markers_total", {"job": "node"})
    assert sent and marks and marks > 300

    codec = AvroCodec.from_directory()
    values = consume_raw(
        settings.kafka.bootstrap_servers,
        topic,
        lambda vs: sum(len(_decode(codec, v)) for v in vs) >= sent,
    )
    samples = [s for v in values for s in _decode(codec, v)]
    assert len(samples) == sent
    stale = [s for s in samples if is_stale(s.value)]
    (failed_at,) = {s.timestamp_ms for s in stale}  # one failed scrape marks them all
    good = [s for s in samples if s.timestamp_ms < failed_at and not is_stale(s.value)]
    last_good = max(s.timestamp_ms for s in good)
    on_last_page = {s.series for s in good if s.timestamp_ms == last_good}
    # a marker for every series of the last good scrape, report series apart
    assert {s.series for s in stale} == {k for k in on_last_page if k.split("{")[0] not in REPORT}
    assert len(stale) == marks
    ups = {s.timestamp_ms: s.value for s in samples if s.name == "up"}
    assert ups[failed_at] == 0.0 and ups[last_good] == 1.0

    # stored in ClickHouse as the store stores the samples topic, read by PromQL
    store = Store(
        chdb_settings, Writer(chdb_client, StoreMetrics(CollectorRegistry())), _NoCommit(), codec
    )
    store_topic = topic_name(chdb_settings.kafka, SAMPLES)
    for v in values:
        store.handle(StoreMessage(v, topic=store_topic))
    store.flush_and_commit()
    engine = Engine()

    def instant(query: str, t_ms: int) -> list[tuple[dict[str, str], float]]:
        result = engine.instant(StoreSource(chdb_client), query, t_ms)
        return [(labels, float(v[-1])) for labels, _, v in result.series]

    mem = 'node_memory_MemTotal_bytes{job="node"}'
    assert len(instant(mem, last_good)) == 1
    assert instant(mem, failed_at) == []  # at once: not 5 minutes later
    assert instant(mem, failed_at + 60_000) == []
    names = {labels["__name__"] for labels, _ in instant('{job="node"}', failed_at)}
    assert names == REPORT  # only what the failed scrape wrote; up is 0
    assert instant('up{job="node"}', failed_at)[0][1] == 0.0
    # a range still sees the samples before the marker, never the marker itself
    counted = instant(f"count_over_time({mem}[10m])", failed_at)
    assert counted[0][1] == sum(1 for s in good if s.name == "node_memory_MemTotal_bytes")


def _decode(codec: AvroCodec, value: bytes) -> list[Sample]:
    decoded = codec.decode(value)
    result = samples_from_record(decoded.name, decoded.record, now_ms=time.time_ns() // 10**6)
    assert not result.rejected, result.rejected
    return result.samples
