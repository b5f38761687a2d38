"""The alert evaluator's state on the real broker: a mass outage of 50,000 firing
instances checkpoints in records under the message limit and restores equal; a state
that no longer reads is logged and counted, and the evaluator starts rather than
crash-loops."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from monitoring.agents.alerting import STATE_KEY, AlertingAgent
from monitoring.config import Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.runtime import topics
from monitoring.runtime.changelog import read_table
from monitoring.runtime.state_chunks import join

pytestmark = [pytest.mark.integration]
W = 10_000
N = 50_000


def evaluator(settings: Settings, tmp_path: Path) -> AlertingAgent:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n"
        "        annotations: {summary: '{{ $labels.instance }} is down'}\n"
    )
    alerting = settings.alerting.model_copy(update={"rules": [str(rules)], "watchdog": False})
    s = settings.model_copy(update={"alerting": alerting})
    return AlertingAgent(s, CollectorRegistry())


def test_a_mass_outage_checkpoints_in_chunks_and_restores(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    a = evaluator(kafka_settings, tmp_path)
    now = int(time.time() * 1000)
    end = now - now % W
    for i in range(N):
        labels = {"instance": f"host-{i:05d}.example.internal:9100", "job": "node"}
        a.engine.add(Aggregate(series_key("up", labels), "up", labels, W, end - W, end,
                               1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))  # fmt: skip
    changed = a.engine.evaluate(end)
    assert len(changed) == N and len(a.engine.firing()) == N
    a.clock.last_evaluated_ms = end
    a._dirty = True
    asyncio.run(a.checkpoint())
    assert not a._dirty
    raw = read_table(kafka_settings.kafka.bootstrap_servers,
                     topics.topic_name(kafka_settings.kafka, topics.ALERTING_STATE), 0)  # fmt: skip
    biggest = max(len(k) + len(v) for k, v in raw.items())
    state = join(raw).table[STATE_KEY]
    print(f"evaluator state: {len(state)} bytes in {len(raw)} records, largest {biggest}")
    assert biggest <= kafka_settings.kafka.max_message_bytes < len(state)
    b = evaluator(kafka_settings, tmp_path)
    b.start()
    try:
        assert b.engine.to_bytes() == a.engine.to_bytes()
        assert len(b.engine.firing()) == N and b.clock.last_evaluated_ms == end
    finally:
        assert b.consumer is not None
        b.consumer.close()


def test_an_unreadable_state_starts_afresh(kafka_settings: Settings, tmp_path: Path) -> None:
    p = Producer({"bootstrap.servers": kafka_settings.kafka.bootstrap_servers})
    p.produce(topics.topic_name(kafka_settings.kafka, topics.ALERTING_STATE),
              b"\x00not json", STATE_KEY)  # fmt: skip
    assert p.flush(30) == 0
    a = evaluator(kafka_settings, tmp_path)
    a.start()
    try:
        assert a.clock.last_evaluated_ms == 0 and not a.engine.firing()
        bad = a.metrics.invalid.labels("bad-state")._value.get()
        assert bad == 1
    finally:
        assert a.consumer is not None
        a.consumer.close()
