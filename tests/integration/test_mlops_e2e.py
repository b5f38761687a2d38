"""End to end: a simulated classifier's predictions and delayed labels -> model metrics
agent -> samples topic -> aggregation agent -> store, on the real broker and chDB.

The input feature ``x1`` drifts (mean 0 -> 1.5) at a known time, and the true concept
moves further (its boundary from 0 to 3), so the model (which predicts ``pos`` when
x1 > 0) falls from about 85 % accuracy to about 15 % after the drift; ``x2`` stays
stationary. Labels come 2-30 s after their prediction, some before their prediction,
in a locally shuffled order, and 5 % never come.

Checked from ``aggregates FINAL``, against values computed here:

- ``model_correct``: every 10 s and 1 min window's count and mean equal the number of
  labels and the accuracy of that window (by label time) exactly;
- ``model_latency_ms``: 10 s windows (at most 256 values) have the exact p50 / p99
  (rank floor(q (n - 1))), 1 min windows within the sketch's 1 % relative accuracy;
- ``model_predictions``: window sums equal the predictions per window;
- ``model_feature_drift{feature="x1"}``: max 0 in every window before the drift, 1 in a
  window starting no later than DRIFT_DELAY_MS after it; ``x2`` never reaches 1;
- the alert evaluator (``monitoring alerts evaluate``) with the rule
  ``avg_over_time(model_correct[1m]) < 0.7`` (over at least 100 labels) fires exactly
  once, at the first window end where the last minute's accuracy (computed here) is
  below 0.7, after the drift;
- the three bad events of ``produce_bad`` are dead letters with their reasons.

The second test adds a worker at a third of the stream and stops the first (SIGTERM)
at two thirds: the same checks hold exactly.
"""

from __future__ import annotations

import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from monitoring.alerts.model import Alert
from monitoring.deploy import LocalDeployment as Pipeline
from monitoring.mlops.events import PREDICTION
from monitoring.streams.admin import ensure_topics
from monitoring.streams.alert_encoding import from_record
from monitoring.streams.codec import AvroCodec
from monitoring.streams.model_events import ModelEventsProducer
from monitoring.streams.topics import ALERTS, DEAD_LETTER, MODEL_LABELS, PREDICTIONS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_PREDICTIONS = 12_000
STEP_MS = 100  # one prediction every 100 ms of event time: 20 minutes
DRIFT_AT = 6_000  # index of the first drifted prediction
DRIFT_DELAY_MS = 120_000  # the first drift alarm's window starts at most this after it
MODEL = {"model": "churn", "version": "7"}
W10, W60 = 10_000, 60_000
ACCURACY_THRESHOLD = 0.7
MIN_LABELS = 100  # the rule ignores minutes with fewer labels (the stream's first seconds)
RULES = f"""
groups:
  - name: models
    rules:
      - alert: ModelAccuracyLow
        expr: >-
          avg_over_time(model_correct[1m]) < {ACCURACY_THRESHOLD}
          and count_over_time(model_correct[1m]) >= {MIN_LABELS}
        labels: {{severity: page}}
"""


def simulate(start_ms: int) -> tuple[list[tuple[str, dict]], int]:
    """Events in production order (("p", kwargs) or ("l", kwargs)) and the drift time."""
    rng = random.Random(20261126)
    timed: list[tuple[int, int, str, dict]] = []
    for i in range(N_PREDICTIONS):
        ts = start_ms + i * STEP_MS
        drifted = i >= DRIFT_AT
        x1 = rng.gauss(1.5 if drifted else 0.0, 1.0)
        x2 = rng.gauss(10.0, 2.0)
        guess = "pos" if x1 > 0 else "neg"
        truth = "pos" if x1 - (3.0 if drifted else 0.0) + rng.gauss(0, 0.5) > 0 else "neg"
        pid = f"req-{i}"
        pred = {
            "prediction_id": pid, "model": MODEL["model"], "version": MODEL["version"],
            "timestamp_ms": ts, "predicted_class": guess,
            "latency_ms": rng.randint(8, 400) / 8, "features": {"x1": x1, "x2": x2},
        }  # fmt: skip
        timed.append((ts, 0, "p", pred))
        if rng.random() < 0.05:
            continue  # never labelled
        label = {"prediction_id": pid, "true_class": truth}
        if rng.random() < 0.03:  # the label overtakes its prediction
            label["timestamp_ms"] = ts + 1
            timed.append((ts, -1, "l", label))
        else:
            label["timestamp_ms"] = ts + rng.randint(2_000, 30_000)
            timed.append((label["timestamp_ms"], 1, "l", label))
    timed.sort(key=lambda e: (e[0], e[1]))
    events = [(kind, kw) for _, _, kind, kw in timed]
    for i in range(0, len(events) - 8, 8):  # local disorder within runs of 8 events
        chunk = events[i : i + 8]
        rng.shuffle(chunk)
        events[i : i + 8] = chunk
    return events, start_ms + DRIFT_AT * STEP_MS


