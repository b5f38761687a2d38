"""Escalation and acknowledgement through the notifier process on the real broker:
alerts produced onto the alerts topic, an escalation policy whose second tier is paged
when nobody acknowledges in time, and an acknowledgement from the CLI that stops it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer
from fixtures.notify import api_up, free_port

from monitoring.alerts.model import Alert
from monitoring.dev.deploy import BIN
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.wire.alert_encoding import ALERT, to_record
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def send(p: Pipeline, *alerts: Alert) -> None:
    codec = AvroCodec.from_directory()
    prod = Producer({"bootstrap.servers": p.settings.kafka.bootstrap_servers})
    for a in alerts:
        prod.produce(p.topic("alerts"), codec.encode(ALERT, to_record(a)), a.name.encode())
    assert prod.flush(10) == 0


def test_unacknowledged_groups_escalate_and_acked_ones_do_not(
    pipeline_factory, http_receiver_factory, tmp_path: Path
) -> None:
    first, second = http_receiver_factory(), http_receiver_factory()
    config = tmp_path / "notifier.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "primary",
                    "group_by": ["alertname"],
                    "group_wait": "0s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                    "escalation": "oncall",
                },
                "receivers": [
                    {"name": "primary", "webhook_configs": [{"url": f"{first.url}/p"}]},
                    {"name": "secondary", "webhook_configs": [{"url": f"{second.url}/s"}]},
                ],
                "escalation_policies": [
                    {
                        "name": "oncall",
                        "tiers": [
                            {"receivers": ["primary"], "delay": "4s"},
                            {"receivers": ["secondary"]},
                        ],
                    }
                ],
            }
        )
    )
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    p: Pipeline = pipeline_factory(notifier__config=str(config), notifier__api_port=str(port))
    p.start("notifier", "notifier")
    now = int(time.time() * 1000)
    disk = Alert({"alertname": "DiskFull", "host": "a"}, {}, "firing", now)
    cpu = Alert({"alertname": "HighCPU", "host": "b"}, {}, "firing", now)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not api_up(api):
        time.sleep(0.2)
    send(p, disk, cpu)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(first.bodies) < 2:
        time.sleep(0.1)
    assert sorted(b["groupLabels"]["alertname"] for b in first.bodies) == ["DiskFull", "HighCPU"]
    acked = subprocess.run(
        [str(BIN), "alerts", "ack", cpu.fingerprint, "--by", "ann", "--url", api],
        env=p.env, capture_output=True, text=True,
    )  # fmt: skip
    assert acked.returncode == 0, acked.stderr
    time.sleep(7)  # past the tier's delay
    assert [b["groupLabels"]["alertname"] for b in second.bodies] == ["DiskFull"]
    listed = subprocess.run(
        [str(BIN), "alerts", "list", "--url", api], env=p.env, capture_output=True, text=True
    ).stdout
    assert any("HighCPU" in line and "ann" in line for line in listed.splitlines()), listed

    # resolution reaches every tier that was paged
    send(p, Alert(disk.labels, {}, "resolved", now, ends_at_ms=now + 5_000))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(second.bodies) < 2:
        time.sleep(0.1)
    assert [b["status"] for b in second.bodies] == ["firing", "resolved"]
