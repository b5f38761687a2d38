"""``record_many`` on a collector that sends one record per sample (``batch=False``):
all or none as with batches. It appended one sample at a time, so a full buffer left a
request half buffered (its retry duplicated that half), and ``on_full="drop"`` dropped
part of it while the receiver answered 200."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.sdk.producer import BufferFullError, MetricsCollector, make_series


@pytest.fixture(params=["block", "drop"])
def mc(request: pytest.FixtureRequest) -> Iterator[MetricsCollector]:
    c = MetricsCollector(
        Settings.load(None),
        bootstrap_servers="127.0.0.1:1",  # nothing listens: everything stays unacknowledged
        registry=CollectorRegistry(),
        num_partitions=3,
        buffer_size=10,
        batch=False,
        on_full=request.param,
        block_timeout=0.1,
        close_timeout=0.1,
    )
    yield c
    c.close(0.1)


def test_all_or_none_without_batches(mc: MetricsCollector) -> None:
    s = make_series("x", {"a": "1"})
    mc.record_many([(s, 1_000 + i, float(i)) for i in range(6)])
    assert mc.stats()["inflight"] == 6
    with pytest.raises(BufferFullError):
        mc.record_many([(s, 2_000 + i, 1.0) for i in range(5)])  # 11 > 10
    stats = mc.stats()
    assert (stats["inflight"], stats["dropped"]) == (6, 0)  # nothing of the refused call
    mc.record_many([(s, 3_000 + i, 1.0) for i in range(4)])
    assert mc.stats()["inflight"] == 10
