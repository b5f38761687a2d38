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
from monitoring.streams.codec import AvroCodec

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
    """Each value counts the refused samples up to its message: second ``s`` refuses
    one sample, in its third message, so a point stamped in second ``s`` says ``s``
    (published before the refusal) or ``s + 1``."""
    return all((ts - BASE) // 1000 <= v <= (ts - BASE) // 1000 + 1 for ts, v in points)


def load(rt: MemoryRuntime[Any], seconds: range) -> None:
    """Each second: hosts 0 and 1 (kept) and host 2+second%3 beyond the limit."""
    for s in seconds:
        for host in (0, 1, 2 + s % 3):
            produce(rt, host, BASE + s * 1000)


async def test_the_counter_is_published_every_window_and_cumulative() -> None:
    rt = make()
    load(rt, range(30))
    await rt.run_until_idle()
    # one point per 10 s of record time, at the first message of its slot
    assert counters(rt) == [(BASE, 0.0), (BASE + 10_000, 10.0), (BASE + 20_000, 20.0)]
    await rt.advance(SETTINGS.aggregation.idle_timeout.total_seconds() + 1)
    await rt.checkpoint()
    assert counters(rt)[-1] == (BASE + 30_000, 30.0)  # the rest, in its next slot
    assert len(rt.dead_letters()) == 30  # the refused samples themselves


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
    assert exact(points[:-1])  # published with messages
    assert points[-1][1] == 60.0 and points[-1][0] > BASE + 59_000  # the rest, when idle
    after = points[[ts for ts, _ in points].index(BASE + 20_000) + 1 :]
    assert min(v for _, v in after) >= 25.0  # restored, not restarted at 0


def test_the_count_survives_the_partition_record() -> None:
    agg = PartitionAggregator([10_000], 0, max_series=1)
    agg.admit([Sample("a", "a", {}, 1, 1.0), Sample("b", "b", {}, 1, 1.0)])
    meta = unpack_meta(pack_meta(agg.checkpoint().meta))
    again = PartitionAggregator([10_000], 0, max_series=1)
    again.restore(meta, [])
    assert again.refused_count == 1


def test_the_counter_is_admitted_when_the_partition_is_full() -> None:
    agg = PartitionAggregator([10_000], 0, max_series=1, max_series_per_metric=1)
    kept, refused = agg.admit([Sample("a", "a", {}, 1, 1.0)])
    agg.process(0, kept)
    counter = agg.refused_sample(0, 5, 10_000)
    assert counter is not None
    kept, refused = agg.admit([counter, Sample("b", "b", {}, 1, 1.0)])
    assert refused == ["b"] and [s.name for s in kept] == [REFUSED_TOTAL]  # type: ignore[union-attr]


def test_the_default_rule_fires_when_the_counter_increases() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    rule = next(r for r in rules if r["alert"] == "SeriesRefused")
    expr = compile_expr(rule["expr"])
    h = WindowHistory(10_000, retention_ms=600_000)
    labels = {"partition": "0"}
    for end_s, value in [(10, 5.0), (20, 5.0), (30, 5.0), (40, 9.0), (50, 9.0)]:
        h.add(WindowRow.of(REFUSED_TOTAL, labels, end_s * 1000, [value]))
    assert list(expr.evaluate(h, 30_000)) == []  # steady: nothing new refused
    fired = list(expr.evaluate(h, 40_000))
    assert [(dict(lb), v) for lb, v in fired] == [({"partition": "0"}, 4.0)]
