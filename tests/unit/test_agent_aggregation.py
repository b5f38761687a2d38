"""The aggregation agent in process, on the in-memory runtime: exact windows against an
oracle computed here, idle close, lateness, cardinality, poison, and crashes anywhere."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fixtures.agents import crash_plans, run_with_crashes
from hypothesis import given, settings
from prometheus_client import CollectorRegistry

from monitoring.agents.aggregation import AggregationAgent
from monitoring.config import Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.runtime.memory import MemoryRuntime
from monitoring.wire.aggregate_encoding import AggregateDecoder
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
DECODER = AggregateDecoder(CODEC)
SAMPLE = "monitoring.MetricSample"
BASE = 1_700_000_040_000 - 1_700_000_040_000 % 60_000
SERIES = [("temp", {"room": str(i)}) for i in range(6)]
KEYS = [series_key(n, lb) for n, lb in SERIES]
PARTITIONS = 3
SETTINGS = Settings()
SAMPLES = "monitoring.metrics.samples"
AGGREGATES = "monitoring.metrics.aggregates"
LATE = "monitoring.metrics.late"


def make(settings: Settings = SETTINGS) -> MemoryRuntime[Any]:
    registry = CollectorRegistry()  # the agent's own metrics: one registry per agent
    return MemoryRuntime(lambda: AggregationAgent(settings, CollectorRegistry(), CODEC), registry)


def single(i: int, ts: int, value: float) -> bytes:
    name, labels = SERIES[i]
    return CODEC.encode(
        SAMPLE, {"name": name, "value": value, "timestamp_ms": ts, "labels": labels}
    )


def produce(rt: MemoryRuntime[Any], points: list[tuple[int, int, float]]) -> None:
    """(series number, event time, value), each series on one partition, stamped as
    produced at its event time."""
    for i, ts, v in points:
        rt.produce(SAMPLES, single(i, ts, v), i % PARTITIONS, KEYS[i].encode(), ts / 1000)


def stream(n_ticks: int = 40, seed: int = 7) -> list[tuple[int, int, float]]:
    """Every series every 2.5 s, values from a seeded sequence."""
    out, x = [], seed
    for t in range(n_ticks):
        for i in range(len(SERIES)):
            x = (x * 1103515245 + 12345) % 2**31
            out.append((i, BASE + t * 2_500 + i, float(x % 1000) / 10))
    return out


def oracle(points: list[tuple[int, int, float]]) -> dict[tuple[str, int, int], tuple]:
    """(series, window, start) -> (count, sum, min, max, last) of the points."""
    by: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    for i, ts, v in points:
        for w in SETTINGS.aggregation.windows_ms:
            by[(KEYS[i], w, ts - ts % w)].append(v)
    return {k: (len(v), sum(v), min(v), max(v), v[-1]) for k, v in by.items()}


def counter_oracle(points: list[tuple[int, int, float]]) -> dict[tuple[str, int, int], tuple]:
    """(series, window, start) -> (first, increase, resets): each series' samples are in
    order here, each steps from the one before (a drop counts from 0)."""
    out: dict[tuple[str, int, int], list[Any]] = {}
    prev: dict[int, float] = {}
    for i, ts, v in points:
        p = prev.get(i)
        step = 0.0 if p is None else (v if v < p else v - p)
        prev[i] = v
        for w in SETTINGS.aggregation.windows_ms:
            c = out.setdefault((KEYS[i], w, ts - ts % w), [v, 0.0, 0])
            c[1] += step
            c[2] += p is not None and v < p
    return {k: tuple(c) for k, c in out.items()}


def counters(aggs: dict[tuple[str, int, int], Aggregate]) -> dict[tuple[str, int, int], tuple]:
    return {k: (a.first, a.increase, a.resets) for k, a in aggs.items()}


def latest(rt: MemoryRuntime[Any]) -> dict[tuple[str, int, int], Aggregate]:
    """The aggregates topic as ``aggregates FINAL`` sees it; a key rewritten (a replay)
    must be rewritten with the same values."""
    out: dict[tuple[str, int, int], Aggregate] = {}
    for r in rt.records(AGGREGATES):
        a = DECODER.decode(r.value)
        key = (a.series, a.window_ms, a.window_start_ms)
        if key in out:
            assert out[key].to_record() == a.to_record(), key
        out[key] = a
    return out


def summary(aggs: dict[tuple[str, int, int], Aggregate]) -> dict[tuple[str, int, int], tuple]:
    return {k: (a.count, a.sum, a.min, a.max, a.last) for k, a in aggs.items()}


async def finish(rt: MemoryRuntime[Any]) -> None:
    """Read everything, then stay idle long enough for every window to close."""
    await rt.run_until_idle()
    await rt.advance(SETTINGS.aggregation.idle_timeout.total_seconds() + 1)
    await rt.checkpoint()


async def test_every_window_exact_then_idle_close() -> None:
    rt = make()
    points = stream()
    produce(rt, points)
    await rt.run_until_idle()
    closed_by_watermark = len(latest(rt))
    assert 0 < closed_by_watermark < len(oracle(points))
    await finish(rt)
    got = latest(rt)
    assert {k: v[:4] for k, v in summary(got).items()} == {
        k: v[:4] for k, v in oracle(points).items()
    }
    assert summary(got) == oracle(points)
    assert counters(got) == counter_oracle(points)
    assert {a.closed_by for a in got.values()} == {"watermark", "idle"}
    assert rt.metric("agent_items_total") == len(points)
    assert rt.dead_letters() == []


async def test_a_late_sample_goes_to_the_late_topic() -> None:
    rt = make()
    points = stream(20)
    produce(rt, points)
    produce(rt, [(0, BASE + 1, 999.0)])  # far behind partition 0's watermark
    await rt.run_until_idle()
    late = rt.records(LATE)
    assert len(late) == 1 and late[0].key == KEYS[0].encode()
    # late for the 10 s window only: the minute it is in is still open
    assert dict(late[0].headers or [])["x-window-sizes-ms"] == b"10000"
    await finish(rt)
    got = latest(rt)
    assert got[(KEYS[0], 10_000, BASE)].max < 999.0 and got[(KEYS[0], 60_000, BASE)].max == 999.0


async def test_poison_is_dead_lettered_with_its_reason_and_the_rest_is_exact() -> None:
    rt = make()
    points = stream(20)
    produce(rt, points[:30])
    good = single(0, BASE, 1.0)
    poison = {
        b"garbage": (b"\x00\xff not avro", "bad-marker"),
        b"empty": (b"", "truncated"),
        b"null": (None, "not-bytes"),
        b"future-schema": (good[:2] + bytes(8) + good[10:], "unknown-fingerprint"),
        b"truncated": (good[:-3], "bad-body"),
        b"ahead": (single(1, BASE + 3_600_000, 1.0), "timestamp-in-future"),
    }
    for key, (value, _) in poison.items():
        rt.produce(SAMPLES, value, 0, key, BASE / 1000)
    produce(rt, points[30:])
    await finish(rt)
    got = {r.key: r.reason for r in rt.dead_letters()}
    assert got == {k: reason for k, (_, reason) in poison.items()}
    assert summary(latest(rt)) == oracle(points)


async def test_new_series_over_the_limit_are_refused_and_counted() -> None:
    limited = Settings(aggregation={"max_series": 1})  # type: ignore[arg-type]
    rt = make(limited)
    points = [(i, BASE + i, 1.0) for i in (0, 3)]  # both on partition 0
    produce(rt, points)
    await finish(rt)
    assert [r.reason for r in rt.dead_letters()] == ["cardinality"]
    assert {k[0] for k in latest(rt)} == {KEYS[0]}
    assert rt.metric("agent_dead_letters_total", reason="cardinality") == 1


@settings(max_examples=25, deadline=None)
@given(cuts=crash_plans(240, 400))
async def test_a_crash_anywhere_gives_the_same_windows(
    cuts: list[tuple[int, list[int], int]],
) -> None:
    """SIGKILL after any message, with any part of what was not flushed delivered, with
    or without a checkpoint just before: every window is exact, and a window published
    again by the replay is published with the same values."""
    points = stream()
    rt = make()
    produce(rt, points)
    await run_with_crashes(rt, cuts)
    await finish(rt)
    assert summary(latest(rt)) == oracle(points)
    assert counters(latest(rt)) == counter_oracle(points)  # the carry survives crashes
