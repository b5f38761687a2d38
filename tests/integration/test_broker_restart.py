"""A broker outage longer than the idle timeout, in the middle of the stream: nothing
lost, nothing counted twice, and the idle timer does not turn the samples held up by
the outage into late ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.dataset import Point, generate, oracle

from integration.test_broker import _free_port_pair
from integration.test_pipeline_e2e import check_against_oracle, recent_start
from monitoring.dev.deploy import LocalDeployment
from monitoring.dev.local_kafka import LocalKafka
from monitoring.metrics.collector import MetricsCollector

pytestmark = [pytest.mark.integration, pytest.mark.own_broker, pytest.mark.slow]
IDLE_S = 8
OUTAGE_S = 15


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    broker = LocalKafka(port=_free_port_pair(), data_dir=tmp_path / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.destroy()


def produce_paced(d: LocalDeployment, points: list[Point], third: threading.Event) -> None:
    # reconnect quickly once the broker is back (librdkafka's backoff grows to 10 s)
    config = {"reconnect.backoff.max.ms": 500}
    with MetricsCollector(d.settings, linger=0.05, producer_config=config) as mc:
        for i, pt in enumerate(points):
            mc.record(pt.name, pt.value, pt.labels, timestamp_ms=pt.timestamp_ms)
            if i % 600 == 599:
                time.sleep(0.8)
            if i == len(points) // 3:
                third.set()
        assert mc.flush(120) == 0


def test_broker_outage_mid_stream(own_kafka: LocalKafka, tmp_path: Path) -> None:
    d = LocalDeployment(
        own_kafka.bootstrap, tmp_path / "pipeline", aggregation__idle_timeout=f"{IDLE_S}s"
    )
    try:
        points = generate(n_series=100, ticks=300, start_ms=recent_start(300), seed=3)
        expected = oracle(points, d.settings.aggregation.windows_ms)
        d.start_store()
        d.start("worker", "worker")
        third = threading.Event()
        producer = threading.Thread(target=produce_paced, args=(d, points, third))
        producer.start()
        assert third.wait(120)
        time.sleep(3)
        own_kafka.stop()  # the worker, the store and the producer lose the broker
        time.sleep(OUTAGE_S)
        own_kafka.start()
        producer.join(300)
        assert not producer.is_alive()
        check_against_oracle(d, expected)
        log = (d.dir / "worker.log").read_text()
        assert "idle_check_skipped" in log  # the outage outlasted the idle timeout
    finally:
        d.stop_all()
