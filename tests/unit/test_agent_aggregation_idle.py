"""The aggregation agent on the in-memory runtime: a burst after an idle close (the HA
test's producer, tests/integration/test_ha_failover.py), checked on what lands on the
aggregates topic (windows and close marks) and the late topic, and across a crash."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry

from monitoring.agents.aggregation import AggregationAgent
from monitoring.config import Settings
from monitoring.metrics.samples import series_key
from monitoring.runtime.memory import MemoryRuntime
from monitoring.wire.aggregate_encoding import AggregateDecoder, closed_through
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
DECODER = AggregateDecoder(CODEC)
SETTINGS = Settings()  # 10 s and 1 min windows, 5 s lateness, 30 s idle timeout
SAMPLES = "monitoring.metrics.samples"
AGGREGATES = "monitoring.metrics.aggregates"
LATE = "monitoring.metrics.late"
W = 10_000
NOW = 1_700_000_000_000  # in the past: a restore pulls a future watermark back
START = NOW - NOW % 60_000 - 10 * 60_000
ROOMS = "abc"


def make() -> tuple[MemoryRuntime[Any], list[CollectorRegistry]]:
    """The runtime, and the registry of each agent it made (a fresh one after a crash)."""
    registries: list[CollectorRegistry] = []

    def agent() -> AggregationAgent:
        registries.append(CollectorRegistry())
        return AggregationAgent(SETTINGS, registries[-1], CODEC)

    return MemoryRuntime(agent), registries


def produce(rt: MemoryRuntime[Any], windows: range) -> None:
    """Ten samples a second apart per room and 10 s window, on partition 0, produced now."""
    for w in windows:
        for room in ROOMS:
            labels = {"room": room}
            for i in range(10):
                rec = {"name": "temp", "value": 50.0 + w, "labels": labels,
                       "timestamp_ms": START + w * W + i * 1_000}  # fmt: skip
                value = CODEC.encode("monitoring.MetricSample", rec)
                rt.produce(SAMPLES, value, 0, series_key("temp", labels).encode(), NOW / 1000)


async def idle(rt: MemoryRuntime[Any]) -> None:
    await rt.run_until_idle()
    await rt.advance(SETTINGS.aggregation.idle_timeout.total_seconds() + 1)
    await rt.checkpoint()


def check(rt: MemoryRuntime[Any]) -> None:
    """Every 10 s window of 0-300 s once per room, with all ten samples; every mark true
    when written: no window published after a mark at or past its end."""
    seen: Counter[tuple[str, int]] = Counter()
    marks: list[int] = []
    for r in rt.records(AGGREGATES):
        a = DECODER.decode(r.value)
        assert not [m for m in marks if m >= a.window_end_ms], (a, marks[-1])
        if a.window_ms == W:
            assert a.count == 10 and a.sum == 10 * (50.0 + (a.window_start_ms - START) // W)
            seen[(a.labels["room"], a.window_end_ms - START)] += 1
        mark = closed_through(r.headers)
        if mark is not None:
            marks.append(mark)
    ends = range(W, 300_001, W)
    assert seen == Counter({(room, e): 1 for room in ROOMS for e in ends})


async def test_a_burst_after_an_idle_close_lands_in_its_windows() -> None:
    rt, registries = make()
    produce(rt, range(15))
    await idle(rt)
    idle_marks = [closed_through(r.headers) for r in rt.records(AGGREGATES)]
    assert idle_marks[-1] == START + 150_000  # not the closed minute's end, 180 s
    produce(rt, range(15, 30))
    await idle(rt)
    check(rt)
    # the minute closed idle (120-180 s) is published once; the burst's 150-179 s
    # samples are late for the minute only, and counted
    late = rt.records(LATE)
    assert Counter(dict(r.headers or [])["x-window-sizes-ms"] for r in late) == {b"60000": 90}
    assert registries[-1].get_sample_value("aggregation_late_samples_total") == 90
    minutes = [DECODER.decode(r.value) for r in rt.records(AGGREGATES)]
    closed = [(a.count, a.closed_by) for a in minutes
              if a.window_ms == 60_000 and a.window_start_ms == START + 120_000]  # fmt: skip
    assert closed == [(30, "idle")] * 3


async def test_a_crash_after_the_idle_close_changes_nothing() -> None:
    """The idle close's event time is in the checkpoint: a worker restarted after it
    sends the burst's samples where the first one did."""
    rt, _ = make()
    produce(rt, range(15))
    await idle(rt)
    await rt.crash()
    produce(rt, range(15, 30))
    await idle(rt)
    check(rt)
    assert len(rt.records(LATE)) == 90


async def test_a_transaction_marker_at_the_end_does_not_keep_the_partition_busy() -> None:
    """A transactional writer (the alert evaluator's recorded and ALERTS samples) leaves
    a marker after each commit, at the partition's end offset and never delivered: the
    partition is still quiet, and its last windows close idle."""
    rt, _ = make()
    produce(rt, range(15))
    rt.marker(SAMPLES)
    await idle(rt)
    ends = {DECODER.decode(r.value).window_end_ms - START for r in rt.records(AGGREGATES)}
    assert ends >= {140_000, 150_000}  # the last two windows, which only an idle close closes
    assert [closed_through(r.headers) for r in rt.records(AGGREGATES)][-1] == START + 150_000
