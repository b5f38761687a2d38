"""End to end: samples -> aggregation agent -> alert evaluator -> alerts topic, on the
real broker, with a SIGKILL of the evaluator and the worker between firing and
resolution. (A bad rule file stops the evaluator at start: test_alerting_rules_strict.py.)

Expected alerts are worked out by hand from the data: the instant value of a series
at the end ``T`` of a window is that window's last sample.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from monitoring.agents.alerting import STATE_KEY
from monitoring.alerts.model import Alert
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.metrics.collector import MetricsCollector
from monitoring.runtime.changelog import read_table
from monitoring.runtime.state_chunks import join
from monitoring.wire.alert_encoding import from_record
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = """
groups:
  - name: rooms
    rules:
      - alert: HighTemp
        expr: temp > 80
        for: 20s
        labels: {severity: page}
        annotations: {summary: "room {{ $labels.room }} at {{ $value }}"}
      - alert: DcHot
        expr: avg by (dc) (temp) > 60
"""
N_WINDOWS = 80
HOT = range(30, 50)  # windows where room a is at 90


def samples(start: int, windows: range) -> list[tuple[dict[str, str], int, float]]:
    out = []
    for w in windows:
        for room, dc in (("a", "x"), ("b", "x"), ("c", "y")):
            for i in range(10):
                v = 90.0 if room == "a" and w in HOT else 50.0
                out.append(({"room": room, "dc": dc}, start + w * 10_000 + i * 1_000, v))
    return out


def produce(p: Pipeline, points: list[tuple[dict[str, str], int, float]]) -> None:
    with MetricsCollector(p.settings, batch=True, linger=0.05) as mc:
        for labels, ts, v in points:
            mc.record("temp", v, labels, timestamp_ms=ts)
        mc.flush(60)


class AlertReader:
    def __init__(self, p: Pipeline) -> None:
        self.codec = AvroCodec.from_directory()
        self.c = Consumer(
            {
                "bootstrap.servers": p.settings.kafka.bootstrap_servers,
                "group.id": f"check-{p.prefix}",
                "auto.offset.reset": "earliest",
            }
        )
        self.c.subscribe([p.topic("alerts")])
        self.seen: list[tuple[Alert, int]] = []

    def until(self, n: int, timeout: float) -> list[tuple[Alert, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.seen) < n:
            m = self.c.poll(0.3)
            if m is not None and not m.error():
                rec = self.codec.decode(m.value()).record
                self.seen.append((from_record(rec), rec["evaluated_at_ms"]))
        return self.seen

    def to_end(self) -> list[tuple[Alert, int]]:
        """Everything on the topic now."""
        topic = self.c.assignment()[0].topic
        parts = self.c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {n: self.c.get_watermark_offsets(TopicPartition(topic, n), timeout=10)[1]
                for n in parts}  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pos = {tp.partition: tp.offset for tp in self.c.position(
                [TopicPartition(topic, n) for n in parts])}  # fmt: skip
            if all(pos.get(n, -1) >= e for n, e in ends.items() if e > 0):
                break
            self.until(len(self.seen) + 1, 0.5)
        return self.seen


def checkpointed_through(p: Pipeline) -> int:
    """The end the evaluator's last checkpoint on ``alerts.state`` says it evaluated."""
    raw = join(read_table(p.settings.kafka.bootstrap_servers, p.topic("alerts.state"), 0))
    state = raw.table.get(STATE_KEY)
    return -1 if state is None else int(json.loads(state)["last_evaluated_ms"])


def test_alerts_fire_and_resolve_once_across_an_evaluator_kill(
    pipeline_factory, tmp_path: Path
) -> None:
    rules = tmp_path / "rooms.rules.yml"
    rules.write_text(RULES)
    p: Pipeline = pipeline_factory(
        alerting__rules=f'["{rules}"]', alerting__checkpoint_interval="200ms"
    )
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 20 * 60_000
    end = lambda w: start + (w + 1) * 10_000  # noqa: E731 - the end of window w

    worker = p.start("worker", "worker")
    evaluator = p.start("alerting", "alerting")
    reader = AlertReader(p)
    produce(p, samples(start, range(0, 42)))
    fired = reader.until(2, 120)
    assert len(fired) == 2, p.logs()
    last_fired = max(at for _, at in fired)
    p.wait(  # the evaluator checkpoints after sending: kill it once it has
        lambda: checkpointed_through(p) >= last_fired, 60, "a checkpoint past the alerts"
    )
    for proc in (evaluator, worker):  # SIGKILL both: the new worker replays some windows
        proc.kill()
        proc.wait()
    p.start("worker", "worker2")
    p.start("alerting", "alerting2")
    produce(p, samples(start, range(42, N_WINDOWS)))
    got = reader.until(4, 120)
    # once a checkpoint covers the last window, every end was evaluated and whatever it
    # sent (a re-fired duplicate too) is on the topic: read it to its end
    p.wait(lambda: checkpointed_through(p) >= end(N_WINDOWS - 1), 120, "the last end evaluated")
    got = reader.to_end()

    summary = sorted(
        (a.name, a.status, dict(a.labels), a.starts_at_ms, a.ends_at_ms, a.value, at)
        for a, at in got
    )
    horizon = 4 * 3_600_000  # four re-send intervals (the fixture's: 1h)
    assert summary == sorted(
        [
            ("DcHot", "firing", {"alertname": "DcHot", "dc": "x"}, end(30), end(30) + horizon,
             70.0, end(30)),
            ("DcHot", "resolved", {"alertname": "DcHot", "dc": "x"}, end(30), end(50), 70.0,
             end(50)),
            ("HighTemp", "firing", {"alertname": "HighTemp", "dc": "x", "room": "a",
             "severity": "page"}, end(32), end(32) + horizon, 90.0, end(32)),
            ("HighTemp", "resolved", {"alertname": "HighTemp", "dc": "x", "room": "a",
             "severity": "page"}, end(32), end(50), 90.0, end(50)),
        ]
    )  # fmt: skip
    high = next(a for a, _ in got if a.name == "HighTemp")
    assert high.annotations == {"summary": "room a at 90"}
    assert high.severity == "page"
