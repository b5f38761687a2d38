"""End to end: samples -> aggregation agent -> anomaly agent -> anomaly_score series and
anomaly events -> store, on the real broker and embedded ClickHouse.

The oracle runs the same ``SeriesScorer`` over the window means computed here, in
window order, without any restart: the stored scores must equal it exactly, also
when the worker is killed (SIGKILL) mid-stream and a new one restores the detectors
from the changelog. The replay CLI over the same means gives the same scores too.
"""

from __future__ import annotations

import csv
import random
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from fixtures.progress import committed

from monitoring.anomaly import DEFAULT_DETECTOR
from monitoring.anomaly.registry import get_spec
from monitoring.anomaly.scorer import SeriesScorer
from monitoring.dev.deploy import BIN
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.metrics.collector import MetricsCollector
from monitoring.metrics.samples import series_key
from monitoring.runtime.topics import AGGREGATES, ANOMALIES, SAMPLES
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW_MS = 10_000
N_WINDOWS = 260
SPIKE_WINDOW = 200
SHIFT_WINDOW = 215
SERIES = [("gpu_util", {"host": f"g{i}"}) for i in range(4)]
PATH = (SAMPLES, AGGREGATES)  # the worker's inputs: samples, aggregates for the scores


def dataset(start_ms: int) -> list[tuple[str, dict[str, str], int, float]]:
    """One sample a second per series; noise in steps of 1/8 (exact sums). Series 0
    gets a spike (one window), series 1 a level shift; the others stay clean."""
    rng = random.Random(11)
    points = []
    for w in range(N_WINDOWS):
        for s, (name, labels) in enumerate(SERIES):
            for i in range(WINDOW_MS // 1000):
                v = 50 + rng.randint(-16, 16) / 8
                if s == 0 and w == SPIKE_WINDOW:
                    v += 400
                if s == 1 and w >= SHIFT_WINDOW:
                    v += 60
                points.append((name, labels, start_ms + w * WINDOW_MS + i * 1000, v))
    return points


def window_means(points: list[tuple[str, dict[str, str], int, float]]) -> dict[str, list]:
    acc: dict[tuple[str, int], list[float]] = {}
    for name, labels, ts, v in points:
        acc.setdefault((series_key(name, labels), ts - ts % WINDOW_MS), []).append(v)
    out: dict[str, list[tuple[int, float]]] = {}
    for (key, start), vals in sorted(acc.items()):
        out.setdefault(key, []).append((start, sum(vals) / len(vals)))
    return out


def produce(p: Pipeline, points: list[tuple[str, dict[str, str], int, float]]) -> None:
    with MetricsCollector(p.settings, batch=True, linger=0.05) as mc:
        for name, labels, ts, v in points:
            mc.record(name, v, labels, timestamp_ms=ts)
        mc.flush(60)


def stored_scores(p: Pipeline) -> dict[tuple[str, int], float]:
    rows = p.query(
        "SELECT labels['metric'], mapFilter((k, v) -> k != 'metric', labels), "
        "toUnixTimestamp64Milli(window_start), mean FROM aggregates FINAL "
        "WHERE name = 'anomaly_score' AND labels['metric'] = 'gpu_util'"  # not self-metrics
    )
    return {(series_key(r[0], r[1]), r[2]): r[3] for r in rows}


def anomaly_events(p: Pipeline, n: int, timeout: float = 30) -> list[dict]:
    codec = AvroCodec.from_directory()
    c = Consumer(
        {
            "bootstrap.servers": p.settings.kafka.bootstrap_servers,
            "group.id": f"check-{p.prefix}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([p.topic("anomalies")])
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < n:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(codec.decode(m.value()).record)
    c.close()
    return out


def test_anomaly_scores_survive_kill_and_match_oracle_and_replay(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    start = now - now % 60_000 - (N_WINDOWS * WINDOW_MS + 300_000)
    points = dataset(start)
    means = window_means(points)
    # the oracle: one uninterrupted scorer per series over its window means
    expected: dict[tuple[str, int], float] = {}
    anomalies: set[tuple[str, int]] = set()
    bands: dict[tuple[str, int], tuple] = {}  # what each anomaly was judged against
    threshold = pipeline.settings.anomaly.threshold or get_spec(DEFAULT_DETECTOR).alert_level
    for key, seq in means.items():
        scorer = SeriesScorer(DEFAULT_DETECTOR)
        for ts, mean in seq:
            s = scorer.update(ts, mean)
            expected[(key, ts)] = s.score
            if s.warm and s.score >= threshold:
                anomalies.add((key, ts))
                bands[(key, ts)] = (s.expected, s.lower, s.upper, list(s.components))
    spiked = series_key(*SERIES[0])
    assert (spiked, start + SPIKE_WINDOW * WINDOW_MS) in anomalies, "the detector misses the spike"
    clean = {series_key(*s) for s in SERIES[2:]}
    assert not {a for a in anomalies if a[0] in clean}, "the detector fires on clean noise"

    pipeline.start_store()
    worker = pipeline.start("worker", "worker")
    half = len(points) // 2
    produce(pipeline, points[:half])
    pipeline.wait(lambda: len(stored_scores(pipeline)) >= len(SERIES) * 60, 120, "first scores")
    # past a checkpoint of the anomaly agent (its offsets commit after it), more in flight
    group, bootstrap = f"{pipeline.prefix}worker", pipeline.settings.kafka.bootstrap_servers
    pipeline.wait(
        lambda: committed(bootstrap, group, pipeline.topic(AGGREGATES)) > 0,
        60,
        "an anomaly checkpoint",
    )
    worker.kill()  # SIGKILL
    worker.wait()
    pipeline.start("worker", "worker2")
    produce(pipeline, points[half:])
    pipeline.wait(
        lambda: len(stored_scores(pipeline)) >= len(expected), 180, f"scores\n{pipeline.logs()}"
    )
    # every input committed by the worker and the store: anything extra is in by now
    pipeline.wait(
        lambda: pipeline.drained(worker=PATH, store=(*PATH, ANOMALIES)),
        120,
        f"the pipeline drained\n{pipeline.logs()}",
    )
    got = stored_scores(pipeline)
    assert set(got) == set(expected)
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong, f"{len(wrong)} scores differ from the oracle, e.g. {list(wrong.items())[:3]}"

    rows = pipeline.query(
        "SELECT series, toUnixTimestamp64Milli(ts), expected, lower, upper, components "
        "FROM anomalies FINAL WHERE name = 'gpu_util'"
    )
    assert {(r[0], r[1]) for r in rows} == anomalies
    assert {(r[0], r[1]): (r[2], r[3], r[4], list(r[5])) for r in rows} == bands
    events = anomaly_events(pipeline, len(anomalies))
    assert {(e["series"], e["timestamp_ms"]) for e in events} >= anomalies
    spike_event = next(e for e in events if e["series"] == spiked)
    assert spike_event["detector"] == DEFAULT_DETECTOR
    assert 0 <= spike_event["score"] <= 1 and spike_event["window_ms"] == WINDOW_MS
    assert spike_event["value"] > spike_event["upper"] > spike_event["expected"]
    assert spike_event["components"]

    # the replay CLI over the same window means gives the agent's scores
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    with src.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        w.writerows((ts, repr(mean)) for ts, mean in means[spiked])
    subprocess.run([str(BIN), "anomaly", "replay", str(src), "--out", str(out)], check=True)
    with out.open() as f:
        replayed = [float(r["anomaly_score"]) for r in csv.DictReader(f)]
    assert replayed == [got[(spiked, ts)] for ts, _ in means[spiked]]
