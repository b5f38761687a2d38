"""End to end: Avro events on the real broker -> the store -> chDB, then a restart."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.runtime.topics import AGGREGATES, SAMPLES, topic_name
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.integration
CODEC = AvroCodec.from_directory()
NOW = int(time.time() * 1000) // 10_000 * 10_000


def produce(settings: Settings, n_series: int, n_points: int) -> None:
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    samples, aggregates = (
        topic_name(settings.kafka, SAMPLES),
        topic_name(settings.kafka, AGGREGATES),
    )
    for i in range(n_series):
        batch = {
            "source": "t", "series": [f'req{{i="{i}"}}'], "kinds": ["COUNTER"], "units": [""],
            "series_index": [0] * n_points,
            "timestamps_ms": [NOW - 10_000 * k for k in range(n_points)],
            "values": [float(k) for k in range(n_points)],
        }  # fmt: skip
        key = f'req{{i="{i}"}}'
        p.produce(samples, CODEC.encode("monitoring.MetricBatch", batch), key=key)
        agg = {
            "series": key, "name": "req", "labels": {"i": str(i)}, "window_ms": 10_000,
            "window_start_ms": NOW - 10_000, "window_end_ms": NOW, "count": 1, "sum": 1.0,
            "min": 1.0, "max": 1.0, "mean": 1.0, "last": 1.0, "p50": 1.0, "p90": 1.0,
            "p99": 1.0, "closed_by": "watermark",
        }  # fmt: skip
        p.produce(aggregates, CODEC.encode("monitoring.Aggregate", agg), key=key)
    p.produce(samples, b"not avro at all")  # counted and skipped, never fatal
    assert p.flush(30) == 0


def run_store(settings: Settings, client: Any, group: str, until: Callable[[], bool]) -> Store:
    registry = CollectorRegistry()
    store = Store(settings, Writer(client, StoreMetrics(registry)), codec=CODEC, group_id=group)
    stop = threading.Event()
    t = threading.Thread(target=store.run, args=(stop,))
    t.start()
    deadline = time.monotonic() + 60
    try:
        while not until() and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    return store


def test_store_consumes_kafka_and_restarts_without_duplicates(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    base = settings_factory()
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'chdb'}"})
    settings = base.model_copy(update={"storage": storage})
    produce(settings, n_series=20, n_points=50)
    client = connect(settings.storage.dsn)
    try:
        migrate(client, settings.storage)
        group = f"store-test-{uuid.uuid4().hex[:8]}"

        def count(sql: str) -> int:
            return int(client.query(sql).result_rows[0][0])

        def done() -> bool:
            return (
                count("SELECT count() FROM samples") >= 1000
                and count("SELECT count() FROM aggregates") >= 20
            )

        store = run_store(settings, client, group, done)
        assert count("SELECT count() FROM samples FINAL") == 1000
        assert count("SELECT count() FROM aggregates FINAL") == 20
        assert count("SELECT count() FROM series FINAL") == 20
        invalid = store.writer.metrics.invalid.labels("bad-marker")._value.get()
        assert invalid == 1
        # offsets were committed on shutdown: a restarted store reads nothing again
        produce(settings, n_series=1, n_points=1)
        run_store(settings, client, group, lambda: count("SELECT count() FROM aggregates") > 20)
        assert count("SELECT count() FROM samples") == 1001  # the new one only: no replay
        assert count("SELECT count() FROM samples FINAL") == 1000  # same (series, ts) as before
        assert count("SELECT count() FROM aggregates") == 21  # the one new, re-emitted window
        assert count("SELECT count() FROM aggregates FINAL") == 20  # ... replaces the old one
    finally:
        client.close()
