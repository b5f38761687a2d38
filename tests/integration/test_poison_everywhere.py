"""Poison on every topic the project consumes, with every process running: garbage, an
empty value, a valid record of another type, a schema version nobody knows and a record
near the message limit on each input topic, and garbage under live keys of every state
topic before the processes restore from it. Nothing crash-loops: every process stays up,
every poison input record is dead-lettered (or, on the commands topic, skipped and
counted), and good samples produced afterwards still become stored aggregates and an
alert delivered to a webhook."""

from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, Producer
from fixtures.notify import HttpReceiver, api_up

from monitoring.dev.deploy import LocalDeployment, free_port
from monitoring.metrics.collector import MetricsCollector
from monitoring.wire.codec import MARKER, AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CODEC = AvroCodec.from_directory()

INPUTS = [  # every topic a process reads records from (not state)
    "metrics.samples", "metrics.aggregates", "anomalies", "alerts", "alerts.commands",
    "alerts.deliveries", "logs.records", "logs.stored", "logs.templates",
    "models.predictions", "models.labels",
]  # fmt: skip
STATES = {  # state topic -> keys its owner writes (poisoned before it restores)
    "aggregation.state": [b"\x00checkpoint", b'temp{room="a"}'],
    "anomaly.state": [b'temp{room="a"}'],
    "logs.state": [b"\x00checkpoint", b"api"],
    "models.state": [b"\x00meta", b"p\x00req-1", b"m\x00{}"],
    "alerts.state": [b"engine"],
    "alerts.notifier.state": [b"positions", b"delivered", b"am:meta", b"inflight"],
}
RULES = """
groups:
  - name: rooms
    rules:
      - alert: RoomHot
        expr: temp > 80
"""


def poison(limit: int) -> list[tuple[str, bytes | None]]:
    rng = random.Random(7)
    sample = CODEC.encode("monitoring.MetricSample",
                          {"name": "x", "value": 1.0, "timestamp_ms": 1, "labels": {}})  # fmt: skip
    body = sample[len(MARKER) + 8 :]
    return [
        ("garbage", b"\x00" + rng.randbytes(63)),
        ("empty", b""),
        ("other-type", sample),  # a MetricSample where another record belongs
        ("future-version", MARKER + rng.randbytes(8) + body),
        ("near-limit", b"\xc3\x01" + os.urandom(limit - 64 * 1024)),
    ]


def produce(bootstrap: str, limit: int, records: list[tuple[str, int | None, bytes, bytes | None]]
            ) -> list[tuple[str, int, int]]:  # fmt: skip
    """Send (topic, partition, key, value) in order; where each landed."""
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": limit,
                  "enable.idempotence": True})  # fmt: skip
    landed: list[tuple[str, int, int]] = []

    def done(err: KafkaError | None, msg: Any) -> None:
        assert err is None, err
        landed.append((msg.topic(), msg.partition(), msg.offset()))

    for topic, partition, key, value in records:
        kwargs: dict[str, Any] = {"on_delivery": done}
        if partition is not None:
            kwargs["partition"] = partition
        p.produce(topic, value, key, **kwargs)
        p.poll(0)
    assert p.flush(60) == 0
    return landed


def dead_letter_sources(p: LocalDeployment) -> set[tuple[str, int, int]]:
    c = Consumer({"bootstrap.servers": p.settings.kafka.bootstrap_servers,
                  "group.id": f"dlq-{p.prefix}", "auto.offset.reset": "earliest"})  # fmt: skip
    c.subscribe([p.topic("dead-letter")])
    out: set[tuple[str, int, int]] = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            h = {k: v.decode() for k, v in m.headers() or []}
            assert h.get("x-reason"), h
            out.add((h["x-source-topic"], int(h["x-source-partition"]),
                     int(h["x-source-offset"])))  # fmt: skip
    c.close()
    return out


def test_poison_on_every_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    hook = HttpReceiver().start()
    rules = tmp_path / "rooms.rules.yml"
    rules.write_text(RULES)
    notifier_config = tmp_path / "notifier.yml"
    notifier_config.write_text(yaml.safe_dump({
        "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "100ms",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "ops", "webhook_configs": [{"url": f"{hook.url}/hook"}]}],
    }))  # fmt: skip
    api_port, worker_port = free_port(), free_port()
    p = LocalDeployment(
        kafka_bootstrap, tmp_path / "p",
        alerting__rules=f'["{rules}"]', alerting__checkpoint_interval="200ms",
        notifier__config=str(notifier_config), notifier__api_port=str(api_port),
        notifier__checkpoint_interval="200ms", worker__metrics_port=str(worker_port),
    )  # fmt: skip
    limit = p.settings.kafka.max_message_bytes
    bootstrap = p.settings.kafka.bootstrap_servers
    try:
        # garbage under the keys each owner restores, in every partition of its state topic
        state_records = []
        for role, keys in STATES.items():
            parts = 1 if role.startswith("alerts.") else p.settings.kafka.samples_partitions
            for part in range(parts):
                for key in keys:
                    state_records.append((p.topic(role), part, key, b"\x00\xffnot state"))
        produce(bootstrap, limit, state_records)
        sent = produce(bootstrap, limit, [
            (p.topic(role), None, f"poison-{name}".encode(), value)
            for role in INPUTS for name, value in poison(limit)
        ])  # fmt: skip

        p.start_store()
        p.start("worker", "worker")
        p.start("alerting", "alerting")
        p.start("notifier", "notifier")
        p.wait(lambda: api_up(f"http://127.0.0.1:{api_port}"), 90, "notifier API")

        now = int(time.time() * 1000)
        start = now - now % 10_000 - 60_000
        with MetricsCollector(p.settings, batch=True, linger=0.05) as mc:
            for t in range(start, now, 1_000):
                mc.record("temp", 90.0, {"room": "a"}, timestamp_ms=t)
            mc.flush(60)

        p.wait(lambda: p.query("SELECT count() FROM aggregates FINAL WHERE name = 'temp'")[0][0]
               > 0, 120, f"aggregates stored\n{p.logs()}")  # fmt: skip
        p.wait(lambda: any(b["groupLabels"].get("alertname") == "RoomHot" for b in hook.bodies),
               120, f"the alert delivered\n{p.logs()}")  # fmt: skip
        for name, proc in p.procs.items():
            assert proc.poll() is None, f"{name} exited\n{p.logs()}"

        # every poison record of every input topic was dead-lettered, by some reader
        # (the commands topic's readers skip and count instead)
        want = {s for s in sent if not s[0].endswith("alerts.commands")}
        seen: set[tuple[str, int, int]] = set()

        def all_dead_lettered() -> bool:
            seen.update(dead_letter_sources(p))
            return want <= seen

        with contextlib.suppress(TimeoutError):  # the assert below names what is missing
            p.wait(all_dead_lettered, 60, "every poison record dead-lettered")
        missing = sorted(want - seen)
        assert not missing, sorted({t for t, _, _ in missing})
    finally:
        p.stop_all()
        hook.stop()
        p.delete_topics()
