"""The delivery log end to end: dispatcher records -> Avro on the real broker -> the store
-> the ``deliveries`` table in chDB; a replay of the same records adds no row (FINAL)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from fixtures.notify import HttpReceiver, Reply, cpu_notification
from prometheus_client import CollectorRegistry

from monitoring.alerts.receivers import parse_receivers
from monitoring.config import Settings
from monitoring.runtime.topics import NOTIFY_DELIVERIES, topic_name
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.sinks.notifiers.dispatcher import DeliveryRecord, Dispatcher, RetryPolicy
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.integration
CODEC = AvroCodec.from_directory()
SECRET_PATH = "/hooks/T0/B0/S3cr3tPathT0ken"


def produce(settings: Settings, records: list[DeliveryRecord]) -> None:
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    topic = topic_name(settings.kafka, NOTIFY_DELIVERIES)
    for r in records:
        p.produce(topic, CODEC.encode("monitoring.Delivery", r.to_avro()), key=r.delivery_id)
    assert p.flush(30) == 0


def run_store(settings: Settings, client: object, group: str, until: Callable[[], bool]) -> None:
    writer = Writer(client, StoreMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    store = Store(settings, writer, codec=CODEC, group_id=group)
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


async def test_delivery_log_reaches_clickhouse_without_secrets_or_duplicates(
    settings_factory: Callable[..., Settings],
    http_receiver_factory: Callable[..., HttpReceiver],
    tmp_path: Path,
) -> None:
    srv = http_receiver_factory([Reply(503, body=f"upstream {SECRET_PATH} down")])
    receivers = [{"name": "ops", "webhook_configs": [{"url": f"{srv.url}{SECRET_PATH}"}]}]
    records: list[DeliveryRecord] = []
    policy = RetryPolicy(initial_backoff_s=0.05, jitter=0)
    async with Dispatcher(parse_receivers(receivers), policy=policy, on_record=records.append) as d:
        n = cpu_notification("ops", ("firing", "firing"))
        await d.deliver(n)
        await d.deliver(n)  # duplicate: recorded, not sent
    assert [(r.attempt, r.outcome) for r in records] == [
        (1, "retrying"),
        (2, "delivered"),
        (0, "duplicate"),
    ]

    base = settings_factory()
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'chdb'}"})
    settings = base.model_copy(update={"storage": storage})
    produce(settings, records)
    client = connect(settings.storage.dsn)
    try:
        migrate(client, settings.storage)

        def count(sql: str) -> int:
            return int(client.query(sql).result_rows[0][0])

        group = f"store-test-{uuid.uuid4().hex[:8]}"
        run_store(settings, client, group, lambda: count("SELECT count() FROM deliveries") >= 3)
        rows = client.query(
            "SELECT delivery_id, attempt, receiver, integration, channel, target, group_key,"
            " status, fingerprints, outcome, http_status, error, toUnixTimestamp64Milli(time)"
            " FROM deliveries FINAL ORDER BY attempt"
        ).result_rows
        key = records[0].delivery_id
        fps = [a.fingerprint for a in n.alerts]
        target = f"{srv.url}/<redacted>"
        assert [tuple(r) for r in rows] == [
            (key, 0, "ops", "webhook_configs[0]", "webhook", target, n.group_key, "firing",
             fps, "duplicate", None, "", records[2].time_ms),
            (key, 1, "ops", "webhook_configs[0]", "webhook", target, n.group_key, "firing",
             fps, "retrying", 503, "HTTP 503: upstream <redacted> down", records[0].time_ms),
            (key, 2, "ops", "webhook_configs[0]", "webhook", target, n.group_key, "firing",
             fps, "delivered", 200, "", records[1].time_ms),
        ]  # fmt: skip
        everything = client.query("SELECT * FROM deliveries").result_rows
        assert "S3cr3tPathT0ken" not in repr(everything)
        # The notifier re-publishes its records (a replay): still one row per attempt.
        produce(settings, records)
        run_store(settings, client, group, lambda: count("SELECT count() FROM deliveries") >= 6)
        assert count("SELECT count() FROM deliveries") == 6
        assert count("SELECT count() FROM deliveries FINAL") == 3
    finally:
        client.close()
