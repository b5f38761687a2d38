"""A ClickHouse outage with the real broker and chDB: the store stops buffering at
its bound (the rest of each fetch held, partitions paused), keeps partitions a
rebalance assigns paused, and once inserts work again stores every message and
commits."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import Producer
from fixtures.store_records import AGGREGATE, good
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.runtime.topics import AGGREGATES, topic_name, topic_specs
from monitoring.sinks.clickhouse import store as store_module
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.store import Store, consumer_config, topics
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.integration
CODEC = AvroCodec.from_directory()


class Outage:
    """A client whose inserts fail as a refused connection while ``down`` is set."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.down = threading.Event()
        self.refused = 0

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.down.is_set():
            self.refused += 1
            raise OperationalError("Connection refused")
        return self.client.insert(*args, **kwargs)


def wait_for(cond: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_outage_bounds_the_buffer_then_stores_everything_once(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    base = settings_factory()
    storage = base.storage.model_copy(
        update={"dsn": f"chdb://{tmp_path / 'chdb'}", "batch_size": 5}  # bound: 10 rows
    )
    settings = base.model_copy(update={"storage": storage})
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    topic = topic_name(settings.kafka, AGGREGATES)
    for i in range(60):
        p.produce(topic, CODEC.encode(AGGREGATE, good(AGGREGATE, i)), key=f"k{i}")
    assert p.flush(30) == 0
    client = connect(settings.storage.dsn)
    migrate(client, settings.storage)
    outage = Outage(client)
    outage.down.set()
    store = Store(settings, Writer(outage, StoreMetrics(CollectorRegistry())),  # type: ignore[arg-type]
                  codec=CODEC, group_id=f"store-{uuid.uuid4().hex[:8]}")  # fmt: skip
    handled = store.metrics.messages.labels(topic)
    stop = threading.Event()
    thread = threading.Thread(target=store.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: outage.refused >= 2 and store.paused)
        # at most the bound is buffered (10 rows, one per message): the rest of each
        # fetch was held, and nothing more is fetched while paused
        assert 0 < store.writer.pending <= store.max_pending == 10
        assert handled._value.get() == store.writer.pending
        assert store.health()["status"] == "degraded"
        outage.down.clear()
        wait_for(lambda: store.metrics.rows.labels("aggregates")._value.get() >= 60)
        wait_for(lambda: store.writer.pending == 0 and not store.paused)
    finally:
        stop.set()
        thread.join(60)
    try:
        assert not thread.is_alive()
        assert handled._value.get() == 60  # each message read once more, none skipped
        rows = client.query("SELECT count(), uniqExact(series) FROM aggregates").result_rows
        assert tuple(rows[0]) == (60, 60)
    finally:
        client.close()


class CountingConsumer:
    """A confluent-kafka consumer that counts its ``consume`` calls."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.polls = 0

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        self.polls += 1
        return self.consumer.consume(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)


def test_partitions_assigned_by_a_rebalance_during_an_outage_are_paused(
    settings_factory: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another member holds half the partitions; ClickHouse goes down and the store
    pauses its half; the other member leaves, and its partitions go to the store. The
    store pauses them too (it reads nothing of them into the buffer during the outage)
    and stores everything once inserts work again."""
    monkeypatch.setattr(store_module, "MAX_BACKOFF_S", 1.0)  # retries every second
    base = settings_factory()
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'chdb'}"})
    settings = base.model_copy(update={"storage": storage})
    k = settings.kafka
    topic = topic_name(k, AGGREGATES)
    partitions = {spec.name: spec.partitions for spec in topic_specs(k)}
    n_parts = sum(partitions[t] for t in topics(settings))
    p = Producer({"bootstrap.servers": k.bootstrap_servers})
    for i in range(24):
        p.produce(topic, CODEC.encode(AGGREGATE, good(AGGREGATE, i)), key=f"k{i}")
    assert p.flush(30) == 0
    client = connect(settings.storage.dsn)
    migrate(client, settings.storage)
    outage = Outage(client)
    outage.down.set()
    group = f"store-{uuid.uuid4().hex[:8]}"
    # the other member: in the group first, never committing
    other = ConfluentConsumer({**consumer_config(settings, group), "client.id": "other"})
    other.subscribe(topics(settings))
    deadline = time.monotonic() + 60
    while len(other.assignment()) < n_parts:
        assert time.monotonic() < deadline
        other.poll(0.1)
    consumer = CountingConsumer(ConfluentConsumer(consumer_config(settings, group)))
    store = Store(settings, Writer(outage, StoreMetrics(CollectorRegistry())),  # type: ignore[arg-type]
                  consumer, CODEC, group_id=group)  # fmt: skip
    handled = store.metrics.messages.labels(topic)
    stop = threading.Event()
    thread = threading.Thread(target=store.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not (
            store.paused and outage.refused >= 1 and consumer.assignment()
            and len(other.assignment()) < n_parts
        ):  # fmt: skip
            assert time.monotonic() < deadline, "the store got no partitions, or no outage"
            other.poll(0.1)  # the other member takes part in the rebalance
        assert len(consumer.assignment()) + len(other.assignment()) == n_parts
        before = handled._value.get()
        other.close()  # its partitions go to the store, mid-outage
        wait_for(lambda: len(consumer.assignment()) == n_parts)
        polls = consumer.polls
        wait_for(lambda: consumer.polls >= polls + 15)  # ~3 s of fetching, were it on
        assert handled._value.get() == before  # nothing of the new partitions read
        assert store.paused and store.writer.pending == before
        outage.down.clear()
        wait_for(lambda: count(client, "aggregates FINAL") == 24 and store.writer.pending == 0)
    finally:
        stop.set()
        thread.join(60)
    try:
        assert not thread.is_alive()
    finally:
        client.close()


def count(client: Any, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])
