"""Escalation and acknowledgement through the notifier process on the real broker:
alerts produced onto the alerts topic, an escalation policy whose second tier is paged
when nobody acknowledges in time, and an acknowledgement that stops it (through the API:
it races the tier's delay, and the CLI's start takes seconds on a loaded machine; the
CLI's acknowledgement is checked after).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Producer
from fixtures.agents import wait_for
from fixtures.notify import HttpReceiver, api_up, free_port

from monitoring.alerts.model import Alert
from monitoring.dev.deploy import BIN
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.wire.alert_encoding import ALERT, to_record
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TIER_DELAY_S = 6  # covers an ack's way through the API and the commands topic


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
                            {"receivers": ["primary"], "delay": f"{TIER_DELAY_S}s"},
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
    wait_for(lambda: api_up(api), 60, "the notifier's API")
    # HighCPU is notified first, so its escalation falls due first: once DiskFull (sent
    # after that) has escalated and nothing is in flight, HighCPU's would have too
    send(p, cpu)
    wait_for(lambda: len(first.bodies) >= 1, 30, "HighCPU notified")
    send(p, disk)
    # the ack races the tier's delay: through the API (the CLI's start alone takes
    # seconds on a loaded machine); the CLI's ack is checked below
    started = time.monotonic()
    ack = {"fingerprint": cpu.fingerprint, "by": "ann"}
    assert httpx.post(f"{api}/api/v2/acks", json=ack, timeout=10).status_code == 200
    wait_for(lambda: acked_by(api, cpu.fingerprint) == "ann", 30, "the ack applied")
    took = time.monotonic() - started
    wait_for(lambda: len(first.bodies) >= 2, 30, "DiskFull notified")
    assert [b["groupLabels"]["alertname"] for b in first.bodies] == ["HighCPU", "DiskFull"]
    wait_for(lambda: len(second.bodies) >= 1, 60, "DiskFull escalated")
    wait_for(lambda: in_flight(api) == 0, 30, "no delivery in flight")
    assert [b["groupLabels"]["alertname"] for b in second.bodies] == ["DiskFull"], (
        f"the ack took {took:.1f}s, the tier's delay is {TIER_DELAY_S}s"
    )
    acked = subprocess.run(
        [str(BIN), "alerts", "ack", disk.fingerprint, "--by", "bob", "--url", api],
        env=p.env, capture_output=True, text=True,
    )  # fmt: skip
    assert acked.returncode == 0, acked.stderr
    wait_for(lambda: acked_by(api, disk.fingerprint) == "bob", 30, "the CLI's ack applied")
    listed = subprocess.run(
        [str(BIN), "alerts", "list", "--url", api], env=p.env, capture_output=True, text=True
    ).stdout
    assert any("HighCPU" in line and "ann" in line for line in listed.splitlines()), listed
    assert any("DiskFull" in line and "bob" in line for line in listed.splitlines()), listed

    # resolution reaches every tier that was paged
    send(p, Alert(disk.labels, {}, "resolved", now, ends_at_ms=now + 5_000))
    wait_for(lambda: len(disk_bodies(second)) >= 2, 30, "the resolution at the second tier")
    assert [b["status"] for b in disk_bodies(second)] == ["firing", "resolved"]


def disk_bodies(receiver: HttpReceiver) -> list[dict[str, Any]]:
    return [b for b in receiver.bodies if b["groupLabels"]["alertname"] == "DiskFull"]


def in_flight(api: str) -> int:
    return int(httpx.get(f"{api}/healthz", timeout=5).json()["deliveries_in_flight"])


def acked_by(api: str, fingerprint: str) -> str | None:
    """Who acknowledged the alert ``fingerprint``, as the notifier's API says."""
    for a in httpx.get(f"{api}/api/v2/alerts", timeout=5).json():
        if a.get("fingerprint") == fingerprint:
            return a.get("acknowledgedBy")
    return None
