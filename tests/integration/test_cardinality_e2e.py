"""A million distinct series pushed at a real worker: it keeps at most
``aggregation.max_series`` of a partition, or ``max_series_per_worker`` of all the
partitions it holds, stays healthy and in its group, counts and dead-letters the
excess, and its memory follows the bound, not the million."""

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
            # every message handled, and the refusals all counted: a rebalance under load
            # replays messages (counted again) into state restored from a checkpoint
            handled = metric(scrape(port, "/metrics"), "agent_messages_total")
            refused = json.loads(_health(port))["aggregation"]["series_refused_samples"]
            return handled >= N_SERIES // PER_MESSAGE and refused >= N_SERIES - MAX_SERIES

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


PER_WORKER = 100_000
METRICS = 10  # 1,000,000 series over 6 partitions and 10 names: the partitions' bounds
# (200,000 series, 50,000 of a name) never bind, the worker's does


def test_a_million_series_over_every_partition_keep_the_worker_bound(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The partitions' default bounds would let one worker keep 1.2 million series
    (about 4 GB); ``aggregation.max_series_per_worker`` keeps it at the bound."""
    port = free_port()
    p = LocalDeployment(kafka_bootstrap, tmp_path / "p", worker__metrics_port=str(port),
                        aggregation__max_series_per_worker=str(PER_WORKER),
                        anomaly__enabled="false")  # fmt: skip
    assert p.settings.aggregation.max_series == 200_000  # the defaults
    assert p.settings.aggregation.max_series_per_metric == 50_000
    codec = AvroCodec.from_directory()
    now = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20,
                         "message.max.bytes": p.settings.kafka.max_message_bytes})  # fmt: skip
    messages = N_SERIES // PER_MESSAGE
    try:
        worker = p.start("worker", "worker")
        p.wait(lambda: b'"aggregation"' in _health(port), 90, "worker healthy")
        baseline = rss_mib(worker.pid)
        peak = baseline
        for m in range(messages):
            ids = range(m * PER_MESSAGE, (m + 1) * PER_MESSAGE)
            keys = [series_key(f"req_seconds_{i % METRICS}", {"request_id": f"r{i}"}) for i in ids]
            value = codec.encode("monitoring.MetricBatch", {
                "source": "test", "series": keys, "kinds": [], "units": [],
                "series_index": list(range(PER_MESSAGE)),
                "timestamps_ms": [now] * PER_MESSAGE, "values": [1.0] * PER_MESSAGE,
            })  # fmt: skip
            producer.produce(p.topic("metrics.samples"), value, b"batch", partition=m % 6)
            producer.poll(0)
            if m % 50 == 0:
                peak = max(peak, rss_mib(worker.pid))
        assert producer.flush(60) == 0

        def done() -> bool:  # every message handled and its refusals counted (see above)
            handled = metric(scrape(port, "/metrics"), "agent_messages_total")
            refused = json.loads(_health(port))["aggregation"]["series_refused_samples"]
            return handled >= messages and refused >= N_SERIES - PER_WORKER

        deadline = time.monotonic() + 300
        while not done():
            assert time.monotonic() < deadline, "the worker did not take every message"
            assert worker.poll() is None, p.logs()
            peak = max(peak, rss_mib(worker.pid))
            time.sleep(0.5)
        health = json.loads(_health(port))
        agg = health["aggregation"]
        text = scrape(port, "/metrics")
        refused = agg["series_refused_samples"]
        print(f"worker RSS: {baseline:.0f} MiB at start, {peak:.0f} MiB at peak "
              f"(+{peak - baseline:.0f} MiB, {(peak - baseline) * 1024 / PER_WORKER:.2f} KiB "
              f"a kept series); series {agg['series']}, refused samples {refused}, "
              f"by the worker's bound {agg['series_refused_by_worker_limit']}")  # fmt: skip
        assert health["status"] == "ok" and agg["partitions"] == list(range(6))
        assert agg["series_limit_per_worker"] == PER_WORKER
        # the bound, plus at most one monitoring_series_refused_total per partition (its
        # own counters, admitted whatever the bounds, may take a place before it is full)
        assert PER_WORKER <= agg["series"] <= PER_WORKER + 6
        kept = N_SERIES - refused  # every series was sent once, one sample each
        assert PER_WORKER - 6 <= kept <= PER_WORKER
        assert agg["series_refused_by_worker_limit"] == refused  # no partition's own bound
        assert 'agent_dead_letters_total{agent="aggregation",reason="cardinality"}' in text

        def gauge_follows() -> bool:  # set at the checkpoint tick
            series = json.loads(_health(port))["aggregation"]["series"]
            return metric(scrape(port, "/metrics"), "aggregation_series", "") == series

        p.wait(gauge_follows, 60, "the aggregation_series gauge")
        # generous: twice the ~3.4 KB a kept series costs, and room for the rest
        assert peak - baseline < PER_WORKER * 7 / 1024 + 256, (baseline, peak)
    finally:
        p.stop_all()
        p.delete_topics()


def metric(text: str, name: str, labels: str = '{agent="aggregation"}') -> float:
    """The value of ``name{agent="aggregation"}`` (or other labels) in a /metrics page."""
    prefix = f"{name}{labels} "
    return float(next(ln for ln in text.splitlines() if ln.startswith(prefix))[len(prefix) :])


def _health(port: int) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.read()
    except OSError:
        return b""
