"""``MetricsCollector.record_many``: a request's samples buffered all or none."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.metrics.samples import InvalidSample
from monitoring.sdk.producer import BufferFullError, MetricsCollector, make_series


@pytest.fixture
def mc() -> Iterator[MetricsCollector]:
    c = MetricsCollector(
        Settings.load(None),
        bootstrap_servers="127.0.0.1:1",  # nothing listens: everything stays buffered
        registry=CollectorRegistry(),
        num_partitions=3,
        buffer_size=10,
        batch_size=100,
        linger=3600,
        close_timeout=0.1,
    )
    yield c
    c.close(0.1)


def test_all_or_none(mc: MetricsCollector) -> None:
    s = make_series("x", {"a": "1"})
    mc.record_many([(s, 1_000 + i, float(i)) for i in range(6)])
    assert mc.stats()["pending"] == 6
    with pytest.raises(BufferFullError):
        mc.record_many([(s, 2_000 + i, 1.0) for i in range(5)])  # 11 > 10
    assert mc.stats()["pending"] == 6  # nothing of the refused call was buffered
    mc.record_many([(s, 3_000 + i, 1.0) for i in range(4)])
    assert mc.stats()["pending"] == 10


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_refuse_the_whole_call(mc: MetricsCollector, bad: float) -> None:
    s = make_series("x", {})
    with pytest.raises(InvalidSample):
        mc.record_many([(s, 1, 1.0), (s, 2, bad)])
    assert mc.stats()["pending"] == 0
