"""Producer SDK against the real broker: every sample once, each series on one partition,
the partition Kafka's murmur2 gives its key, in batch and non-batch mode alike."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from fixtures.agents import wait_for
from fixtures.progress import read_to_end

from monitoring.config import Settings
from monitoring.dev.loadgen import generate
from monitoring.metrics.samples import BATCH, SAMPLE, samples_from_record, series_key
from monitoring.runtime.topics import SAMPLES, topic_name
from monitoring.sdk.producer import MetricsCollector, partition_for
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.integration


def consume(
    bootstrap: str, topic: str, expected_samples: int, timeout: float = 60.0
) -> list[tuple[str, str, int, str, int, float]]:
    """Every sample on the topic once it holds ``expected_samples``: the topic read up to
    its end at that point, so a duplicate produced by then is in. Returns (record name,
    message key, partition, series, timestamp_ms, value) per sample."""
    codec = AvroCodec.from_directory()
    out: list[tuple[str, str, int, str, int, float]] = []

    def enough() -> bool:
        out.clear()
        for msg in read_to_end(bootstrap, topic):
            value, raw_key, partition = msg.value(), msg.key(), msg.partition()
            assert value is not None and raw_key is not None and partition is not None
            decoded = codec.decode(value)
            result = samples_from_record(
                decoded.name, decoded.record, now_ms=time.time_ns() // 10**6
            )
            assert not result.rejected
            key = raw_key.decode()
            for s in result.samples:
                out.append((decoded.name, key, partition, s.series, s.timestamp_ms, s.value))
        return len(out) >= expected_samples

    wait_for(enough, timeout, f"{expected_samples} samples on {topic}")
    return out


def loadgen_samples(n_series: int, ticks: int) -> list[Any]:
    start = time.time_ns() // 10**6 - ticks * 1000
    return [s for tick in generate(n_series, start, 1000, seed=3, ticks=ticks) for s in tick]


def test_batch_and_single_modes_place_each_series_on_its_murmur2_partition(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(samples_partitions=5)
    bootstrap = settings.kafka.bootstrap_servers
    topic = topic_name(settings.kafka, SAMPLES)
    samples = loadgen_samples(150, 12)  # 1800 samples
    n = len(samples)
    # the configured count is a fallback only: the topic's metadata decides
    wrong = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"samples_partitions": 7})}
    )
    for batch in (True, False):
        with MetricsCollector(wrong, source=f"batch={batch}", batch=batch, batch_size=200) as mc:
            assert mc.partitions() == 5
            for s in samples:
                mc.record(s.name, s.value, s.labels, s.timestamp_ms, s.kind, s.unit)
            assert mc.flush(30) == 0
            stats = mc.stats()
            assert (stats["delivered"], stats["failed"], stats["dropped"]) == (n, 0, 0)
            assert mc.registry.get_sample_value(
                "monitoring_producer_samples_total", {"outcome": "delivered"}
            ) == float(n)
            if batch:
                assert stats["messages"] < n / 10  # parallel-array batches, not one per sample

    got = consume(bootstrap, topic, 2 * n)
    expected = Counter((series_key(s.name, s.labels), s.timestamp_ms, s.value) for s in samples)
    placement: dict[str, dict[str, set[int]]] = {BATCH: defaultdict(set), SAMPLE: defaultdict(set)}
    first_keys: dict[str, Counter[tuple[str, int, float]]] = {BATCH: Counter(), SAMPLE: Counter()}
    for record, key, partition, series, ts, value in got:
        placement[record][series].add(partition)
        first_keys[record][(series, ts, value)] += 1
        if record == SAMPLE:
            assert key == series  # keyed by the series key
        else:
            assert partition_for(key, 5) == partition  # batch key: one of its series
    for record in (BATCH, SAMPLE):
        assert first_keys[record] == expected, f"{record}: not every sample exactly once"
        for series, parts in placement[record].items():
            assert parts == {partition_for(series, 5)}, (record, series, parts)
    # librdkafka's murmur2_random placed the keyed MetricSamples exactly where the SDK's
    # own murmur2 put the batches
    assert placement[SAMPLE] == placement[BATCH]
    assert len({p for parts in placement[BATCH].values() for p in parts}) == 5


def test_short_script_loses_nothing_without_close(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    t0 = time.time_ns() // 10**6 - 5000
    script = (
        "from monitoring.sdk.producer import MetricsCollector\n"
        "mc = MetricsCollector(linger=60)\n"  # no linger flush: only the exit hook sends
        "jobs = mc.counter('jobs_total')\n"
        "for i in range(1000):\n"
        "    mc.record('work_items', float(i), {'worker': str(i % 7)}, timestamp_ms=T0 + i)\n"
        "    jobs.inc()\n"
    ).replace("T0", str(t0))
    env = {
        **os.environ,
        "MONITORING_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MONITORING_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
    }
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    got = consume(settings.kafka.bootstrap_servers, topic_name(settings.kafka, SAMPLES), 1001)
    assert len(got) == 1001
    assert [g[5] for g in got if g[3] == "jobs_total"] == [1000.0]
    assert sorted(g[5] for g in got if g[3] != "jobs_total") == [float(i) for i in range(1000)]


def test_histogram_and_counters_arrive_from_collect(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    with MetricsCollector(settings, source="svc") as mc:
        h = mc.histogram("rpc_seconds", buckets=(0.1, 1.0))
        h.observe(0.05)
        h.observe(3.0)
        mc.counter("rpc_total").inc(2, route="/a")
        assert mc.collect() == 6
    got = consume(settings.kafka.bootstrap_servers, topic_name(settings.kafka, SAMPLES), 6)
    values = {g[3]: g[5] for g in got}
    assert values == {
        'rpc_seconds_bucket{le="0.1"}': 1.0,
        'rpc_seconds_bucket{le="1.0"}': 1.0,
        'rpc_seconds_bucket{le="+Inf"}': 2.0,
        "rpc_seconds_sum": 3.05,
        "rpc_seconds_count": 2.0,
        'rpc_total{route="/a"}': 2.0,
    }
    assert len({g[4] for g in got}) == 1  # one snapshot, one timestamp
