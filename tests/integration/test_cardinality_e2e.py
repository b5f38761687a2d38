"""A million distinct series pushed at a real worker: it keeps at most
``aggregation.max_series`` of a partition, stays healthy and in its group, counts and
dead-letters the excess, and its memory follows the bound, not the million."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from monitoring.dev.deploy import LocalDeployment, free_port
from monitoring.metrics.samples import series_key
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N_SERIES = 1_000_000
PER_MESSAGE = 2_000
MAX_SERIES = 10_000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def scrape(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def test_a_million_series_at_a_worker(kafka_bootstrap: str, tmp_path: Path) -> None:
    port = free_port()
    p = LocalDeployment(kafka_bootstrap, tmp_path / "p", worker__metrics_port=str(port),
                        aggregation__max_series=str(MAX_SERIES),
                        anomaly__enabled="false")  # fmt: skip
    codec = AvroCodec.from_directory()
    now = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20,
                         "message.max.bytes": p.settings.kafka.max_message_bytes})  # fmt: skip
    try:
        worker = p.start("worker", "worker")
        p.wait(lambda: b'"aggregation"' in _health(port), 90, "worker healthy")
        baseline = rss_mib(worker.pid)
        peak = baseline
        for m in range(N_SERIES // PER_MESSAGE):
            keys = [series_key("req_seconds", {"request_id": f"r{m * PER_MESSAGE + i}"})
                    for i in range(PER_MESSAGE)]  # fmt: skip
            value = codec.encode("monitoring.MetricBatch", {
                "source": "test", "series": keys, "kinds": [], "units": [],
                "series_index": list(range(PER_MESSAGE)),
                "timestamps_ms": [now] * PER_MESSAGE, "values": [1.0] * PER_MESSAGE,
            })  # fmt: skip
            producer.produce(p.topic("metrics.samples"), value, b"batch", partition=0)
            producer.poll(0)
            if m % 50 == 0:
                peak = max(peak, rss_mib(worker.pid))
        assert producer.flush(60) == 0

        def done() -> bool:  # the worker's own refused-series counter comes on top
            return (
                metric(scrape(port, "/metrics"), "agent_messages_total") >= N_SERIES // PER_MESSAGE
            )

        deadline = time.monotonic() + 240
        while not done():
            assert time.monotonic() < deadline, "the worker did not take every message"
            assert worker.poll() is None, p.logs()
            peak = max(peak, rss_mib(worker.pid))
            time.sleep(0.5)
        health = json.loads(_health(port))
        agg = health["aggregation"]
        text = scrape(port, "/metrics")
        refused = agg["series_refused_samples"]
        print(f"worker RSS: {baseline:.0f} MiB at start, {peak:.0f} MiB at peak; "
              f"series {agg['series']}, refused samples {refused}")  # fmt: skip
        assert health["status"] == "ok" and agg["partitions"] == list(range(6))
        # plus monitoring_series_refused_total{partition="0"}, never refused, once read
        assert agg["series"] in (MAX_SERIES, MAX_SERIES + 1)
        assert agg["series_refused_samples"] == N_SERIES - MAX_SERIES
        assert 'agent_dead_letters_total{agent="aggregation",reason="cardinality"}' in text
        assert MAX_SERIES <= metric(text, "agent_items_total") < MAX_SERIES + 1000
        assert peak - baseline < 512, (baseline, peak)
    finally:
        p.stop_all()
        p.delete_topics()


def metric(text: str, name: str) -> float:
    """The value of ``name{agent="aggregation"}`` in a /metrics page."""
    prefix = f'{name}{{agent="aggregation"}} '
    return float(next(ln for ln in text.splitlines() if ln.startswith(prefix))[len(prefix) :])


def _health(port: int) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.read()
    except OSError:
        return b""
