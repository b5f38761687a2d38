"""The notifier's state and input on the real broker: poison records on its topics are
dead-lettered and the alerts after them delivered; a state of 50,000 alerts in one group
and 1,000 long silences checkpoints in records under the message limit and restores
equal; with a receiver down, checkpoints go on, so a kill -9 re-sends only what was in
flight."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Consumer, Producer
from fixtures.agents import Running, wait_for
from fixtures.notify import HttpReceiver, api_up, cpu_alert, free_port
from prometheus_client import CollectorRegistry

from monitoring.agents.notifier import NotifierAgent
from monitoring.alerts.commands import CreateSilence, command_to_bytes
from monitoring.alerts.manager_config import ManagerConfig
from monitoring.alerts.model import Alert
from monitoring.config import Settings
from monitoring.dev.deploy import LocalDeployment
from monitoring.runtime import topics
from monitoring.runtime.changelog import read_table
from monitoring.runtime.state_chunks import join
from monitoring.sinks.notifiers.dispatcher import DeliveredKeys
from monitoring.wire.alert_encoding import to_record
from monitoring.wire.codec import MARKER, AvroCodec

pytestmark = [pytest.mark.integration]
CODEC = AvroCodec.from_directory()


def manager_config(tmp_path: Path, urls: list[str], group_wait: str = "50ms") -> Path:
    path = tmp_path / "notifier.yml"
    route = {"receiver": "ops", "group_by": ["alertname"], "group_wait": group_wait,
             "group_interval": "1s", "repeat_interval": "1h"}  # fmt: skip
    hooks = [{"url": u, "send_resolved": True} for u in urls]
    receivers = [{"name": "ops", "webhook_configs": hooks}]
    path.write_text(yaml.safe_dump({"route": route, "receivers": receivers}))
    return path


def alert_bytes(alert: Alert) -> bytes:
    return CODEC.encode("monitoring.Alert", to_record(alert))


def produce(
    settings: Settings, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    p = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "message.max.bytes": settings.kafka.max_message_bytes,
        }
    )
    for key, value in records:
        p.produce(topic, value, key)
    assert p.flush(30) == 0


def dead_letters(settings: Settings, n: int) -> list[Any]:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "dl-read",
                  "auto.offset.reset": "earliest"})  # fmt: skip
    c.subscribe([topics.topic_name(settings.kafka, topics.DEAD_LETTER)])
    out: list[Any] = []
    deadline = time.monotonic() + 60
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append(m)
    c.close()
    return out


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    r = HttpReceiver().start()
    yield r
    r.stop()


def test_poison_on_the_alerts_and_commands_topics(
    kafka_settings: Settings, hook: HttpReceiver, tmp_path: Path
) -> None:
    s = kafka_settings
    config = ManagerConfig.load(manager_config(tmp_path, [f"{hook.url}/hook"]))
    sample = CODEC.encode("monitoring.MetricSample",
                          {"name": "x", "value": 1.0, "timestamp_ms": 1, "labels": {}})  # fmt: skip
    future = MARKER + b"\x01\x02\x03\x04\x05\x06\x07\x08" + b"\x02ab"
    poison = [
        (b"HighCPU", b"\x00garbage\xff"),
        (b"HighCPU", b""),
        (b"HighCPU", sample),  # a valid record of another type
        (b"HighCPU", future),  # a writer schema this version does not know
        (b"HighCPU", os.urandom(3 * 1024 * 1024)),  # large and random
    ]
    alerts_topic = topics.topic_name(s.kafka, topics.ALERTS)
    commands_topic = topics.topic_name(s.kafka, topics.ALERT_COMMANDS)
    produce(s, alerts_topic, poison)
    produce(s, commands_topic, [(b"silence:x", b"{not json"), (b"ack:y", sample),
                                (b"silence:z", b'{"kind": "create_silence"}')])  # fmt: skip
    produce(s, alerts_topic, [(b"HighCPU", alert_bytes(cpu_alert("db1")))])
    running = Running(NotifierAgent(s, CollectorRegistry(), config))
    try:
        wait_for(lambda: len(hook.bodies) >= 1, 60, "the good alert delivered")
        assert hook.bodies[0]["alerts"][0]["labels"]["host"] == "db1"
        got = dead_letters(s, len(poison))
        reasons = sorted(dict(m.headers())["x-reason"].decode() for m in got)
        assert len(got) == len(poison), reasons
        assert all(dict(m.headers())["x-stage"] == b"notifier" for m in got)
        assert "unexpected-record" in reasons and "unknown-fingerprint" in reasons, reasons
        invalid = running.agent.invalid
        assert sum(s.value for m in invalid.collect() for s in m.samples
                   if s.name.endswith("_total")) >= len(poison) + 3  # fmt: skip
        assert running.thread.is_alive() and running.error is None
    finally:
        running.stop()
    assert running.error is None


def test_mass_outage_state_is_chunked_and_restores_equal(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """50,000 alert instances in one group and 1,000 silences with 4 KiB comments."""
    s = kafka_settings
    config = ManagerConfig.load(manager_config(tmp_path, ["http://127.0.0.1:9/hook"]))
    agent = NotifierAgent(s, CollectorRegistry(), config)
    agent.start()
    now = int(time.time() * 1000)
    for i in range(50_000):
        agent.manager.receive(cpu_alert(f"host{i}"), now)
    for i in range(1_000):
        cmd = CreateSilence(id=f"s{i}", silence={
            "matchers": [{"name": "host", "value": f"host{i}.*", "isRegex": True}],
            "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "test", "comment": "c" * 4096})  # fmt: skip
        agent.manager.apply(command_to_bytes(cmd), now)
    agent._dirty = True
    asyncio.run(agent.checkpoint())
    assert not agent._unwritten
    state_topic = topics.topic_name(s.kafka, topics.NOTIFIER_STATE)
    raw = read_table(s.kafka.bootstrap_servers, state_topic, 0)
    biggest = max(len(k) + len(v) for k, v in raw.items())
    whole = sum(len(v) for v in join(raw).table.values())
    print(f"state: {len(raw)} records, largest {biggest} bytes, {whole} bytes in all")
    assert biggest <= s.kafka.max_message_bytes and whole > 4 * s.kafka.max_message_bytes
    restored = NotifierAgent(s, CollectorRegistry(), config)
    restored.start()
    assert restored.manager.to_bytes() == agent.manager.to_bytes()
    assert len(restored.manager.silences.list(now)) == 1_000
    for a in (agent, restored):
        assert a.consumer is not None
        a.consumer.close()


@pytest.mark.slow
def test_checkpoints_go_on_while_a_receiver_is_down(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Receiver "up" gets each notification at once, "down" refuses connections: the
    notifications stay in flight. Checkpoints still happen, so after a kill -9 the
    restarted notifier re-sends the in-flight ones to "down" only."""
    up = HttpReceiver().start()
    down = HttpReceiver()  # not listening yet
    api_port = free_port()
    config = manager_config(tmp_path, [f"{up.url}/up", f"{down.url}/down"])
    p = LocalDeployment(kafka_bootstrap, tmp_path / "p", notifier__config=str(config),
                        notifier__api_port=str(api_port),
                        notifier__checkpoint_interval="200ms")  # fmt: skip
    api = f"http://127.0.0.1:{api_port}"
    state_topic = p.topic("alerts.notifier.state")
    try:
        p.start("notifier", "notifier")
        wait_for(lambda: api_up(api), 60, "notifier API")
        names = ["A", "B", "C"]
        produce(p.settings, p.topic("alerts"), [
            (n.encode(), alert_bytes(Alert({"alertname": n}, {}, "firing", 1_000)))
            for n in names])  # fmt: skip
        wait_for(lambda: len(up.bodies) == 3, 60, "three notifications to up")

        def checkpointed() -> bool:
            table = join(read_table(p.settings.kafka.bootstrap_servers, state_topic, 0)).table
            if b"inflight" not in table:
                return False
            inflight = json.loads(table[b"inflight"])
            return len(inflight) == 3 and len(DeliveredKeys.from_bytes(table[b"delivered"])) == 3

        wait_for(checkpointed, 60, "a checkpoint with three notifications in flight")
        p.kill("notifier")
        down.start()
        p.start("notifier", "notifier2")
        wait_for(lambda: len(down.bodies) == 3, 60, "the in-flight notifications re-sent")
        wait_for(lambda: httpx.get(f"{api}/healthz").json()["deliveries_in_flight"] == 0, 60,
                 "no delivery in flight")  # fmt: skip
        assert sorted(b["groupLabels"]["alertname"] for b in down.bodies) == names
        assert len(up.bodies) == 3, "a delivery recorded before the crash was sent again"
    finally:
        p.stop_all()
        up.stop()
        down.stop()
        p.delete_topics()
