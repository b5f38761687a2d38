"""The whole alert path on real parts: samples -> worker -> evaluator -> alerts topic ->
notifier -> a local webhook, a real SMTP server (aiosmtpd) and the real Alertmanager
binary; a silence made with the CLI; the notifier killed (SIGKILL) between firing and
resolution re-sends nothing; every delivery is in ClickHouse's delivery log.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from fixtures.agents import wait_for
from fixtures.notify import SMTP_PASSWORD, SMTP_USER, api_up, free_port
from fixtures.progress import notifier_caught_up, notifier_checkpoint

from monitoring.dev.deploy import BIN
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.metrics.collector import MetricsCollector

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = """
groups:
  - name: rooms
    rules:
      - alert: RoomHot
        expr: temp > 80
        labels: {severity: critical}
        annotations: {summary: "room {{ $labels.room }} is hot"}
"""
HOT = range(10, 20)


def produce(p: Pipeline, start: int, windows: range) -> None:
    with MetricsCollector(p.settings, batch=True, linger=0.05) as mc:
        for w in windows:
            for room in ("a", "b", "c"):
                hot = room in "ab" and w in HOT
                for i in range(10):
                    ts = start + w * 10_000 + i * 1_000
                    mc.record("temp", 90.0 if hot else 50.0, {"room": room}, timestamp_ms=ts)
        mc.flush(60)


def test_alerts_reach_webhook_smtp_and_alertmanager_once(
    pipeline_factory, http_receiver_factory, smtp_server, alertmanager_factory, tmp_path: Path
) -> None:
    hook = http_receiver_factory()
    am = alertmanager_factory()
    rules = tmp_path / "rooms.rules.yml"
    rules.write_text(RULES)
    am_config = tmp_path / "notifier.yml"
    am_config.write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "ops",
                    "group_by": ["alertname"],
                    "group_wait": "300ms",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [
                    {
                        "name": "ops",
                        "webhook_configs": [{"url": f"{hook.url}/hook"}],
                        "email_configs": [
                            {
                                "to": "oncall@example.com",
                                "from": "alerts@example.com",
                                "smarthost": f"{smtp_server.host}:{smtp_server.port}",
                                "auth_username": SMTP_USER,
                                "auth_password": "${SMTP_PASSWORD}",
                                "require_tls": False,
                                "send_resolved": True,
                            }
                        ],
                        "alertmanager_configs": [{"url": am.url}],
                    }
                ],
            }
        )
    )
    api_port = free_port()
    p: Pipeline = pipeline_factory(
        alerting__rules=f'["{rules}"]',
        alerting__checkpoint_interval="200ms",
        notifier__config=str(am_config),
        notifier__api_port=str(api_port),
        notifier__checkpoint_interval="200ms",
    )
    p.env["SMTP_PASSWORD"] = SMTP_PASSWORD
    api = f"http://127.0.0.1:{api_port}"
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 10 * 60_000

    p.start_store()
    p.start("worker", "worker")
    p.start("alerting", "alerting")
    notifier = p.start("notifier", "notifier")
    p.wait(lambda: api_up(api), 60, "notifier API")
    silence = subprocess.run(
        [str(BIN), "alerts", "silence", "add", 'room="b"', "--duration", "1h", "--url", api,
         "--comment", "b is being fixed"],
        env=p.env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    listed = subprocess.run(
        [str(BIN), "alerts", "silence", "list", "--url", api],
        env=p.env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert silence in listed and "active" in listed

    produce(p, start, range(0, 15))
    wait_for(lambda: len(hook.bodies) >= 1, 90, f"the firing notification\n{p.logs()}")
    firing = hook.bodies[0]
    assert firing["status"] == "firing" and firing["receiver"] == "ops"
    assert [a["labels"]["room"] for a in firing["alerts"]] == ["a"]  # b is silenced
    assert firing["alerts"][0]["annotations"] == {"summary": "room a is hot"}
    wait_for(lambda: len(smtp_server.envelopes) >= 1, 30, "the firing e-mail")
    wait_for(lambda: len(am.alerts()) == 1, 30, "the alert in Alertmanager")
    got_am = am.alerts()[0]
    assert got_am["labels"] == {"alertname": "RoomHot", "room": "a", "severity": "critical"}
    assert got_am["fingerprint"] == firing["alerts"][0]["fingerprint"]

    bootstrap, state = p.settings.kafka.bootstrap_servers, p.topic("alerts.notifier.state")

    def firing_checkpointed() -> bool:  # the three firing deliveries, none in flight
        cp = notifier_checkpoint(bootstrap, state)
        return cp is not None and cp["delivered"] >= 3 and not cp["inflight"]

    wait_for(firing_checkpointed, 60, "a notifier checkpoint past the firing deliveries")
    notifier.kill()
    notifier.wait()
    p.start("notifier", "notifier2")
    p.wait(lambda: api_up(api), 60, "notifier API again")
    produce(p, start, range(15, 30))
    wait_for(lambda: len(hook.bodies) >= 2, 90, f"the resolved notification\n{p.logs()}")
    # a duplicate would have been sent by the time the new notifier's checkpoint has
    # read every alert and has nothing in flight
    wait_for(lambda: notifier_caught_up(bootstrap, state, p.topic("alerts")), 60,
             "the notifier caught up with the alerts")  # fmt: skip
    assert [b["status"] for b in hook.bodies] == ["firing", "resolved"]
    assert [a["labels"]["room"] for a in hook.bodies[1]["alerts"]] == ["a"]
    wait_for(lambda: len(smtp_server.envelopes) >= 2, 30, "the resolved e-mail")
    assert len(smtp_server.envelopes) == 2
    assert smtp_server.envelopes[0][1] == ["oncall@example.com"]
    assert smtp_server.logins == [SMTP_USER, SMTP_USER]
    wait_for(
        lambda: am.alerts(active="false", silenced="true", inhibited="true", unprocessed="true")
        == [] or am.alerts()[0]["endsAt"] != got_am["endsAt"], 30, "the resolution in Alertmanager"
    )  # fmt: skip

    # the delivery log: one delivered row per integration and state change, no secret
    wait_for(lambda: _deliveries(p) >= 6, 60, "the delivery log")
    rows = p.query("SELECT receiver, integration, outcome, error FROM deliveries FINAL")
    delivered = [r for r in rows if r[2] == "delivered"]
    assert len(delivered) == 6, rows
    assert not any(SMTP_PASSWORD in str(r) for r in rows)


def _deliveries(p: Pipeline) -> int:
    return int(p.query("SELECT count() FROM deliveries FINAL WHERE outcome = 'delivered'")[0][0])
