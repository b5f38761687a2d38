"""A broker outage longer than the idle timeout, in the middle of the stream: nothing
lost, nothing counted twice, and the idle timer does not turn the samples held up by
the outage into late ones."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.dataset import Point, generate, oracle
from fixtures.progress import committed

from integration.test_broker import _free_port_pair
from integration.test_pipeline_e2e import check_against_oracle, recent_start
from monitoring.dev.deploy import LocalDeployment
from monitoring.dev.local_kafka import LocalKafka
from monitoring.metrics.collector import MetricsCollector
from monitoring.runtime.topics import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.own_broker, pytest.mark.slow]
IDLE_S = 8


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    broker = LocalKafka(port=_free_port_pair(), data_dir=tmp_path / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.destroy()


def produce_around_outage(
    d: LocalDeployment, points: list[Point], first: threading.Event, down: threading.Event,
    up: threading.Event,
) -> None:  # fmt: skip
    """A third before the outage (``first`` once it is acknowledged), a third while the
    broker is down (held up in the producer), the rest once it is back."""
    # reconnect quickly once the broker is back (librdkafka's backoff grows to 10 s)
    config = {"reconnect.backoff.max.ms": 500}
    third = len(points) // 3
    with MetricsCollector(d.settings, linger=0.05, producer_config=config) as mc:
        for i, pt in enumerate(points):
            if i == third:
                assert mc.flush(60) == 0
                first.set()
                assert down.wait(120)
            if i == 2 * third:
                assert up.wait(120)
            mc.record(pt.name, pt.value, pt.labels, timestamp_ms=pt.timestamp_ms)
        assert mc.flush(120) == 0


def test_broker_outage_mid_stream(own_kafka: LocalKafka, tmp_path: Path) -> None:
    d = LocalDeployment(
        own_kafka.bootstrap, tmp_path / "pipeline", aggregation__idle_timeout=f"{IDLE_S}s"
    )
    worker_log = d.dir / "worker.log"
    try:
        points = generate(n_series=100, ticks=300, start_ms=recent_start(300), seed=3)
        expected = oracle(points, d.settings.aggregation.windows_ms)
        d.start_store()
        d.start("worker", "worker")
        first, down, up = threading.Event(), threading.Event(), threading.Event()
        producer = threading.Thread(target=produce_around_outage, args=(d, points, first, down, up))
        producer.start()
        assert first.wait(120)
        # mid-stream: the worker has checkpointed part of the first third
        group = f"{d.prefix}worker"
        d.wait(
            lambda: committed(own_kafka.bootstrap, group, d.topic(SAMPLES)) > 0,
            60,
            "the worker's first checkpoint",
        )
        own_kafka.stop()  # the worker, the store and the producer lose the broker
        down.set()
        # the outage outlasts the idle timeout: the worker's idle check finds the broker down
        d.wait(
            lambda: "idle_check_skipped" in worker_log.read_text(errors="replace"),
            60 + IDLE_S,
            f"the idle check skipped\n{d.logs()}",
        )
        own_kafka.start()
        up.set()
        producer.join(300)
        assert not producer.is_alive()
        check_against_oracle(d, expected)
    finally:
        d.stop_all()
