"""The model metrics agent in process, on the in-memory runtime: the counters' totals
against the events, poison dead-lettered, and the same counters after a crash anywhere."""

from __future__ import annotations

import random
import time
from typing import Any

from fixtures.agents import crash_plans, run_with_crashes
from hypothesis import given, settings
from prometheus_client import CollectorRegistry

from monitoring.agents.model_metrics import ModelMetricsAgent
from monitoring.config import Settings
from monitoring.mlops.events import LABEL, PREDICTION
from monitoring.runtime.memory import MemoryRuntime
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
PREDICTIONS, LABELS = "monitoring.models.predictions", "monitoring.models.labels"
SAMPLES = "monitoring.metrics.samples"
SETTINGS = Settings()
NOW = int(time.time() * 1000)
BASE = NOW - 3_600_000 - NOW % 10_000
COUNTERS = ("model_predictions_total", "model_correct_sum", "model_correct_count")


def make() -> MemoryRuntime[Any]:
    return MemoryRuntime(lambda: ModelMetricsAgent(SETTINGS, CollectorRegistry(), CODEC))


def events(n: int = 200, seed: int = 3) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, int]]:
    """Predictions (one a second) and labels (2-20 s later, 10 % never), in time order;
    and the totals the counters must reach."""
    rng = random.Random(seed)
    timed: list[tuple[int, str, dict[str, Any]]] = []
    want = {"model_predictions_total": n, "model_correct_sum": 0, "model_correct_count": 0}
    for i in range(n):
        ts = BASE + i * 1_000
        guess = rng.choice(["pos", "neg"])
        timed.append((ts, PREDICTIONS, {
            "prediction_id": f"p{i}", "model": "churn", "version": "1", "timestamp_ms": ts,
            "predicted_class": guess, "predicted_value": None, "latency_ms": 10.0,
            "features": {"x": rng.gauss(0, 1)}, "labels": {},
        }))  # fmt: skip
        if rng.random() < 0.1:
            continue
        truth = guess if rng.random() < 0.8 else ("neg" if guess == "pos" else "pos")
        lts = ts + rng.randint(2_000, 20_000)
        timed.append((lts, LABELS, {"prediction_id": f"p{i}", "timestamp_ms": lts,
                                    "true_class": truth, "true_value": None}))  # fmt: skip
        want["model_correct_count"] += 1
        want["model_correct_sum"] += truth == guess
    timed.sort(key=lambda e: e[0])
    return [(topic, rec) for _, topic, rec in timed], want


def produce(rt: MemoryRuntime[Any], evs: list[tuple[str, dict[str, Any]]]) -> None:
    for topic, rec in evs:
        schema = PREDICTION if topic == PREDICTIONS else LABEL
        rt.produce(topic, CODEC.encode(schema, rec), 0, rec["prediction_id"].encode())


def counters(rt: MemoryRuntime[Any]) -> dict[tuple[str, int], float]:
    """(counter series, timestamp) -> value; a repeat (a replay) must not change it."""
    out: dict[tuple[str, int], float] = {}
    for r in rt.records(SAMPLES):
        rec = CODEC.decode(r.value).record
        name = rec.get("name") or rec["series"]["name"]
        if name in COUNTERS:
            key = (r.key.decode() if r.key else "", rec["timestamp_ms"])
            assert out.setdefault(key, rec["value"]) == rec["value"], key
    return out


def totals(c: dict[tuple[str, int], float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (series, _), v in c.items():
        name = series.split("{", 1)[0]
        out[name] = max(out.get(name, 0.0), v)
    return out


async def finish(rt: MemoryRuntime[Any]) -> None:
    await rt.run_until_idle()
    await rt.advance(SETTINGS.aggregation.idle_timeout.total_seconds() + 1)
    await rt.checkpoint()


async def test_the_counters_reach_the_totals_of_the_events() -> None:
    evs, want = events()
    rt = make()
    produce(rt, evs)
    await finish(rt)
    assert totals(counters(rt)) == want
    assert rt.dead_letters() == []


async def test_poison_is_dead_lettered_and_the_counts_stay_exact() -> None:
    evs, want = events(60)
    rt = make()
    good = CODEC.encode(PREDICTION, evs[0][1])
    sample = CODEC.encode(
        "monitoring.MetricSample",
        {"name": "x", "labels": {}, "value": 1.0, "timestamp_ms": BASE},
    )
    poison = {
        b"garbage": (b"\x00\xff not avro", "bad-marker"),
        b"empty": (b"", "truncated"),
        b"null": (None, "not-bytes"),
        b"sample": (sample, "unexpected-record"),
        b"future": (good[:2] + bytes(8) + good[10:], "unknown-fingerprint"),
        b"truncated": (good[:-3], "bad-body"),
    }
    produce(rt, evs[:30])
    for topic in (PREDICTIONS, LABELS):
        for key, (value, _) in poison.items():
            rt.produce(topic, value, 0, key + topic[-1:].encode())
    produce(rt, evs[30:])
    await finish(rt)
    got = {r.key: r.reason for r in rt.dead_letters()}
    assert got == {
        k + t[-1:].encode(): r for k, (_, r) in poison.items() for t in (PREDICTIONS, LABELS)
    }
    assert totals(counters(rt)) == want


@settings(max_examples=15, deadline=None)
@given(cuts=crash_plans(380, 100))
async def test_a_crash_anywhere_gives_the_same_counters(
    cuts: list[tuple[int, list[int], int]],
) -> None:
    evs, want = events()
    clean = make()
    produce(clean, evs)
    await finish(clean)
    rt = make()
    produce(rt, evs)
    await run_with_crashes(rt, cuts)
    await finish(rt)
    assert counters(rt) == counters(clean)
    assert totals(counters(rt)) == want
