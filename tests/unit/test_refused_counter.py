"""Refused series are alertable in the stream (issue 13, finding 13): the aggregation
agent publishes ``monitoring_series_refused_total{partition}``, a cumulative COUNTER
checkpointed with its partition, on the samples topic; a crash and replay publish the
same values; the counter itself is never refused; the default rule fires on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from monitoring.agents.aggregation import AggregationAgent
from monitoring.alerts.history import WindowHistory, WindowRow
from monitoring.alerts.promql import compile_expr
from monitoring.config import Settings
from monitoring.metrics.aggregator import REFUSED_TOTAL, PartitionAggregator
from monitoring.metrics.checkpoint import pack_meta, unpack_meta
from monitoring.metrics.samples import Sample, series_key
from monitoring.runtime.memory import MemoryRuntime
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
SAMPLES = "monitoring.metrics.samples"
BASE = 1_700_000_040_000 - 1_700_000_040_000 % 60_000
SETTINGS = Settings(aggregation={"max_series": 2})  # type: ignore[arg-type]
RULES = Path(__file__).resolve().parents[2] / "infra" / "rules" / "pipeline.rules.yml"


def make() -> MemoryRuntime[Any]:
    return MemoryRuntime(lambda: AggregationAgent(SETTINGS, CollectorRegistry(), CODEC))


def produce(rt: MemoryRuntime[Any], host: int, ts: int) -> None:
    """One sample of ``cpu{host}`` on partition 0, produced at its event time."""
    value = CODEC.encode(
        "monitoring.MetricSample",
        {"name": "cpu", "value": 1.0, "timestamp_ms": ts, "labels": {"host": str(host)}},
    )
    rt.produce(SAMPLES, value, 0, series_key("cpu", {"host": str(host)}).encode(), ts / 1000)


def counters(rt: MemoryRuntime[Any]) -> list[tuple[int, float]]:
    """(timestamp, value) of every counter sample published, in order."""
    out = []
    for r in rt.records(SAMPLES):
        rec = CODEC.decode(r.value).record
        assert rec["name"] == REFUSED_TOTAL and rec["labels"] == {"partition": "0"}
        assert rec["kind"] == "COUNTER"
        assert r.key == b'monitoring_series_refused_total{partition="0"}'
        out.append((rec["timestamp_ms"], rec["value"]))
    return out


def exact(points: list[tuple[int, float]]) -> bool:
    """Pairs (count before, count now) at one timestamp; second ``s`` refuses one
    sample, in its third message, so a count published in second ``s`` is ``s``
    (published at its first message) or ``s + 1`` (at its third)."""
    pairs = list(zip(points[::2], points[1::2], strict=True))
    return all(
        t0 == t1 and v0 < v1 and (t1 - BASE) // 1000 <= v1 <= (t1 - BASE) // 1000 + 1
        for (t0, v0), (t1, v1) in pairs
    )


def load(rt: MemoryRuntime[Any], seconds: range) -> None:
    """Each second: hosts 0 and 1 (kept) and host 2+second%3 beyond the limit."""
    for s in seconds:
        for host in (0, 1, 2 + s % 3):
            produce(rt, host, BASE + s * 1000)


async def test_each_change_is_published_once_a_window_as_before_and_after() -> None:
    rt = make()
    load(rt, range(30))
    await rt.run_until_idle()
    assert counters(rt) == [
        (BASE, 0.0), (BASE, 1.0),  # the first refusal, in second 0's third message
        (BASE + 10_000, 1.0), (BASE + 10_000, 10.0),  # then at most once per 10 s
        (BASE + 20_000, 10.0), (BASE + 20_000, 20.0),
    ]  # fmt: skip
    await rt.advance(SETTINGS.aggregation.idle_timeout.total_seconds() + 1)
    await rt.checkpoint()
    assert counters(rt)[-2:] == [(BASE + 30_000, 20.0), (BASE + 30_000, 30.0)]  # when idle
    assert len(rt.dead_letters()) == 30  # the refused samples themselves


async def test_nothing_is_published_while_nothing_is_refused() -> None:
    rt = make()
    for s in range(30):
        for host in (0, 1):
            produce(rt, host, BASE + s * 1000)
    await rt.run_until_idle()
    await rt.advance(SETTINGS.aggregation.idle_timeout.total_seconds() + 1)
    await rt.checkpoint()
    assert counters(rt) == []


async def test_a_crash_and_replay_neither_restart_nor_double_the_count() -> None:
    rt = make()
    load(rt, range(25))
    await rt.run_until_idle()  # checkpointed: refused_count 25 in the partition record
    load(rt, range(25, 60))
    await rt.poll(40)  # read and published, not checkpointed
    await rt.crash(delivered=3)  # a few outputs reached the broker; the rest replayed
    await rt.run_until_idle()
    await rt.advance(SETTINGS.aggregation.idle_timeout.total_seconds() + 1)
    await rt.checkpoint()
    points = counters(rt)
    assert exact(points[:-2])  # published with messages
    assert points[-1][1] == 60.0 and points[-1][0] > BASE + 59_000  # the rest, when idle
    after = points[[ts for ts, _ in points].index(BASE + 20_000) + 2 :]
    assert min(v for _, v in after) >= 20.0  # restored, not restarted at 0


def test_the_count_and_what_was_published_survive_the_partition_record() -> None:
    agg = PartitionAggregator([10_000], 0, max_series=1)
    kept, _ = agg.admit([Sample("a", "a", {}, 1, 1.0), Sample("b", "b", {}, 1, 1.0)])
    agg.process(0, kept)
    assert len(agg.refused_samples(0, 1, 10_000)) == 2
    agg.admit([Sample("c", "c", {}, 2, 1.0)])  # refused, not yet published
    meta = unpack_meta(pack_meta(agg.checkpoint().meta))
    again = PartitionAggregator([10_000], 0, max_series=1)
    again.restore(meta, [])
    assert (again.refused_count, again.refused_published) == (2, 1)
    assert [s.value for s in again.refused_samples(0, 2, 10_000)] == [1.0, 2.0]


def test_the_counter_is_admitted_when_the_partition_is_full() -> None:
    agg = PartitionAggregator([10_000], 0, max_series=1, max_series_per_metric=1)
    kept, refused = agg.admit([Sample("a", "a", {}, 1, 1.0)])
    agg.process(0, kept)
    agg.admit([Sample("c", "c", {}, 1, 1.0)])
    counter = agg.refused_samples(0, 5, 10_000)[1]
    kept, refused = agg.admit([counter, Sample("b", "b", {}, 1, 1.0)])
    assert refused == ["b"] and [s.name for s in kept] == [REFUSED_TOTAL]  # type: ignore[union-attr]


def test_the_default_rule_fires_when_the_counter_increases() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    rule = next(r for r in rules if r["alert"] == "SeriesRefused")
    expr = compile_expr(rule["expr"])
    h = WindowHistory(10_000, retention_ms=600_000)
    labels = {"partition": "0"}
    # a first change alone in its window (0 -> 5), then a change 0:50 later (5 -> 9)
    for end_s, values in [(10, [0.0, 5.0]), (60, [5.0, 9.0])]:
        h.add(WindowRow.of(REFUSED_TOTAL, labels, end_s * 1000, values))

    def fired(t_s: int) -> list[tuple[dict[str, str], float]]:
        return [(dict(lb), v) for lb, v in expr.evaluate(h, t_s * 1000)]

    assert fired(10) == [({"partition": "0"}, 5.0)]  # the first refusals alert at once
    assert fired(50) == [({"partition": "0"}, 5.0)]  # for a minute
    assert fired(60) == [({"partition": "0"}, 9.0)]  # both changes in the last minute
    assert fired(130) == []
