"""The store's bounded buffer under a steady backlog, with the real broker and chDB:
fetches larger than the bound are cut, the rest read again, and every sample is stored
before its offset is committed (none skipped, none committed unstored)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.runtime.topics import SAMPLES, topic_name
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.integration
CODEC = AvroCodec.from_directory()
MESSAGES, PER_MESSAGE = 600, 50


def wait_for(cond: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_backlog_larger_than_the_buffer_is_stored_whole(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    base = settings_factory()
    storage = base.storage.model_copy(
        update={"dsn": f"chdb://{tmp_path / 'chdb'}", "batch_size": 500}  # bound: 1,000 rows
    )
    settings = base.model_copy(update={"storage": storage})
    topic = topic_name(settings.kafka, SAMPLES)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    now = int(time.time() * 1000) - 3_600_000
    for m in range(MESSAGES):
        keys = [f'cpu{{i="{i}",m="{m}"}}' for i in range(PER_MESSAGE)]
        value = CODEC.encode("monitoring.MetricBatch", {
            "source": "t", "series": keys, "kinds": [], "units": [],
            "series_index": list(range(PER_MESSAGE)), "timestamps_ms": [now + m] * PER_MESSAGE,
            "values": [float(m)] * PER_MESSAGE,
        })  # fmt: skip
        producer.produce(topic, value, key=f"k{m}", partition=m % settings.kafka.samples_partitions)
    assert producer.flush(30) == 0
    client = connect(settings.storage.dsn)
    migrate(client, settings.storage)
    group = f"store-{uuid.uuid4().hex[:8]}"
    store = Store(settings, Writer(client, StoreMetrics(CollectorRegistry())), codec=CODEC,
                  group_id=group)  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=store.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: store.metrics.messages.labels(topic)._value.get() >= MESSAGES)
        wait_for(lambda: store.writer.pending == 0 and store.uncommitted == 0)
    finally:
        stop.set()
        thread.join(60)
    try:
        assert not thread.is_alive()
        rows = client.query("SELECT count(), uniqExact(series_id) FROM samples").result_rows
        assert tuple(rows[0]) == (MESSAGES * PER_MESSAGE, MESSAGES * PER_MESSAGE)
        check = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group})
        parts = [TopicPartition(topic, p) for p in range(settings.kafka.samples_partitions)]
        committed = {tp.partition: tp.offset for tp in check.committed(parts, timeout=10)}
        check.close()
        assert sum(committed.values()) == MESSAGES
    finally:
        client.close()
