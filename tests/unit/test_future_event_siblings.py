"""Siblings of issue 13's finding 2 (a sample from the future blinds a partition): a
log record or a model event far ahead of its Kafka record's timestamp must not move the
agent's event-time windows ahead either: beyond ``aggregation.max_record_skew`` (the
bound the aggregation agent puts on samples) a log record's time is replaced by its
record's timestamp and the original kept in an attribute (logs/records.py), a model
event is dead-lettered with its reason; the on-time records after it keep publishing
their windows."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry

from monitoring.agents.logs import LogAgent
from monitoring.agents.model_metrics import ModelMetricsAgent
from monitoring.config import Settings
from monitoring.mlops.events import PREDICTION
from monitoring.runtime.memory import MemoryRuntime
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
LOGS, SAMPLES = "monitoring.logs.records", "monitoring.metrics.samples"
PREDICTIONS = "monitoring.models.predictions"
STORED = "monitoring.logs.stored"
SETTINGS = Settings()
NOW = int(time.time() * 1000)
BASE = NOW - 600_000 - NOW % 10_000
AHEAD_MS = 30 * 60_000  # under aggregation.max_future_skew (1 h), far over max_record_skew


def log(ts: int, message: str = "user logged in") -> bytes:
    return CODEC.encode(
        "monitoring.LogRecord",
        {"timestamp_ms": ts, "service": "api", "level": "info", "message": message},
    )


def stamps(rt: MemoryRuntime[Any]) -> set[int]:
    """The timestamps of every counter sample an agent published (batches or samples)."""
    out: set[int] = set()
    for r in rt.records(SAMPLES):
        rec = CODEC.decode(r.value).record
        out.update(rec["timestamps_ms"] if "timestamps_ms" in rec else [rec["timestamp_ms"]])
    return out


async def test_a_log_record_from_the_future_is_restamped_and_blinds_nothing() -> None:
    rt = MemoryRuntime(lambda: LogAgent(SETTINGS, CollectorRegistry(), CODEC))
    window = int(SETTINGS.logs.window.total_seconds() * 1000)
    ts = [BASE + i * 1_000 for i in range(60)]  # a minute of on-time records
    for i, t in enumerate(ts):
        rt.produce(LOGS, log(t), 0, b"api", t / 1000)
        if i == 5:  # produced now, stamped half an hour ahead
            rt.produce(LOGS, log(t + AHEAD_MS, "from the future"), 0, b"api", t / 1000)
    await rt.run_until_idle()
    assert not rt.dead_letters()
    [stored] = [r for r in rt.records(STORED) if b"from the future" in (r.value or b"")]
    assert b"monitoring.timestamp_original" in (stored.value or b"")
    published = stamps(rt)
    # every window the on-time records closed was published, none from the future
    closed = {t - t % window + window - 1 for t in ts[:-1] if t - t % window + window <= ts[-1]}
    assert closed <= published, sorted(closed - published)
    assert max(published) <= ts[-1]  # nothing stamped in the future


def prediction(i: int, ts: int) -> bytes:
    return CODEC.encode(PREDICTION, {
        "prediction_id": f"p{i}", "model": "churn", "version": "1", "timestamp_ms": ts,
        "predicted_class": "pos", "predicted_value": None, "latency_ms": 10.0,
        "features": {}, "labels": {},
    })  # fmt: skip


async def test_a_model_event_from_the_future_is_dead_lettered_and_blinds_nothing() -> None:
    rt = MemoryRuntime(lambda: ModelMetricsAgent(SETTINGS, CollectorRegistry(), CODEC))
    window = min(SETTINGS.aggregation.windows_ms)
    ts = [BASE + i * 1_000 for i in range(60)]
    for i, t in enumerate(ts):
        rt.produce(PREDICTIONS, prediction(i, t), 0, f"p{i}".encode(), t / 1000)
        if i == 5:  # within an hour of the wall clock, half an hour ahead of its record
            rt.produce(PREDICTIONS, prediction(999, t + AHEAD_MS), 0, b"p999", t / 1000)
    await rt.run_until_idle()
    assert [(r.key, r.reason) for r in rt.dead_letters()] == [(b"p999", "timestamp-in-future")]
    published = stamps(rt)
    closed = {t - t % window - 1 for t in ts if t - t % window > ts[0]}
    assert closed <= published, sorted(closed - published)
    assert max(published) <= ts[-1]  # nothing stamped in the future
