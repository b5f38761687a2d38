"""The alert evaluator dead-letters what it cannot take, with the reason, and goes on:
garbage, an empty value, a valid record of another type, a schema version nobody knows,
a record over the message limit, a window off the grid and one from the future. The
dead-letter producer is refused when full rather than waited for."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

from fixtures.agents import Sent
from prometheus_client import CollectorRegistry

from monitoring.agents.alerting import AlertingAgent
from monitoring.config import Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.runtime.outputs import DeadLetters
from monitoring.wire.aggregate_encoding import AggregateEncoder
from monitoring.wire.codec import MARKER, AvroCodec

W = 10_000
CODEC = AvroCodec.from_directory()
RULES = """
groups:
  - name: g
    rules:
      - alert: Hot
        expr: temp > 80
"""


class FakeProducer:
    """Keeps what is produced; raises ``BufferError`` while ``full``."""

    def __init__(self) -> None:
        self.full = False
        self.polls = 0
        self.sent: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> None:
        if self.full:
            raise BufferError("full")
        self.sent.append((topic, key, value, dict(headers)))

    def poll(self, _timeout: float) -> int:
        self.polls += 1
        return 0


def agent(tmp_path: Path) -> tuple[AlertingAgent, Sent, FakeProducer]:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    settings = Settings(alerting={"rules": [str(rules)], "watchdog": False})  # type: ignore[arg-type]
    producer = FakeProducer()
    dl = DeadLetters(settings.kafka, "dlq", "alerting", producer=producer, wait_s=0)
    a = AlertingAgent(settings, CollectorRegistry(), dead_letters=dl)
    sent = Sent()
    a.outputs = sent  # type: ignore[assignment]
    a.begin_catch_up({}, {})
    return a, sent, producer


def aggregate(end: int, value: float = 90.0) -> bytes:
    labels = {"room": "a"}
    return AggregateEncoder(CODEC).encode(
        Aggregate(series_key("temp", labels), "temp", labels, W, end - W, end, 1, *[value] * 8)
    )


def poison(limit: int, now_end: int) -> list[tuple[str, bytes | None, str]]:
    """(name, value, the reason expected on its dead letter)."""
    rng = random.Random(3)
    sample = CODEC.encode(
        "monitoring.MetricSample", {"name": "x", "value": 1.0, "timestamp_ms": 1, "labels": {}}
    )
    body = aggregate(now_end)[len(MARKER) + 8 :]
    return [
        ("garbage", b"\x00" + rng.randbytes(63), "bad-marker"),
        ("empty", b"", "truncated"),
        ("null", None, "not-bytes"),
        ("other-type", sample, "wrong-record"),
        ("future-version", MARKER + b"\xee" * 8 + body, "unknown-fingerprint"),
        ("oversized", MARKER + os.urandom(limit), "oversized"),
        ("off-grid", aggregate(now_end - W + 1), "window-off-grid"),
        ("in-future", aggregate(now_end + 3_600_000), "window-in-future"),
    ]


def test_each_bad_record_is_dead_lettered_with_its_reason_and_evaluation_goes_on(
    tmp_path: Path,
) -> None:
    a, sent, producer = agent(tmp_path)
    now = int(time.time() * 1000)
    end = now - now % W - 2 * W
    bad = poison(a.settings.kafka.max_message_bytes, end)
    for offset, (name, value, _) in enumerate(bad):
        a.handle(0, value, None, offset, f"poison-{name}".encode())
    a.handle(0, aggregate(end), None, len(bad), b"good")
    asyncio.run(a.evaluate_due(now + 3_600_000))

    assert [(t, k) for t, k, _, _ in producer.sent] == [
        ("dlq", f"poison-{name}".encode()) for name, _, _ in bad
    ]
    for (_, _, value, headers), (name, original, reason), offset in zip(
        producer.sent, bad, range(len(bad)), strict=True
    ):
        assert headers["x-reason"] == reason.encode(), name
        assert headers["x-stage"] == b"alerting"
        assert headers["x-source-topic"] == a.source.encode()
        assert headers["x-source-offset"] == str(offset).encode()
        if name == "oversized":  # cut to fit the limit, its size said
            assert value is not None and original is not None
            assert original.startswith(value) and len(value) < len(original)
            assert headers["x-truncated"] == str(len(original)).encode()
        else:
            assert value == original, name
        assert a.metrics.invalid.labels(reason)._value.get() >= 1
    # and the good window after them was evaluated: the alert fired
    alerts = [CODEC.decode(v).record for v in sent.values("alerts")]
    assert [(r["labels"]["alertname"], r["status"].lower()) for r in alerts] == [("Hot", "firing")]
    assert a.clock.last_evaluated_ms >= end


def test_a_full_dead_letter_queue_drops_the_letter_without_waiting(tmp_path: Path) -> None:
    a, _, producer = agent(tmp_path)
    producer.full = True
    a.handle(0, b"\x00garbage", None, 0, b"k")
    assert producer.sent == [] and producer.polls == 0  # refused at once, no wait
    assert a.metrics.dead_letter_failures._value.get() == 1
    producer.full = False
    a.handle(0, b"\x00garbage", None, 1, b"k")
    assert len(producer.sent) == 1