def accuracy_by_window(
    events: list[tuple[str, dict]], window_ms: int
) -> dict[int, tuple[int, float]]:
    """(labels, accuracy) per window start, by label time: what model_correct's mean is."""
    guess = {kw["prediction_id"]: kw["predicted_class"] for k, kw in events if k == "p"}
    hits: dict[int, list[float]] = defaultdict(list)
    for k, kw in events:
        if k == "l":
            ts = kw["timestamp_ms"]
            hits[ts - ts % window_ms].append(
                1.0 if guess[kw["prediction_id"]] == kw["true_class"] else 0.0
            )
    return {w: (len(v), sum(v) / len(v)) for w, v in hits.items()}


def latencies_by_window(events: list[tuple[str, dict]], window_ms: int) -> dict[int, list[float]]:
    out: dict[int, list[float]] = defaultdict(list)
    for k, kw in events:
        if k == "p":
            ts = kw["timestamp_ms"]
            out[ts - ts % window_ms].append(kw["latency_ms"])
    return {w: sorted(v) for w, v in out.items()}


def produce(
    p: Pipeline,
    events: list[tuple[str, dict]],
    pace_s: float,
    at: dict[float, Callable[[], object]] | None = None,
) -> None:
    """Send the events in order, in 40 flushed chunks spread over ``pace_s`` seconds;
    ``at`` maps fractions of the events to what to do once they are sent."""
    todo = {int(f * len(events)): fn for f, fn in (at or {}).items()}
    with ModelEventsProducer(p.settings) as out:
        chunk = len(events) // 40 + 1
        for i, (kind, kw) in enumerate(events):
            if kind == "p":
                out.prediction(**kw)
            else:
                out.label(**kw)
            if i % chunk == chunk - 1:
                assert out.flush(30) == 0
                time.sleep(pace_s / 40)
            if i in todo:
                assert out.flush(30) == 0
                todo[i]()
        assert out.flush(60) == 0
        assert out.failed == 0


def produce_bad(p: Pipeline) -> None:
    """Three events the agent must dead-letter: not Avro, no prediction, wrong topic."""
    codec = AvroCodec.from_directory()
    no_prediction = {"prediction_id": "bad-1", "model": "churn", "version": "7",
                     "timestamp_ms": int(time.time() * 1000)}  # fmt: skip
    pred = codec.encode(PREDICTION, {**no_prediction, "predicted_class": "pos"})
    out = Producer({"bootstrap.servers": p.settings.kafka.bootstrap_servers})
    out.produce(p.topic(PREDICTIONS), b"this is not avro", b"bad-0")
    out.produce(p.topic(PREDICTIONS), codec.encode(PREDICTION, no_prediction), b"bad-1")
    out.produce(p.topic(MODEL_LABELS), pred, b"bad-2")
    assert out.flush(30) == 0


