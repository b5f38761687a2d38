"""The log agent in process, on the in-memory runtime: stored logs and counters, idle
services closed on the runtime's clock, poison dead-lettered, and the same outputs after
a crash anywhere."""

from __future__ import annotations

import time
from typing import Any

from fixtures.agents import crash_plans, run_with_crashes
from hypothesis import given, settings
from prometheus_client import CollectorRegistry

from monitoring.agents.logs import LogAgent
from monitoring.config import Settings
from monitoring.runtime.memory import MemoryRuntime
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
LOG = "monitoring.LogRecord"
LOGS, SAMPLES = "monitoring.logs.records", "monitoring.metrics.samples"
STORED, TEMPLATES = "monitoring.logs.stored", "monitoring.logs.templates"
SETTINGS = Settings()
NOW = int(time.time() * 1000)
BASE = NOW - 600_000 - NOW % 10_000
N = 120


def make() -> MemoryRuntime[Any]:
    return MemoryRuntime(lambda: LogAgent(SETTINGS, CollectorRegistry(), CODEC))


def record(i: int, service: str = "api") -> bytes:
    level = "error" if i % 10 == 0 else "info"
    msg = f"user {i % 7} logged in from 10.0.0.{i % 5}" if i % 3 else f"disk {i} full"
    return CODEC.encode(
        LOG, {"timestamp_ms": BASE + i * 500, "service": service, "level": level, "message": msg}
    )


def produce(rt: MemoryRuntime[Any], n: int = N) -> None:
    for i in range(n):
        service = "api" if i % 4 else "db"
        rt.produce(LOGS, record(i, service), 0, service.encode(), (BASE + i * 500) / 1000)


def points(value: bytes | None) -> list[tuple[str, int, float]]:
    """(series, timestamp, value) of a ``MetricBatch`` the agent published."""
    rec = CODEC.decode(value).record
    return [
        (rec["series"][i], t, v)
        for i, t, v in zip(rec["series_index"], rec["timestamps_ms"], rec["values"], strict=True)
    ]


def outputs(rt: MemoryRuntime[Any]) -> dict[str, Any]:
    """The distinct stored logs and template events (a replay repeats them alike), and
    the counter samples per series and timestamp (a repeat must carry the same value)."""
    out: dict[str, Any] = {
        t: {(r.key, r.value) for r in rt.records(t)} for t in (STORED, TEMPLATES)
    }
    counters: dict[Any, Any] = {}
    for r in rt.records(SAMPLES):
        for series, ts, v in points(r.value):
            assert counters.setdefault((series, ts), v) == v, (series, ts)
    out[SAMPLES] = counters
    return out


def totals(rt: MemoryRuntime[Any]) -> dict[str, float]:
    """The last value of each ``log_events_total`` series (counters only grow)."""
    last: dict[str, float] = {}
    for r in rt.records(SAMPLES):
        for series, _, v in points(r.value):
            last[series] = max(last.get(series, 0.0), v)
    return {k: v for k, v in last.items() if k.startswith("log_events_total")}


async def finish(rt: MemoryRuntime[Any]) -> None:
    await rt.run_until_idle()
    await rt.advance(SETTINGS.logs.idle_timeout.total_seconds() + 1)
    await rt.checkpoint()


async def test_stored_logs_templates_and_counters_then_idle_services_close() -> None:
    rt = make()
    produce(rt)
    await rt.run_until_idle()
    assert len(rt.records(STORED)) == N and rt.records(TEMPLATES)
    before = totals(rt)
    await rt.advance(SETTINGS.logs.idle_timeout.total_seconds() + 1)
    await rt.checkpoint()
    after = totals(rt)
    assert after != before  # the counts waiting for a later record were published
    by_level: dict[str, float] = {}
    for series, v in after.items():
        level = "ERROR" if 'level="ERROR"' in series else "INFO"
        by_level[level] = by_level.get(level, 0) + v
    assert by_level == {"ERROR": N / 10, "INFO": N - N / 10}
    assert rt.metric("agent_items_total") == N


async def test_poison_is_dead_lettered_and_the_rest_stored() -> None:
    rt = make()
    good = record(1)
    poison = {
        b"garbage": (b"\x00\xff not avro", "bad-marker"),
        b"null": (None, "not-bytes"),
        b"future": (good[:2] + bytes(8) + good[10:], "unknown-fingerprint"),
        b"truncated": (good[:-3], "truncated"),  # the log reader names it so
    }
    produce(rt, 20)
    for key, (value, _) in poison.items():
        rt.produce(LOGS, value, 0, key, BASE / 1000)
    await finish(rt)
    assert {r.key: r.reason for r in rt.dead_letters()} == {
        k: reason for k, (_, reason) in poison.items()
    }
    assert len(rt.records(STORED)) == 20


@settings(max_examples=15, deadline=None)
@given(cuts=crash_plans(N, 60))
async def test_a_crash_anywhere_gives_the_same_outputs(
    cuts: list[tuple[int, list[int], int]],
) -> None:
    clean = make()
    produce(clean)
    await finish(clean)
    rt = make()
    produce(rt)
    await run_with_crashes(rt, cuts)
    await finish(rt)
    assert outputs(rt) == outputs(clean)
