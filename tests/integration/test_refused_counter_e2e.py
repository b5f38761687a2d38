"""The refused-series counter through the real broker and chDB: a worker over its
series limit publishes ``monitoring_series_refused_total{partition}`` on the samples
topic, and the store holds it as samples and as closed windows (the setup of
test_cardinality_e2e, at a small scale)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from monitoring.dev.deploy import LocalDeployment
from monitoring.metrics.samples import series_key
from monitoring.sinks.clickhouse.rows import series_id
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration]
MAX_SERIES = 5
COUNTER = 'monitoring_series_refused_total{partition="0"}'


def test_refused_samples_reach_the_store_as_a_counter(kafka_bootstrap: str, tmp_path: Path) -> None:
    p = LocalDeployment(kafka_bootstrap, tmp_path / "p", aggregation__max_series=str(MAX_SERIES),
                        anomaly__enabled="false")  # fmt: skip
    codec = AvroCodec.from_directory()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    start = int(time.time() * 1000) // 10_000 * 10_000 - 60_000
    try:
        p.start_store()
        p.start("worker", "worker")
        # the same 20 series (15 over the limit) every 10 s of record time, a minute ago
        keys = [series_key("req_seconds", {"request_id": f"r{i}"}) for i in range(20)]
        for m in range(4):
            ts = start + m * 10_000 + 1
            value = codec.encode("monitoring.MetricBatch", {
                "source": "test", "series": keys, "kinds": [], "units": [],
                "series_index": list(range(20)), "timestamps_ms": [ts] * 20,
                "values": [1.0] * 20,
            })  # fmt: skip
            producer.produce(p.topic("metrics.samples"), value, b"b", partition=0, timestamp=ts)
        assert producer.flush(30) == 0
        sid = series_id(COUNTER)

        def counted() -> bool:
            try:
                sql = f"SELECT max(value) FROM samples WHERE series_id = {sid}"
                return bool(p.query(sql)[0][0] == 60)
            except ConnectionError:  # the store is still starting
                return False

        p.wait(counted, 120, f"the counter in the store\n{p.logs()}")
        points = p.query(
            f"SELECT toUnixTimestamp64Milli(ts), value FROM samples FINAL "
            f"WHERE series_id = {sid} ORDER BY ts, value"
        )
        # each change as the count before and after, at the record time of its message
        assert points == [
            [start + m * 10_000 + 1, float(v)] for m in range(4) for v in (15 * m, 15 * m + 15)
        ]
        assert p.query(f"SELECT kind, name FROM series FINAL WHERE series_id = {sid}") == [
            ["COUNTER", "monitoring_series_refused_total"]
        ]
        windows = (
            f"SELECT min, max FROM aggregates FINAL WHERE series_id = {sid} "
            "AND window_ms = 10000 ORDER BY window_start"
        )
        p.wait(lambda: len(p.query(windows)) == 4, 120, f"the closed windows\n{p.logs()}")
        # what each window refused is its max - min, which SeriesRefused alerts on
        assert p.query(windows) == [[15.0 * m, 15.0 * m + 15] for m in range(4)]
    finally:
        p.stop_all()
        p.delete_topics()
