"""The alert evaluator on the real broker, fed poison on the aggregates topic: garbage,
an empty value, a valid record of another type, a schema version nobody knows and a
record over the evaluator's message limit each land on the dead-letter topic with their
reason, from the ``alerting`` stage, and a good window read after them still fires."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from fixtures.agents import Running, wait_for
from fixtures.progress import read_to_end
from prometheus_client import CollectorRegistry

from monitoring.agents.alerting import AlertingAgent
from monitoring.config import Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.runtime import topics
from monitoring.wire.aggregate_encoding import AggregateEncoder
from monitoring.wire.codec import MARKER, AvroCodec

pytestmark = [pytest.mark.integration]
W = 10_000
LIMIT = 100_000  # the evaluator's message limit, below the topic's
CODEC = AvroCodec.from_directory()


def letters(bootstrap: str, topic: str) -> dict[bytes, dict[str, str]]:
    """The evaluator's dead letters: key -> headers."""
    out = {}
    for m in read_to_end(bootstrap, topic):
        h = {k: v.decode() for k, v in m.headers() or []}
        if h.get("x-stage") == "alerting":
            out[m.key()] = h
    return out


def test_poison_on_the_aggregates_topic_is_dead_lettered_and_evaluation_goes_on(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: Hot\n        expr: temp > 80\n"
    )
    s = kafka_settings
    alerting = s.alerting.model_copy(update={"rules": [str(rules)], "watchdog": False})
    kafka = s.kafka.model_copy(update={"max_message_bytes": LIMIT})
    a = AlertingAgent(s.model_copy(update={"alerting": alerting, "kafka": kafka}),
                      CollectorRegistry())  # fmt: skip
    bootstrap = s.kafka.bootstrap_servers
    source = topics.topic_name(s.kafka, topics.AGGREGATES)
    rng = random.Random(5)
    sample = CODEC.encode("monitoring.MetricSample",
                          {"name": "x", "value": 1.0, "timestamp_ms": 1, "labels": {}})  # fmt: skip
    now = int(time.time() * 1000)
    end = now - now % W - W
    labels = {"room": "a"}
    good = AggregateEncoder(CODEC).encode(
        Aggregate(series_key("temp", labels), "temp", labels, W, end - W, end, 1, *[90.0] * 8)
    )
    poison = {
        b"garbage": (b"\x00" + rng.randbytes(63), "bad-marker"),
        b"empty": (b"", "truncated"),
        b"other-type": (sample, "wrong-record"),
        b"future-version": (MARKER + rng.randbytes(8) + good[10:], "unknown-fingerprint"),
        b"oversized": (MARKER + rng.randbytes(3 * LIMIT), "oversized"),
    }
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4 * LIMIT})
    for key, (value, _) in poison.items():
        p.produce(source, value, key, partition=0)
    p.produce(source, good, b"good", partition=0)
    assert p.flush(30) == 0

    running = Running(a)
    try:
        dlq = topics.topic_name(s.kafka, topics.DEAD_LETTER)
        wait_for(lambda: len(letters(bootstrap, dlq)) >= len(poison), 60, "the dead letters")
        got = letters(bootstrap, dlq)
        assert {k: h["x-reason"] for k, h in got.items()} == {
            k: reason for k, (_, reason) in poison.items()
        }
        assert all(h["x-source-topic"] == source for h in got.values())

        def fired() -> Any:
            out = read_to_end(bootstrap, topics.topic_name(s.kafka, topics.ALERTS))
            return [CODEC.decode(m.value()).record["labels"]["alertname"] for m in out]

        wait_for(lambda: "Hot" in fired(), 60, "the alert from the good window")
    finally:
        running.stop()
