"""Notifiers against real receivers: aiosmtpd, local HTTP servers, the real Alertmanager.

Also the failure cases: a receiver that times out, one that answers 500 then 200, one
that is down (connection refused) for a while then comes up - scaled from "a minute"
to about 2 s by the retry settings (backoff 0.2 s doubling to 1 s). Rate limit and
idempotence across a checkpoint are checked on the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import structlog
from fixtures.notify import (
    ENDS_MS,
    GROUP_KEY,
    SMTP_PASSWORD,
    SMTP_USER,
    Alertmanager,
    HttpReceiver,
    Reply,
    SmtpSink,
    cpu_alert,
    cpu_notification,
    free_port,
)

from monitoring.alerts.model import Alert, Notification
from monitoring.alerts.receivers import parse_receivers
from monitoring.sinks.notifiers import webhook
from monitoring.sinks.notifiers.dispatcher import (
    DeliveredKeys,
    DeliveryRecord,
    Dispatcher,
    RetryPolicy,
)

pytestmark = pytest.mark.integration
FAST = RetryPolicy(initial_backoff_s=0.2, multiplier=2, max_backoff_s=1.0, jitter=0, timeout_s=2)
HttpFactory = Callable[..., HttpReceiver]


def dispatcher(
    receivers: list[dict[str, Any]], **kw: Any
) -> tuple[Dispatcher, list[DeliveryRecord]]:
    records: list[DeliveryRecord] = []
    kw.setdefault("policy", FAST)
    d = Dispatcher(parse_receivers(receivers), on_record=records.append, **kw)
    return d, records


async def failed_attempts(
    records: list[DeliveryRecord], receiver: str, n: int, timeout: float = 30
) -> None:
    """Wait until ``receiver`` has ``n`` attempts recorded as retrying."""
    deadline = time.monotonic() + timeout
    while sum(r.receiver == receiver and r.outcome == "retrying" for r in records) < n:
        assert time.monotonic() < deadline, f"{receiver}: fewer than {n} failed attempts"
        await asyncio.sleep(0.05)


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


async def test_email_to_a_real_smtp_server_firing_and_resolved(smtp_server: SmtpSink) -> None:
    receivers = [
        {
            "name": "mail",
            "email_configs": [
                {
                    "to": "oncall@example.com, db@example.com",
                    "from": "monitoring@example.com",
                    "smarthost": f"{smtp_server.host}:{smtp_server.port}",
                    "require_tls": False,
                    "auth_username": SMTP_USER,
                    "auth_password": SMTP_PASSWORD,
                    "send_resolved": True,
                }
            ],
        }
    ]
    d, records = dispatcher(receivers)
    with structlog.testing.capture_logs() as logs:
        async with d:
            await d.deliver(cpu_notification("mail", ("firing", "firing")))
            await d.deliver(cpu_notification("mail", ("resolved", "resolved")))
    assert [r.outcome for r in records] == ["delivered", "delivered"]
    assert smtp_server.logins == [SMTP_USER, SMTP_USER]
    (f_from, f_to, firing), (r_from, r_to, resolved) = smtp_server.envelopes
    assert f_from == r_from == "monitoring@example.com"
    assert f_to == r_to == ["oncall@example.com", "db@example.com"]
    assert firing["Subject"] == "[FIRING:2] HighCPU"
    assert resolved["Subject"] == "[RESOLVED] HighCPU"
    assert firing["To"] == "oncall@example.com, db@example.com"
    body = str(firing.get_payload())
    assert body.count("[FIRING] HighCPU") == 2 and "host=db1" in body and "host=db2" in body
    rbody = str(resolved.get_payload())
    assert rbody.count("[RESOLVED] HighCPU") == 2
    assert "ends: 2023-11-14T22:18:20.000Z" in rbody
    assert SMTP_PASSWORD not in repr(logs) + repr(records)


async def test_email_bad_password_is_a_permanent_failure(smtp_server: SmtpSink) -> None:
    receivers: list[dict[str, Any]] = [
        {
            "name": "mail",
            "email_configs": [
                {
                    "to": "oncall@example.com",
                    "from": "m@example.com",
                    "smarthost": f"127.0.0.1:{smtp_server.port}",
                    "require_tls": False,
                    "auth_username": SMTP_USER,
                    "auth_password": "wrong-Pa55word",
                }
            ],
        }
    ]
    d, records = dispatcher(receivers)
    async with d:
        (rec,) = await d.deliver(cpu_notification("mail"))
    assert (rec.outcome, rec.attempt, rec.http_status) == ("failed", 1, 535)
    assert rec.error.startswith("SMTP 535")
    assert smtp_server.envelopes == [] and "wrong-Pa55word" not in repr(records)
    # A server that requires nothing but we require TLS: refused, not sent in clear.
    tls = {**receivers[0]["email_configs"][0], "require_tls": True}
    d, records = dispatcher([{"name": "mail", "email_configs": [tls]}])
    async with d:
        (rec,) = await d.deliver(cpu_notification("mail"))
    assert (rec.outcome, rec.error) == (
        "failed",
        "require_tls is set but the server does not offer STARTTLS",
    )


async def test_email_with_line_breaks_in_label_values_is_delivered(
    smtp_server: SmtpSink,
) -> None:
    """A CR/LF in a label value reaches the subject: folded to a space, not a new header."""
    host = "db1\r\nBcc: evil@example.com"
    alert = Alert({**cpu_alert("x").labels, "host": host}, {}, "firing", ENDS_MS)
    group = {"alertname": "HighCPU", "host": host}
    n = Notification("mail", '{}:{host="db1\r\n"}', group, (alert,), "firing")
    receivers = [
        {
            "name": "mail",
            "email_configs": [
                {
                    "to": "oncall@example.com",
                    "from": "monitoring@example.com",
                    "smarthost": f"{smtp_server.host}:{smtp_server.port}",
                    "require_tls": False,
                }
            ],
        }
    ]
    d, records = dispatcher(receivers)
    async with d:
        await d.deliver(n)
    assert [r.outcome for r in records] == ["delivered"]
    ((_, to, msg),) = smtp_server.envelopes
    assert to == ["oncall@example.com"]
    assert msg["Subject"] == "[FIRING:1] HighCPU db1 Bcc: evil@example.com"
    assert msg["Bcc"] is None and msg["X-Monitoring-Group-Key"] == '{}:{host="db1 "}'


async def test_slack_pagerduty_webhook_exact_payloads(http_receiver_factory: HttpFactory) -> None:
    srv = http_receiver_factory()
    receivers = [
        {
            "name": "team",
            "slack_configs": [{"api_url": f"{srv.url}/slack/T0/B0/XyZ", "send_resolved": True}],
            "pagerduty_configs": [{"routing_key": "R-K3Y", "url": f"{srv.url}/pd"}],
            "webhook_configs": [{"url": f"{srv.url}/hook"}],
        }
    ]
    d, records = dispatcher(receivers, external_url="http://mon.example")
    firing = cpu_notification("team", ("firing",))
    resolved = cpu_notification("team", ("resolved",))
    fp = firing.alerts[0].fingerprint
    async with d:
        await d.deliver(firing)
        await d.deliver(resolved)
    assert [r.outcome for r in records] == ["delivered"] * 6
    got: dict[str, list[Any]] = {}
    for r in srv.requests:
        got.setdefault(r.path, []).append(r.body)
        assert r.headers["Content-Type"] == "application/json"
    dedup = "a17e3a1b5f94d63630e1c503c259224eacea19d38bb835e6423ca91078ab740f"
    summary = (
        "[FIRING] HighCPU\n  labels: alertname=HighCPU host=db1 severity=critical\n"
        "  annotations: summary=CPU above 90%\n  value: 93.5\n"
        "  starts: 2023-11-14T22:13:20.000Z\n  source: http://mon/rules/HighCPU"
    )
    assert got["/pd"] == [
        {
            "routing_key": "R-K3Y",
            "event_action": "trigger",
            "dedup_key": dedup,
            "client": "monitoring",
            "client_url": "http://mon.example",
            "payload": {
                "summary": "[FIRING:1] HighCPU",
                "source": "monitoring",
                "severity": "critical",
                "custom_details": {
                    "firing": summary,
                    "num_firing": 1,
                    "num_resolved": 0,
                    "fingerprints": [fp],
                },
            },
        },
        {
            "routing_key": "R-K3Y",
            "event_action": "resolve",
            "dedup_key": dedup,
            "client": "monitoring",
            "client_url": "http://mon.example",
        },
    ]
    resolved_text = (
        "[RESOLVED] HighCPU\n  labels: alertname=HighCPU host=db1 severity=critical\n"
        "  annotations: summary=CPU above 90%\n  starts: 2023-11-14T22:13:20.000Z\n"
        "  ends: 2023-11-14T22:18:20.000Z\n  source: http://mon/rules/HighCPU"
    )
    assert got["/slack/T0/B0/XyZ"] == [
        {
            "username": "monitoring",
            "attachments": [
                {
                    "color": color,
                    "title": title,
                    "fallback": title,
                    "text": text,
                    "mrkdwn_in": ["text"],
                }
            ],
        }
        for color, title, text in [
            ("danger", "[FIRING:1] HighCPU", summary),
            ("good", "[RESOLVED] HighCPU", resolved_text),
        ]
    ]
    common = {"alertname": "HighCPU", "host": "db1", "severity": "critical"}
    assert got["/hook"] == [
        {
            "version": "4",
            "groupKey": GROUP_KEY,
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "team",
            "groupLabels": {"alertname": "HighCPU"},
            "commonLabels": common,
            "commonAnnotations": {"summary": "CPU above 90%"},
            "externalURL": "http://mon.example",
            "alerts": [
                {
                    "labels": common,
                    "annotations": {"summary": "CPU above 90%"},
                    "startsAt": "2023-11-14T22:13:20.000Z",
                    "endsAt": ends,
                    "generatorURL": "http://mon/rules/HighCPU",
                    "fingerprint": fp,
                    "status": status,
                }
            ],
        }
        for status, ends in [
            ("firing", "0001-01-01T00:00:00Z"),
            ("resolved", "2023-11-14T22:18:20.000Z"),
        ]
    ]


async def test_real_alertmanager_receives_firing_then_resolved(
    alertmanager_factory: Callable[..., Alertmanager], http_receiver_factory: HttpFactory
) -> None:
    am_hook = http_receiver_factory()  # Alertmanager's own webhook receiver
    am = alertmanager_factory(webhook_url=f"{am_hook.url}/from-am")
    d, records = dispatcher([{"name": "am", "alertmanager_configs": [{"url": am.url}]}])
    firing = cpu_notification("am", ("firing", "firing"))
    ours = {a.fingerprint: a for a in firing.alerts}
    async with d:
        await d.deliver(firing)
        listed = am.alerts()
        assert {a["fingerprint"] for a in listed} == set(ours)  # Prometheus' fingerprint
        for a in listed:
            assert a["labels"] == dict(ours[a["fingerprint"]].labels)
            assert a["annotations"] == {"summary": "CPU above 90%"}
            assert a["status"]["state"] == "active"
            assert ts(a["startsAt"]) == ts("2023-11-14T22:13:20Z")
            assert a["generatorURL"] == "http://mon/rules/HighCPU"
        # Resolution: posted with endsAt in the past, Alertmanager drops them from the
        # active list and notifies its own receiver with status resolved and our endsAt.
        await d.deliver(cpu_notification("am", ("resolved", "resolved")))
    assert [r.outcome for r in records] == ["delivered", "delivered"]
    assert am.alerts() == []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "resolved" not in [b["status"] for b in am_hook.bodies]:
        await asyncio.sleep(0.2)
    statuses = [b["status"] for b in am_hook.bodies]
    assert statuses[0] == "firing" and statuses[-1] == "resolved"
    last = am_hook.bodies[-1]
    assert {a["fingerprint"] for a in last["alerts"]} == set(ours)
    for a in last["alerts"]:
        assert a["status"] == "resolved"
        assert ts(a["endsAt"]) == ts("2023-11-14T22:18:20Z")
        assert int(ts(a["endsAt"]).timestamp() * 1000) == ENDS_MS
    # Our webhook channel speaks the same format as Alertmanager's own webhook.
    ours_payload = webhook.payload(cpu_notification("default", ("resolved", "resolved")), (), 0, "")
    assert set(last) == set(ours_payload)
    assert set(last["alerts"][0]) == set(cpu_alert("db1").to_alertmanager())


async def test_timeout_500_and_down_receivers_are_retried_and_delivered_once(
    http_receiver_factory: HttpFactory,
) -> None:
    slow = http_receiver_factory([Reply(200, delay_s=3.0)])  # first answer after the timeout
    flaky = http_receiver_factory([Reply(500, body="boom"), Reply(500, body="boom")])
    down = http_receiver_factory(start=False)  # nothing listens on its port yet
    receivers = [
        {"name": name, "webhook_configs": [{"url": f"{srv.url}/{name}"}]}
        for name, srv in (("slow", slow), ("flaky", flaky), ("down", down))
    ]
    policy = RetryPolicy(initial_backoff_s=0.2, max_backoff_s=1.0, jitter=0, timeout_s=0.5)
    d, records = dispatcher(receivers, policy=policy)

    async def come_up_later() -> None:  # once it was tried twice in vain
        await failed_attempts(records, "down", 2)
        down.start()

    async with d:
        results = await asyncio.gather(
            d.deliver(cpu_notification("slow")),
            d.deliver(cpu_notification("flaky")),
            d.deliver(cpu_notification("down")),
            come_up_later(),
        )
    assert [r[0].outcome for r in results[:3]] == ["delivered"] * 3
    by = {name: [r for r in records if r.receiver == name] for name in ("slow", "flaky", "down")}
    assert [(r.outcome, r.error) for r in by["slow"]] == [
        ("retrying", "timeout after 0.5s (ReadTimeout)"),
        ("delivered", ""),
    ]
    assert [(r.outcome, r.http_status, r.error) for r in by["flaky"]] == [
        ("retrying", 500, "HTTP 500: boom"),
        ("retrying", 500, "HTTP 500: boom"),
        ("delivered", 200, ""),
    ]
    outage = by["down"]
    assert outage[-1].outcome == "delivered" and len(outage) >= 3
    assert all(r.outcome == "retrying" for r in outage[:-1])
    assert all(r.error.startswith("connection failed (ConnectError)") for r in outage[:-1])
    # Nothing lost, and each receiver holds exactly one successful delivery.
    assert [r.answered for r in flaky.requests] == [500, 500, 200]
    assert len(down.requests) == 1 and len(flaky.bodies) == 1 and len(slow.bodies) >= 1
    # The timed-out first request reached the slow receiver (at-least-once delivery):
    # both copies carry the same groupKey, which receivers use to deduplicate.
    assert {b["groupKey"] for b in slow.bodies} == {GROUP_KEY}


async def test_rate_limited_receiver_gets_everything_spaced(
    http_receiver_factory: HttpFactory,
) -> None:
    srv = http_receiver_factory()
    receivers = [
        {
            "name": "limited",
            "webhook_configs": [{"url": f"{srv.url}/h"}],
            "rate_limit": {"per_second": 5, "burst": 1},
        }
    ]
    d, records = dispatcher(receivers)
    notes = [cpu_notification("limited", group_key=f"group-{i}") for i in range(6)]
    start = time.monotonic()
    async with d:
        await asyncio.gather(*(d.deliver(n) for n in notes))
    assert [r.outcome for r in records] == ["delivered"] * 6
    assert sorted(b["groupKey"] for b in srv.bodies) == sorted(n.group_key for n in notes)
    # 5 per second, burst 1: the k-th request cannot leave before start + k * 0.2 s.
    # (Gaps between arrivals are not asserted: scheduling noise on a loaded machine
    # can bunch two arrivals while the schedule itself holds.)
    since = [r.at - start for r in sorted(srv.requests, key=lambda r: r.at)]
    assert all(t >= k * 0.2 - 0.005 for k, t in enumerate(since)), since
    assert since[-1] >= 1.0 - 0.005


async def test_idempotent_across_a_restart_from_checkpoint(
    http_receiver_factory: HttpFactory,
) -> None:
    srv = http_receiver_factory()
    receivers = [{"name": "hook", "webhook_configs": [{"url": f"{srv.url}/h"}]}]
    n = cpu_notification("hook", ("firing", "firing"))
    d, _ = dispatcher(receivers)
    async with d:
        await d.deliver(n)
        await d.deliver(n)
        checkpoint = d.delivered.to_bytes()
    restored = DeliveredKeys.from_bytes(checkpoint)
    d2, records2 = dispatcher(receivers, delivered=restored)
    replayed = Notification(n.receiver, n.group_key, dict(n.group_labels), n.alerts, n.status)
    async with d2:
        await d2.deliver(replayed)
        one_resolved = cpu_notification("hook", ("firing", "resolved"))
        await d2.deliver(one_resolved)
    assert [r.outcome for r in records2] == ["duplicate", "delivered"]
    assert len(srv.requests) == 2
    assert [[a["status"] for a in b["alerts"]] for b in srv.bodies] == [
        ["firing", "firing"],
        ["firing", "resolved"],
    ]


def test_alert_fingerprint_matches_alertmanager_for_odd_labels(
    alertmanager_factory: Callable[..., Alertmanager],
) -> None:
    """Unicode and quotes in values, empty values: our fingerprint is Alertmanager's."""
    import httpx

    am = alertmanager_factory()
    alerts = [
        Alert({"alertname": "Q", "path": '/a"b\\c', "snow": "☃ ü"}, {}, "firing", 0),
        Alert({"alertname": "Q", "x": "1", "y": "22", "zz": ""}, {}, "firing", 0),
        Alert({"alertname": "Ünïcode", "le": "+Inf"}, {}, "firing", 0),
    ]
    body = [{"labels": dict(a.labels)} for a in alerts]
    r = httpx.post(f"{am.url}/api/v2/alerts", json=body, timeout=5)
    assert r.status_code == 200, r.text
    listed = {tuple(sorted(a["labels"].items())): a["fingerprint"] for a in am.alerts()}
    for a in alerts:
        labels = tuple(sorted((k, v) for k, v in a.labels.items() if v))  # AM drops empty
        assert listed[labels] == Alert(dict(labels), {}, "firing", 0).fingerprint


async def test_smtp_server_down_then_up_is_retried_and_delivered_once() -> None:
    from aiosmtpd.controller import Controller

    sink = SmtpSink("127.0.0.1", free_port())
    receivers = [
        {
            "name": "mail",
            "email_configs": [
                {
                    "to": "oncall@example.com",
                    "from": "m@example.com",
                    "smarthost": f"127.0.0.1:{sink.port}",
                    "require_tls": False,
                }
            ],
        }
    ]
    d, records = dispatcher(receivers)
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)

    async def come_up_later() -> None:  # once it was tried twice in vain
        await failed_attempts(records, "mail", 2)
        controller.start()

    try:
        async with d:
            await asyncio.gather(d.deliver(cpu_notification("mail")), come_up_later())
    finally:
        controller.stop()
    assert records[-1].outcome == "delivered" and len(records) >= 3
    assert all(r.outcome == "retrying" for r in records[:-1])
    assert all(
        r.error.startswith("SMTP connection failed (ConnectionRefusedError)") for r in records[:-1]
    )
    assert len(sink.envelopes) == 1
    assert sink.envelopes[0][2]["Subject"] == "[FIRING:1] HighCPU"
