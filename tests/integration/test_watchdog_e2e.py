"""The Watchdog on the real broker, in process: the evaluator (built-in Watchdog,
1 s windows, re-sends every 2 s) -> alerts topic -> notifier (repeat_interval 1 s) ->
a local webhook. While windows close, the webhook hears the Watchdog firing again and
again; once the evaluator stops, no refresh comes, the alert's horizon passes and the
webhook gets the Watchdog resolved, at that horizon. And the real Alertmanager takes
the horizon of a firing alert as Prometheus posts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Producer
from fixtures.agents import Running, wait_for
from fixtures.notify import Alertmanager, HttpReceiver
from prometheus_client import CollectorRegistry

from monitoring.agents.alerting import AlertingAgent
from monitoring.agents.notifier import NotifierAgent
from monitoring.alerts.manager_config import ManagerConfig
from monitoring.alerts.model import Alert
from monitoring.config import AlertingSettings, Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.runtime import topics
from monitoring.sinks.notifiers import alertmanager as am_channel
from monitoring.wire.aggregate_encoding import CLOSED_THROUGH, AggregateEncoder
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration]
CODEC = AvroCodec.from_directory()
W = 1_000  # the evaluation window
RESEND = 2_000
VALID_FOR = 4 * RESEND  # 4 * max(resend_interval, window)


class Windows:
    """Closes one 1 s window of ``temp`` per second of the clock, as the worker would
    (the close marked), until ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self.producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
        self.topic = topics.topic_name(settings.kafka, topics.AGGREGATES)
        self.encoder = AggregateEncoder(CODEC)
        self.ends: list[int] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        labels = {"room": "a"}
        while not self.stop_event.is_set():
            now = int(time.time() * 1000)
            end = now - now % W
            if not self.ends or end > self.ends[-1]:
                agg = Aggregate(series_key("temp", labels), "temp", labels, W, end - W, end,
                                1, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0)  # fmt: skip
                self.producer.produce(
                    self.topic, self.encoder.encode(agg), b"temp", partition=0,
                    headers=[(CLOSED_THROUGH, str(end).encode())],
                )  # fmt: skip
                self.producer.flush(10)
                self.ends.append(end)
            self.stop_event.wait(0.05)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    r = HttpReceiver().start()
    yield r
    r.stop()


def watchdog_bodies(hook: HttpReceiver) -> list[dict[str, Any]]:
    return [r.body for r in hook.requests if r.path == "/watchdog" and r.answered == 200]


def ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def test_the_watchdog_repeats_while_windows_close_and_resolves_when_the_evaluator_stops(
    kafka_settings: Settings, hook: HttpReceiver, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text("groups: [{name: g, rules: [{alert: Hot, expr: temp > 1000}]}]\n")
    alerting = AlertingSettings.model_validate(
        {**kafka_settings.alerting.model_dump(), "rules": [str(rules)], "window": "1s",
         "resend_interval": "2s", "grace": "300ms", "checkpoint_interval": "200ms"}
    )  # fmt: skip
    assert alerting.watchdog  # the default
    s = kafka_settings.model_copy(update={"alerting": alerting})
    config = tmp_path / "notifier.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "0s",
                  "group_interval": "200ms", "repeat_interval": "1h",
                  "routes": [{"matchers": ['alertname="Watchdog"'], "receiver": "deadman",
                              "repeat_interval": "1s"}]},
        "receivers": [
            {"name": "ops", "webhook_configs": [{"url": f"{hook.url}/ops"}]},
            {"name": "deadman",
             "webhook_configs": [{"url": f"{hook.url}/watchdog", "send_resolved": True}]},
        ],
    }))  # fmt: skip
    registry = CollectorRegistry()
    notifier = Running(NotifierAgent(s, CollectorRegistry(), ManagerConfig.load(config)))
    evaluator = Running(AlertingAgent(s, registry))
    windows = Windows(s)
    try:
        sent = lambda: registry.get_sample_value("alerting_alerts_total", {"status": "firing"})  # noqa: E731
        # re-sent by the evaluator every 2 s; notified every repeat_interval (1 s)
        wait_for(lambda: (sent() or 0) >= 3 and len(watchdog_bodies(hook)) >= 4, 90,
                 "the Watchdog sent three times, notified four times")  # fmt: skip
        evaluator.stop()  # no refresh from now on
        stopped = time.monotonic()
        windows.stop()
        wait_for(lambda: watchdog_bodies(hook)[-1]["status"] == "resolved", 60,
                 "the Watchdog resolved")  # fmt: skip
    finally:
        windows.stop()
        if evaluator.thread.is_alive():
            evaluator.stop()
        notifier.stop()

    bodies = watchdog_bodies(hook)
    *firing, resolved = bodies
    assert all(b["status"] == "firing" and b["receiver"] == "deadman" for b in firing)
    assert all(b["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z" for b in firing)  # hidden
    (alert,) = resolved["alerts"]
    assert alert["labels"] == {"alertname": "Watchdog", "severity": "none"}
    assert alert["status"] == "resolved"
    # resolved at the horizon of the last refresh, sent within RESEND of the last end
    last = evaluator.agent.clock.last_evaluated_ms
    assert last - RESEND < ms(alert["endsAt"]) - VALID_FOR <= last, (alert, last)
    arrived = next(r.at for r in hook.requests if r.body is resolved)
    assert arrived > stopped
    assert not [r for r in hook.requests if r.path == "/ops"]  # Hot never fired


def test_a_real_alertmanager_keeps_a_firing_alert_until_its_horizon(
    alertmanager_factory: Callable[..., Alertmanager],
) -> None:
    am = alertmanager_factory()
    now = int(time.time() * 1000)
    later = Alert({"alertname": "Watchdog", "severity": "none"}, {}, "firing", now, now + 240_000)
    soon = Alert({"alertname": "Soon"}, {}, "firing", now, now + 1_500)
    r = httpx.post(f"{am.url}/api/v2/alerts", json=am_channel.payload((later, soon)), timeout=5)
    assert r.status_code == 200, r.text
    (kept,) = [a for a in am.alerts() if a["labels"]["alertname"] == "Watchdog"]
    assert kept["status"]["state"] == "active"
    assert ms(kept["endsAt"]) == now + 240_000
    # without a refresh, Alertmanager resolves the other one at its horizon, as we do
    wait_for(lambda: [a["labels"]["alertname"] for a in am.alerts()] == ["Watchdog"], 30,
             "Soon resolved by Alertmanager")  # fmt: skip
