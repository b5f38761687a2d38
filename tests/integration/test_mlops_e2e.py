"""End to end: a simulated classifier's predictions and delayed labels -> model metrics
agent -> samples topic -> aggregation agent -> store, on the real broker and chDB.

The input feature ``x1`` drifts (mean 0 -> 1.5) at a known time, and the true concept
moves further (its boundary from 0 to 3), so the model (which predicts ``pos`` when
x1 > 0) falls from about 85 % accuracy to about 15 % after the drift; ``x2`` stays
stationary. Labels come 2-30 s after their prediction, some before their prediction,
in a locally shuffled order, and 5 % never come.

Checked from ``aggregates FINAL``, against values computed here:

- the counters (``model_predictions_total``, ``model_correct_sum``/``_count``), per
  partition: every 10 s window holds one value (min = max = last) and it is exactly
  the count ``mlops.counters`` defines for that window's end (the events before each
  topic's first event at or after it, partitions from murmur2 of the prediction id,
  offsets from the production order), and the totals over partitions are the number of
  predictions, labels and correct predictions;
- ``model_latency_ms``: 10 s windows (at most 256 values) have the exact p50 / p99
  (rank floor(q (n - 1))), 1 min windows within the sketch's 1 % relative accuracy;
- ``model_feature_drift{feature="x1"}``: max 0 in every window before the drift, 1 in a
  window starting no later than DRIFT_DELAY_MS after it; ``x2`` never reaches 1;
- the alert evaluator (``monitoring alerts evaluate``) with the rule on the accuracy of
  the last minute from the counters' increases (over at least 100 labels) below 0.7
  fires once, after the drift and within DRIFT_DELAY_MS of it;
- the bad events of ``produce_bad`` are dead letters with their reasons.

The second test adds a worker at a third of the stream and stops the first (SIGTERM)
at two thirds; the third kills the worker (SIGKILL) mid-stream, with poison between
the events, and starts another, which replays and publishes some counter windows again:
the same checks hold exactly (and the latency per prediction, published again, is
not a count).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from fixtures.progress import evaluated_through, read_to_end

from monitoring.alerts.model import Alert
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.mlops.events import PREDICTION
from monitoring.runtime.admin import ensure_topics
from monitoring.runtime.topics import (
    ALERTING_STATE,
    ALERTS,
    DEAD_LETTER,
    MODEL_LABELS,
    MODEL_STATE,
    PREDICTIONS,
    SAMPLES,
)
from monitoring.sdk.model_events import ModelEventsProducer
from monitoring.wire.alert_encoding import from_record
from monitoring.wire.codec import AvroCodec
from monitoring.wire.partitioner import partition_for

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
          sum without (partition) (increase(model_correct_sum[1m]))
            / sum without (partition) (increase(model_correct_count[1m]))
            < {ACCURACY_THRESHOLD}
          and sum without (partition) (increase(model_correct_count[1m])) >= {MIN_LABELS}
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


class CounterOracle:
    """What ``mlops.counters`` publishes for a window end, per partition: the events
    before each topic's first event at or after that end (by production order, which
    is each partition's offset order), and the totals."""

    def __init__(self, events: list[tuple[str, dict]], partitions: int) -> None:
        self.preds: dict[int, list[int]] = defaultdict(list)  # event times, offset order
        self.labels: dict[int, list[int]] = defaultdict(list)
        self.pairs: dict[int, list[tuple[int, int, bool]]] = defaultdict(list)
        where: dict[str, tuple[int, str]] = {}
        for kind, kw in events:
            pid = kw["prediction_id"]
            part = partition_for(pid, partitions)
            if kind == "p":
                where[pid] = (len(self.preds[part]), kw["predicted_class"])
                self.preds[part].append(kw["timestamp_ms"])
            else:
                self.labels[part].append(kw["timestamp_ms"])
        labels_seen: dict[int, int] = defaultdict(int)
        for kind, kw in events:
            if kind == "l":  # every label has its prediction (and no expiry: 1 h horizon)
                part = partition_for(kw["prediction_id"], partitions)
                i, guess = where[kw["prediction_id"]]
                self.pairs[part].append((i, labels_seen[part], guess == kw["true_class"]))
                labels_seen[part] += 1
        self.totals = {
            "model_predictions_total": sum(len(v) for v in self.preds.values()),
            "model_correct_count": sum(len(v) for v in self.pairs.values()),
            "model_correct_sum": sum(h for v in self.pairs.values() for _, _, h in v),
        }

    def value(self, name: str, part: int, end_ms: int) -> int:
        op = next((k for k, ts in enumerate(self.preds[part]) if ts >= end_ms), None)
        op = len(self.preds[part]) if op is None else op
        if name == "model_predictions_total":
            return op
        ol = next((k for k, ts in enumerate(self.labels[part]) if ts >= end_ms), None)
        ol = len(self.labels[part]) if ol is None else ol
        due = [hit for i, j, hit in self.pairs[part] if i < op and j < ol]
        return sum(due) if name == "model_correct_sum" else len(due)


