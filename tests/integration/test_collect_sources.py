"""The seed's ``MetricsCollector().collect(sources=..., interval=...)`` through the real
broker: the system, a scrape target (an ApiServer's /metrics) and a Python callable,
once and then every interval until stop()."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from fixtures.ingest import consume_samples
from prometheus_client import CollectorRegistry, Gauge

from monitoring.api.server import ApiServer
from monitoring.config import Settings
from monitoring.metrics.collector import MetricsCollector
from monitoring.metrics.samples import BATCH
from monitoring.runtime.topics import SAMPLES, topic_name

pytestmark = pytest.mark.integration


def test_collect_from_sources_once_and_every_interval(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    topic = topic_name(settings.kafka, SAMPLES)
    own = CollectorRegistry()
    Gauge("jobs_waiting", "Jobs.", registry=own).set(5)
    api = ApiServer(own, "127.0.0.1", 0).start()
    url = "http://{}:{}/metrics".format(*api.address)
    calls = []

    def queue_depth() -> dict[str, float]:
        calls.append(1)
        return {"queue_depth": float(len(calls))}

    try:
        with MetricsCollector(settings, source="sources-test") as mc:
            n = len(mc.collect(sources=["system", url, queue_depth]))
            assert n > 50
            got = consume_samples(settings.kafka.bootstrap_servers, topic, lambda s: len(s) >= n)
            assert len(got) == n and {r for r, _ in got} == {BATCH}
            by_name = {s.name: s for _, s in got}
            assert by_name["node_load1"].labels["instance"] == socket.gethostname()
            assert by_name["jobs_waiting"].value == 5.0
            assert by_name["jobs_waiting"].labels["job"] == "scrape"
            assert by_name["up"].value == 1.0
            assert by_name["queue_depth"].value == 1.0
            assert len({s.timestamp_ms for _, s in got}) == 1  # one collection, one time

            mc.collect(sources=[queue_depth], interval=0.2)
            deadline = time.monotonic() + 30
            while len(calls) < 4:
                assert time.monotonic() < deadline, "no collection every interval"
                time.sleep(0.05)  # polling a condition
            mc.stop()
            stopped_at = len(calls)
            assert mc.flush(30) == 0
        assert len(calls) == stopped_at  # stop() ended the background collection
        depths = consume_samples(
            settings.kafka.bootstrap_servers,
            topic,
            lambda s: len([x for _, x in s if x.name == "queue_depth"]) >= stopped_at,
        )
        values = sorted(s.value for _, s in depths if s.name == "queue_depth")
        assert values == [float(i) for i in range(1, stopped_at + 1)]
    finally:
        api.stop()