def dead_letter_reasons(p: Pipeline, n: int, timeout: float = 30) -> dict[bytes, str]:
    c = Consumer(
        {
            "bootstrap.servers": p.settings.kafka.bootstrap_servers,
            "group.id": f"check-{p.prefix}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([p.topic(DEAD_LETTER)])
    out: dict[bytes, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < n:
        m = c.poll(0.5)
        if m is not None and not m.error():
            h = dict(m.headers() or [])
            if h.get("x-stage") == b"model_metrics":
                out[m.key()] = h["x-reason"].decode()
    c.close()
    return out


def stored(p: Pipeline, name: str, window_ms: int, extra: str = "") -> dict[int, list]:
    rows = p.query(
        "SELECT toUnixTimestamp64Milli(window_start), count, sum, mean, max, p50, p99 "
        f"FROM aggregates FINAL WHERE name = '{name}' AND window_ms = {window_ms} "
        f"AND labels['model'] = 'churn' AND labels['version'] = '7' {extra}"
    )
    return {r[0]: r[1:] for r in rows}


def start_pipeline(
    factory: Callable[..., Pipeline], lateness: str, **overrides: str
) -> tuple[Pipeline, list[tuple[str, dict]], int]:
    """``lateness`` must cover the event-time skew between the agent's source partitions
    (a sample older than the samples partition's watermark would be late)."""
    p = factory(
        aggregation__allowed_lateness=lateness,
        model_metrics__checkpoint_interval="500ms",
        **overrides,
    )
    now = int(time.time() * 1000)
    start = now - now % W60 - N_PREDICTIONS * STEP_MS - 5 * W60
    events, drift_ms = simulate(start)
    ensure_topics(p.settings)
    p.start_store()
    p.start("worker", "worker")
    return p, events, drift_ms


def check_metrics(p: Pipeline, events: list[tuple[str, dict]], drift_ms: int) -> None:
    """Every assertion of the module docstring, from aggregates FINAL."""
    acc10, acc60 = accuracy_by_window(events, W10), accuracy_by_window(events, W60)
    before = [a for w, (_, a) in acc60.items() if w + W60 <= drift_ms]
    after = [a for w, (_, a) in acc60.items() if w >= drift_ms + W60]
    assert min(before) > max(after) + 0.15, "the simulated model must degrade"
    p.wait(
        lambda: (
            len(stored(p, "model_correct", W10)) >= len(acc10)
            and len(stored(p, "model_correct", W60)) >= len(acc60)
        ),
        240,
        f"{len(acc10)} model_correct windows\n{p.logs()}",
    )
    time.sleep(3)  # anything extra would arrive now

    # accuracy: exact per window, at both sizes
    for size, expected in ((W10, acc10), (W60, acc60)):
        got = stored(p, "model_correct", size)
        assert set(got) == set(expected)
        wrong = {
            w: (got[w][0], got[w][2], e) for w, e in expected.items() if (got[w][0], got[w][2]) != e
        }
        assert not wrong, f"{len(wrong)} {size} ms windows differ, e.g. {list(wrong.items())[:3]}"

    # predictions and latency percentiles
    lat10, lat60 = latencies_by_window(events, W10), latencies_by_window(events, W60)
    preds = stored(p, "model_predictions", W10)
    assert {w: r[1] for w, r in preds.items()} == {w: float(len(v)) for w, v in lat10.items()}
    got10 = stored(p, "model_latency_ms", W10)
    assert set(got10) == set(lat10)
    for w, vals in lat10.items():
        assert len(vals) <= 256
        exact = (vals[int(0.5 * (len(vals) - 1))], vals[int(0.99 * (len(vals) - 1))])
        assert (got10[w][4], got10[w][5]) == exact, f"window {w}"
    got60 = stored(p, "model_latency_ms", W60)
    for w, vals in lat60.items():
        for got, q in ((got60[w][4], 0.5), (got60[w][5], 0.99)):
            assert got == pytest.approx(vals[int(q * (len(vals) - 1))], rel=0.0101)

    # drift: quiet before, an alarm within DRIFT_DELAY_MS after; x2 never
    x1 = stored(p, "model_feature_drift", W10, "AND labels['feature'] = 'x1'")
    x2 = stored(p, "model_feature_drift", W10, "AND labels['feature'] = 'x2'")
    assert len(x1) >= N_PREDICTIONS * STEP_MS // W10 - 1  # a heartbeat in every window
    early = {w for w, r in x1.items() if r[3] > 0 and w + W10 <= drift_ms}
    assert not early, f"drift alarms before the drift at {drift_ms}: {sorted(early)}"
    alarms = sorted(w for w, r in x1.items() if r[3] == 1.0)
    assert alarms, "the drift of x1 was not detected"
    assert drift_ms - W10 < alarms[0] <= drift_ms + DRIFT_DELAY_MS, alarms[0] - drift_ms
    assert all(r[3] == 0.0 for r in x2.values()), "alarm on the stationary feature x2"
    print(f"first x1 drift alarm {alarms[0] - drift_ms} ms after the drift")


def expected_accuracy_alert(events: list[tuple[str, dict]]) -> tuple[int, float]:
    """(T, value) of the first evaluation where RULES' expression holds: the accuracy of
    the six 10 s windows ending in (T - 1m, T], as avg_over_time computes it."""
    acc = accuracy_by_window(events, W10)
    for end in sorted(w + W10 for w in acc):
        inside = [acc[w] for w in acc if end - W60 < w + W10 <= end]
        n = sum(c for c, _ in inside)
        hits = sum(round(c * a) for c, a in inside)
        if hits / n < ACCURACY_THRESHOLD and n >= MIN_LABELS:
            return end, hits / n
    raise AssertionError("the accuracy never falls below the threshold")


def alerts(p: Pipeline, timeout: float) -> list[Alert]:
    codec = AvroCodec.from_directory()
    c = Consumer(
        {
            "bootstrap.servers": p.settings.kafka.bootstrap_servers,
            "group.id": f"alerts-{p.prefix}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([p.topic(ALERTS)])
    out: list[Alert] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(from_record(codec.decode(m.value()).record))
    c.close()
    return out


def test_model_metrics_accuracy_latency_drift_alert_and_dead_letters(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path
) -> None:
    rules = tmp_path / "models.rules.yml"
    rules.write_text(RULES)
    # windows close as the stream goes (the alert evaluator needs them to): the paced
    # producer keeps the partitions within a chunk (30 s of event time) of each other
    # The stream runs 60 times faster than event time, so the evaluator's grace for a
    # lagging aggregates partition (2 s of wall time = 2 min of event time here) would
    # evaluate ends before the model_correct windows arrive: give it 30 s.
    p, events, drift_ms = start_pipeline(
        pipeline_factory, lateness="3m", alerting__rules=f'["{rules}"]', alerting__grace="30s"
    )
    p.start("alerting", "alerting")
    produce_bad(p)
    produce(p, events, pace_s=20)
    check_metrics(p, events, drift_ms)

    # the alert rule on the accuracy series fires once, at the first window end where
    # the last minute's accuracy is below the threshold, after the drift
    fire_at, value = expected_accuracy_alert(events)
    assert drift_ms < fire_at <= drift_ms + DRIFT_DELAY_MS
    got = alerts(p, 20)
    assert [(a.status, dict(a.labels), a.starts_at_ms) for a in got] == [
        ("firing", {"alertname": "ModelAccuracyLow", "severity": "page", **MODEL}, fire_at)
    ], p.logs()
    assert got[0].value == pytest.approx(value, rel=1e-12)
    assert dead_letter_reasons(p, 3) == {
        b"bad-0": "bad-marker",
        b"bad-1": "missing-prediction",
        b"bad-2": "unexpected-record",
    }


def test_scale_out_and_restart_double_count_nothing(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    """A second worker joins at a third of the stream (rebalance), the first stops
    (SIGTERM) at two thirds: partitions move with their join state and every window
    stays exact (the agent checkpoints before it gives partitions up and at shutdown)."""
    # a rebalance pauses the agent while the backlog grows: the windows close only by
    # the idle timer at the end, so no sample is late whatever the skew
    p, events, drift_ms = start_pipeline(pipeline_factory, lateness="30m")
    at = {
        1 / 3: lambda: p.start("worker", "worker2"),
        2 / 3: lambda: p.procs["worker"].send_signal(signal.SIGTERM),  # mid-stream
    }
    produce(p, events, pace_s=40, at=at)
    check_metrics(p, events, drift_ms)
    assert "model_metrics_restored" in (p.dir / "worker2.log").read_text()
    assert "model_metrics_shutdown_checkpoint" in (p.dir / "worker.log").read_text()