COUNTERS = ("model_predictions_total", "model_correct_count", "model_correct_sum")


def counter_windows(p: Pipeline, name: str) -> list[list]:
    """(partition, window end, count, min, max, last) of every 10 s window of ``name``."""
    return p.query(
        "SELECT toUInt32(labels['partition']), toUnixTimestamp64Milli(window_end), count, "
        f"min, max, last FROM aggregates FINAL WHERE name = '{name}' AND window_ms = {W10} "
        f"AND labels['model'] = 'churn' AND labels['version'] = '7'"
    )


def counter_totals(p: Pipeline) -> dict[str, float]:
    """Each counter's greatest value per partition, summed over the partitions."""
    out = {}
    for name in COUNTERS:
        best: dict[int, float] = defaultdict(float)
        for part, _, _, _, mx, _ in counter_windows(p, name):
            best[part] = max(best[part], mx)
        out[name] = sum(best.values())
    return out


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
        **{
            "aggregation__allowed_lateness": lateness,
            "model_metrics__checkpoint_interval": "500ms",
            **overrides,
        }
    )
    now = int(time.time() * 1000)
    start = now - now % W60 - N_PREDICTIONS * STEP_MS - 5 * W60
    events, drift_ms = simulate(start)
    ensure_topics(p.settings)
    p.start_store()
    p.start("worker", "worker")
    return p, events, drift_ms


def accuracy_by_minute(events: list[tuple[str, dict]]) -> dict[int, float]:
    """The accuracy of the labels of each minute (by label time)."""
    guess = {kw["prediction_id"]: kw["predicted_class"] for k, kw in events if k == "p"}
    hits: dict[int, list[bool]] = defaultdict(list)
    for k, kw in events:
        if k == "l":
            ts = kw["timestamp_ms"]
            hits[ts - ts % W60].append(guess[kw["prediction_id"]] == kw["true_class"])
    return {w: sum(v) / len(v) for w, v in hits.items()}


def check_metrics(
    p: Pipeline, events: list[tuple[str, dict]], drift_ms: int, replayed: bool = False
) -> None:
    """Every assertion of the module docstring, from aggregates FINAL. ``replayed``: a
    worker was killed, so the per-event latency samples of its replay are in twice."""
    acc60 = accuracy_by_minute(events)
    before = [a for w, a in acc60.items() if w + W60 <= drift_ms]
    after = [a for w, a in acc60.items() if w >= drift_ms + W60]
    assert min(before) > max(after) + 0.15, "the simulated model must degrade"
    oracle = CounterOracle(events, p.settings.kafka.samples_partitions)
    p.wait(
        lambda: counter_totals(p) == oracle.totals,
        240,
        f"counter totals {oracle.totals}\n{p.logs()}",
    )
    # every input committed by the worker and the store: anything extra is in by now
    p.wait(
        lambda: p.drained(worker=[PREDICTIONS, MODEL_LABELS, SAMPLES]),
        120,
        f"the pipeline drained\n{p.logs()}",
    )
    assert counter_totals(p) == oracle.totals

    # counters: one value per window and partition, exactly the oracle's
    for name in COUNTERS:
        rows = counter_windows(p, name)
        assert len(rows) >= 6 * 100, f"{name}: {len(rows)} windows"
        wrong = [
            (part, end, mn, mx, last, oracle.value(name, part, end))
            for part, end, _, mn, mx, last in rows
            if not mn == mx == last == oracle.value(name, part, end)
        ]
        assert not wrong, f"{name}: {len(wrong)} of {len(rows)} windows differ: {wrong[:5]}"

    # latency percentiles
    lat10, lat60 = latencies_by_window(events, W10), latencies_by_window(events, W60)
    got10 = stored(p, "model_latency_ms", W10)
    assert set(got10) == set(lat10)
    got60 = stored(p, "model_latency_ms", W60)
    if not replayed:
        assert {w: r[0] for w, r in got10.items()} == {w: len(v) for w, v in lat10.items()}
        for w, vals in lat10.items():
            assert len(vals) <= 256
            exact = (vals[int(0.5 * (len(vals) - 1))], vals[int(0.99 * (len(vals) - 1))])
            assert (got10[w][4], got10[w][5]) == exact, f"window {w}"
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


