"""Idle close after a broker outage (issue 18): producers deliver what they held
during an outage a little after the broker is back (librdkafka's reconnect backoff);
the aggregation agent on the in-memory runtime, a manual clock and a 6 s idle timeout
(the test deployments'), must not close the windows in progress before they do: an
outage longer than the idle timeout, and one shorter than it (which no idle check
would otherwise see), each followed by the held samples 8 s after the broker is back."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitoring.agents.aggregation import AggregationAgent
from monitoring.config import Settings
from monitoring.metrics.samples import series_key
from monitoring.runtime.driver import RECONNECT_GRACE_S
from monitoring.runtime.memory import MemoryRuntime
from monitoring.wire.aggregate_encoding import AggregateDecoder
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
DECODER = AggregateDecoder(CODEC)
SETTINGS = Settings(aggregation={"idle_timeout": "6s"})
SAMPLES = "monitoring.metrics.samples"
AGGREGATES = "monitoring.metrics.aggregates"
LATE = "monitoring.metrics.late"
NOW = 1_700_000_000_000
START = NOW - NOW % 60_000 - 10 * 60_000  # a minute's start: its 10 s windows in progress
IDLE_S = 6.0
TICK_S = 1.0  # the worker's idle timer: min(1 s, idle_timeout / 4)


def produce(rt: MemoryRuntime[Any], seconds: range) -> None:
    """One sample a second of event time for ``seconds`` (from START), on partition 0."""
    labels = {"room": "a"}
    for i in seconds:
        rec = {"name": "temp", "value": 1.0, "labels": labels, "timestamp_ms": START + i * 1000}
        rt.produce(SAMPLES, CODEC.encode("monitoring.MetricSample", rec), 0,
                   series_key("temp", labels).encode(), NOW / 1000)  # fmt: skip


async def run_for(rt: MemoryRuntime[Any], seconds: float) -> None:
    """The worker's idle timer ticking for ``seconds`` of the manual clock."""
    for _ in range(int(seconds / TICK_S)):
        await rt.advance(TICK_S)


@pytest.mark.parametrize("outage_s", [10.0, 4.0])
async def test_held_samples_after_an_outage_are_not_made_late(outage_s: float) -> None:
    registry = CollectorRegistry()
    rt: MemoryRuntime[Any] = MemoryRuntime(lambda: AggregationAgent(SETTINGS, registry, CODEC))
    produce(rt, range(0, 25))  # 0-24 s of event time: 20-30 s and the minute in progress
    await rt.poll()
    await run_for(rt, 2)
    rt.broker_up = False  # the producer holds 25-34 s from now on
    await run_for(rt, outage_s)
    rt.broker_up = True
    await run_for(rt, 8)  # its reconnect backoff: longer than the idle timeout
    produce(rt, range(25, 35))
    await rt.poll()
    await rt.checkpoint()
    assert rt.records(LATE) == []
    assert registry.get_sample_value("aggregation_late_samples_total") == 0
    # the grace ends: the quiet partition closes as before, every sample in its window
    await run_for(rt, RECONNECT_GRACE_S + IDLE_S)
    await rt.checkpoint()
    got = {
        (a.window_ms, a.window_start_ms - START): (a.count, a.closed_by)
        for a in (DECODER.decode(r.value) for r in rt.records(AGGREGATES))
        if a.labels.get("room") == "a"
    }
    assert got[(10_000, 10_000)] == (10, "watermark")
    assert got[(10_000, 20_000)] == (10, "idle")
    assert got[(10_000, 30_000)] == (5, "idle")
    assert got[(60_000, 0)] == (35, "idle")
