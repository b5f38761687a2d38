"""The anomaly agent in process, on the in-memory runtime: a score per window, an event
for a spike, poison dead-lettered, and the same scores after a crash anywhere."""

from __future__ import annotations

import math
from typing import Any

from fixtures.agents import crash_plans, run_with_crashes
from hypothesis import given, settings
from prometheus_client import CollectorRegistry

from monitoring.agents.anomaly import AnomalyAgent
from monitoring.anomaly import DEFAULT_DETECTOR
from monitoring.anomaly.registry import get_spec
from monitoring.config import Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.runtime.memory import MemoryRuntime
from monitoring.wire.aggregate_encoding import AggregateDecoder, AggregateEncoder
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
ENCODER, DECODER = AggregateEncoder(CODEC), AggregateDecoder(CODEC)
AGGREGATES = "monitoring.metrics.aggregates"
ANOMALIES = "monitoring.anomalies"
W = 10_000
BASE = 1_700_000_000_000 - 1_700_000_000_000 % W
N, SPIKE = 120, 100
SETTINGS = Settings(anomaly={"warmup": 30})  # type: ignore[arg-type]


def make() -> MemoryRuntime[Any]:
    return MemoryRuntime(lambda: AnomalyAgent(SETTINGS, CollectorRegistry(), CODEC))


def window(name: str, room: str, i: int, value: float, window_ms: int = W) -> bytes:
    labels = {"room": room}
    start = BASE + i * window_ms
    stats = [value] * 8  # sum, min, max, mean, last, p50, p90, p99 of one point
    agg = Aggregate(
        series_key(name, labels), name, labels, window_ms, start, start + window_ms, 1, *stats
    )
    return ENCODER.encode(agg)


def produce(rt: MemoryRuntime[Any]) -> None:
    """Two series on partition 0 (the spike in ``a``), and 1 min windows (not scored)."""
    for i in range(N):
        base = 50 + 10 * math.sin(i / 5) + (i * 7919 % 13) / 13
        rt.produce(AGGREGATES, window("temp", "a", i, base + (400 if i == SPIKE else 0)))
        rt.produce(AGGREGATES, window("temp", "b", i, base))
        if i % 6 == 0:
            rt.produce(AGGREGATES, window("temp", "a", i // 6, base, 60_000))


def scores(rt: MemoryRuntime[Any]) -> dict[tuple[str, int], float]:
    """(series of the score, window start) -> score; a rewrite must not change it."""
    out: dict[tuple[str, int], float] = {}
    for r in rt.records(AGGREGATES):
        a = DECODER.decode(r.value)
        if a.name == "anomaly_score":
            key = (a.series, a.window_start_ms)
            assert out.setdefault(key, a.mean) == a.mean, key
    return out


async def test_every_window_is_scored_and_the_spike_is_an_event() -> None:
    rt = make()
    produce(rt)
    await rt.run_until_idle()
    got = scores(rt)
    assert len(got) == 2 * N  # both series, every 10 s window, not the 1 min ones
    events = [CODEC.decode(v).record for v in rt.values(ANOMALIES)]
    assert BASE + SPIKE * W in {e["timestamp_ms"] for e in events}
    assert {e["labels"]["room"] for e in events if e["timestamp_ms"] == BASE + SPIKE * W} == {"a"}
    assert rt.metric("agent_items_total") == 2 * N


async def test_poison_is_dead_lettered_and_scoring_goes_on() -> None:
    rt = make()
    good = window("temp", "a", 0, 1.0)
    sample = CODEC.encode(
        "monitoring.MetricSample",
        {"name": "x", "labels": {}, "value": 1.0, "timestamp_ms": BASE},
    )
    poison = {
        b"garbage": b"\x00\xff not avro",
        b"empty": b"",
        b"null": None,
        b"sample": sample,
        b"future": good[:2] + bytes(8) + good[10:],
        b"truncated": good[:-3],
    }
    for key, value in poison.items():
        rt.produce(AGGREGATES, value, key=key)
    produce(rt)
    await rt.run_until_idle()
    reasons = {r.key: r.reason for r in rt.dead_letters()}
    assert set(reasons) == set(poison)
    assert reasons[b"sample"] == "unexpected-record"
    assert reasons[b"future"] == "unknown-fingerprint"
    assert len(scores(rt)) == 2 * N


@settings(max_examples=15, deadline=None)
@given(cuts=crash_plans(260, 300))
async def test_a_crash_anywhere_gives_the_same_scores(
    cuts: list[tuple[int, list[int], int]],
) -> None:
    clean = make()
    produce(clean)
    await clean.run_until_idle()
    rt = make()
    produce(rt)
    await run_with_crashes(rt, cuts)
    await rt.run_until_idle()
    assert scores(rt) == scores(clean)


async def test_events_start_at_the_detectors_alert_level_unless_a_threshold_is_set() -> None:
    """Unset, ``anomaly.threshold`` is the detector's alert level (the cross-validated
    decision threshold): every warm point scoring at least it is an event; a set
    threshold is used as given."""
    level = get_spec(DEFAULT_DETECTOR).alert_level
    for threshold, expect in ((None, level), (0.9, 0.9)):
        conf = Settings(anomaly={"warmup": 30, "threshold": threshold})  # type: ignore[arg-type]
        rt = MemoryRuntime(lambda c=conf: AnomalyAgent(c, CollectorRegistry(), CODEC))
        produce(rt)
        await rt.run_until_idle()
        events = [CODEC.decode(v).record for v in rt.values(ANOMALIES)]
        assert events and {e["threshold"] for e in events} == {expect}
        assert {(e["series"], e["timestamp_ms"]) for e in events} == {
            (series_key("temp", {"room": room}), ts)
            for (key, ts), s in scores(rt).items()
            for room in ("a", "b")
            if key == series_key("anomaly_score", {"room": room, "metric": "temp"})
            and s >= expect
            and ts >= BASE + 30 * W
        }