def alerts(p: Pipeline) -> list[Alert]:
    """Every alert on the alerts topic once the evaluator's checkpoint (written after its
    alerts are acknowledged) is past the last 10 s window of the counters."""
    last_end = p.query(
        "SELECT toUnixTimestamp64Milli(max(window_end)) FROM aggregates FINAL "
        f"WHERE name = 'model_correct_count' AND window_ms = {W10}"
    )[0][0]
    bootstrap = p.settings.kafka.bootstrap_servers
    p.wait(
        lambda: evaluated_through(bootstrap, p.topic(ALERTING_STATE)) >= last_end,
        120,
        f"the evaluator past {last_end}\n{p.logs()}",
    )
    codec = AvroCodec.from_directory()
    return [
        from_record(codec.decode(m.value()).record) for m in read_to_end(bootstrap, p.topic(ALERTS))
    ]


def test_model_metrics_accuracy_latency_drift_alert_and_dead_letters(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path
) -> None:
    rules = tmp_path / "models.rules.yml"
    rules.write_text(RULES)
    # windows close as the stream goes (the alert evaluator needs them to): the paced
    # producer keeps the partitions within a chunk (30 s of event time) of each other
    # The stream runs 60 times faster than event time, so the evaluator's grace for a
    # lagging aggregates partition (2 s of wall time = 2 min of event time here) would
    # evaluate ends before the model_correct_* windows arrive: give it 30 s.
    p, events, drift_ms = start_pipeline(
        pipeline_factory, lateness="3m", alerting__rules=f'["{rules}"]', alerting__grace="30s"
    )
    p.start("alerting", "alerting")
    produce_bad(p)
    produce(p, events, pace_s=20)
    check_metrics(p, events, drift_ms)

    # the alert rule on the accuracy of the counters fires once, after the drift
    got = alerts(p)
    assert [(a.status, dict(a.labels)) for a in got] == [
        ("firing", {"alertname": "ModelAccuracyLow", "severity": "page", **MODEL})
    ], p.logs()
    assert drift_ms < got[0].starts_at_ms <= drift_ms + DRIFT_DELAY_MS
    assert got[0].value < ACCURACY_THRESHOLD
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
    assert any(
        '"shutdown_checkpoint"' in line and '"agent": "model_metrics"' in line
        for line in (p.dir / "worker.log").read_text().splitlines()
    )


def produce_poison(p: Pipeline) -> None:
    """Poison on both topics: garbage, empty and null values, a valid Avro record of
    another schema, a newer schema version of Prediction this worker does not know, a
    truncated record."""
    codec = AvroCodec.from_directory()
    now = int(time.time() * 1000)
    pred = codec.encode(PREDICTION, {"prediction_id": "poison-p", "model": "churn",
                                     "version": "7", "timestamp_ms": now,
                                     "predicted_class": "pos"})  # fmt: skip
    future = pred[:2] + bytes(8) + pred[10:]  # a fingerprint of no kept schema version
    sample = codec.encode(
        "monitoring.MetricSample",
        {"name": "x", "labels": {}, "value": 1.0, "timestamp_ms": now, "kind": "GAUGE"},
    )
    out = Producer({"bootstrap.servers": p.settings.kafka.bootstrap_servers})
    for topic in (p.topic(PREDICTIONS), p.topic(MODEL_LABELS)):
        short = topic.rsplit(".", 1)[-1][:1]
        out.produce(topic, b"\x00\xff is not Avro at all", f"garbage-{short}".encode())
        out.produce(topic, b"", f"empty-{short}".encode())
        out.produce(topic, None, f"null-{short}".encode())
        out.produce(topic, sample, f"sample-{short}".encode())
        out.produce(topic, future, f"future-{short}".encode())
        out.produce(topic, pred[:-3], f"truncated-{short}".encode())
    assert out.flush(30) == 0


POISON_REASONS = {
    "garbage": "bad-marker",
    "empty": "truncated",
    "null": "not-bytes",
    "sample": "unexpected-record",
    "future": "unknown-fingerprint",
    "truncated": "bad-body",
}


def kill_after_unsaved_counter(p: Pipeline, timeout: float = 120) -> None:
    """SIGKILL the worker once it has published a ``model_predictions_total`` sample
    after its latest checkpoint (the last ``models.state`` record, the ``models.state``
    topic read to its end just before the kill): the replay must publish that sample
    again. A checkpoint lands every 10 s; this one waits for a condition, not for luck."""
    codec = AvroCodec.from_directory()
    state, samples = p.topic(MODEL_STATE), p.topic(SAMPLES)
    c = Consumer(
        {
            "bootstrap.servers": p.settings.kafka.bootstrap_servers,
            "group.id": f"kill-{p.prefix}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # the end of a partition read: the state is written in transactions, whose
            # commit markers take offsets no message is delivered at
            "enable.partition.eof": True,
        }
    )
    c.subscribe([state, samples])
    saved_ms = 0  # the newest checkpoint record's timestamp
    state_seen: dict[int, int] = {}  # partition -> next offset read
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF and m.topic() == state:
                    part, end = m.partition(), m.offset() or 0
                    state_seen[part] = max(state_seen.get(part, 0), end)
                continue
            ts = m.timestamp()[1]
            if m.topic() == state:
                saved_ms = max(saved_ms, ts)
                state_seen[m.partition()] = m.offset() + 1
                continue
            if not saved_ms or ts <= saved_ms:
                continue
            if codec.decode(m.value()).record.get("name") != "model_predictions_total":
                continue
            parts = c.list_topics(state, timeout=10).topics[state].partitions
            ends = {
                n: c.get_watermark_offsets(TopicPartition(state, n), timeout=10)[1] for n in parts
            }
            if all(state_seen.get(n, 0) >= end for n, end in ends.items() if end):
                p.kill("worker")  # SIGKILL: no checkpoint, no commit, no goodbye
                return
    finally:
        c.close()
    raise AssertionError(f"no counter published after a checkpoint\n{p.logs()}")


def test_kill_9_mid_stream_counts_exactly(pipeline_factory: Callable[..., Pipeline]) -> None:
    """SIGKILL the worker once it has published counters after its last checkpoint,
    start another: it replays the messages since that checkpoint and publishes their
    counter windows again, with the same values, so every window and every total is
    exact. Poison on both topics, mid-stream, is dead-lettered and the stream goes on."""
    p, events, drift_ms = start_pipeline(
        pipeline_factory, lateness="30m", model_metrics__checkpoint_interval="10s"
    )
    sending = threading.Thread(
        target=produce,
        args=(p, events),
        kwargs={"pace_s": 40, "at": {0.5: lambda: produce_poison(p)}},
    )
    sending.start()
    try:
        kill_after_unsaved_counter(p)
        p.start("worker", "worker2")
    finally:
        sending.join(180)
    check_metrics(p, events, drift_ms, replayed=True)
    assert "model_metrics_restored" in (p.dir / "worker2.log").read_text()
    # the replay did publish counter windows a second time (same values: checked above)
    repeats = p.query(
        f"SELECT count() FROM aggregates FINAL WHERE name = 'model_predictions_total' "
        f"AND window_ms = {W10} AND count > 1"
    )[0][0]
    assert repeats > 0, "the kill left nothing to replay: the test proved nothing"
    reasons = dead_letter_reasons(p, len(POISON_REASONS) * 2)
    assert reasons == {
        f"{name}-{t}".encode(): reason for name, reason in POISON_REASONS.items() for t in "pl"
    }
