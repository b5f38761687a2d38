"""Exact payloads of every channel, and contract checks over every registered channel."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fixtures.notify import GROUP_KEY, cpu_notification

from monitoring.alerts.model import Alert, Notification
from monitoring.alerts.receivers import (
    EmailConfig,
    PagerDutyConfig,
    Receiver,
    SlackConfig,
    parse_receiver,
)
from monitoring.sinks.notifiers import (
    CHANNELS,
    Context,
    DeliveryError,
    build,
    email,
    pagerduty,
    slack,
    webhook,
)
from monitoring.sinks.notifiers import alertmanager as am

DB1_FIRING = (
    "[FIRING] HighCPU\n"
    "  labels: alertname=HighCPU host=db1 severity=critical\n"
    "  annotations: summary=CPU above 90%\n"
    "  value: 93.5\n"
    "  starts: 2023-11-14T22:13:20.000Z\n"
    "  source: http://mon/rules/HighCPU"
)
DB2_RESOLVED = (
    "[RESOLVED] HighCPU\n"
    "  labels: alertname=HighCPU host=db2 severity=critical\n"
    "  annotations: summary=CPU above 90%\n"
    "  starts: 2023-11-14T22:13:20.000Z\n"
    "  ends: 2023-11-14T22:18:20.000Z\n"
    "  source: http://mon/rules/HighCPU"
)
LABELS1 = {"alertname": "HighCPU", "host": "db1", "severity": "critical"}
LABELS2 = {"alertname": "HighCPU", "host": "db2", "severity": "critical"}
COMMON = {"alertname": "HighCPU", "severity": "critical"}


def am_alert(labels: dict[str, str], status: str, fp: str) -> dict[str, Any]:
    return {
        "labels": labels,
        "annotations": {"summary": "CPU above 90%"},
        "startsAt": "2023-11-14T22:13:20.000Z",
        "endsAt": "2023-11-14T22:18:20.000Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://mon/rules/HighCPU",
        "fingerprint": fp,
        "status": status,
    }


def test_webhook_payload_firing_and_resolved() -> None:
    n = cpu_notification("ops", ("firing", "resolved"))
    fp1, fp2 = (a.fingerprint for a in n.alerts)
    assert webhook.payload(n, n.alerts, 0, "http://mon") == {
        "version": "4",
        "groupKey": GROUP_KEY,
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "ops",
        "groupLabels": {"alertname": "HighCPU"},
        "commonLabels": COMMON,
        "commonAnnotations": {"summary": "CPU above 90%"},
        "externalURL": "http://mon",
        "alerts": [am_alert(LABELS1, "firing", fp1), am_alert(LABELS2, "resolved", fp2)],
    }
    one = webhook.payload(n, n.alerts, 1, "")
    assert one["truncatedAlerts"] == 1
    assert [a["labels"]["host"] for a in one["alerts"]] == ["db1"]
    r = cpu_notification("ops", ("resolved",))
    assert webhook.payload(r, r.alerts, 0, "")["status"] == "resolved"


def test_slack_payload_default_and_custom_text() -> None:
    n = cpu_notification("ops", ("firing", "resolved"))
    cfg = SlackConfig(api_url="https://hooks.example/T/B/X", channel="#db", send_resolved=True)
    assert slack.payload(n, cfg, n.alerts) == {
        "channel": "#db",
        "username": "monitoring",
        "attachments": [
            {
                "color": "danger",
                "title": "[FIRING:1] HighCPU",
                "fallback": "[FIRING:1] HighCPU",
                "text": DB1_FIRING + "\n\n" + DB2_RESOLVED,
                "mrkdwn_in": ["text"],
            }
        ],
    }
    r = cpu_notification("ops", ("resolved",))
    custom = SlackConfig(
        api_url="https://h/x", title="{alertname} is {status} ({count})", text="see {nope}"
    )
    att = slack.payload(r, custom, r.alerts)["attachments"][0]
    assert (att["color"], att["title"], att["text"]) == (
        "good",
        "HighCPU is resolved (1)",
        "see {nope}",
    )
    assert "channel" not in slack.payload(r, custom, r.alerts)


def test_pagerduty_trigger_and_resolve() -> None:
    n = cpu_notification("ops", ("firing", "firing"))
    fps = [a.fingerprint for a in n.alerts]
    cfg = PagerDutyConfig(routing_key="R0UT1NG")
    key = "a17e3a1b5f94d63630e1c503c259224eacea19d38bb835e6423ca91078ab740f"  # sha256 of key
    db2_firing = DB1_FIRING.replace("db1", "db2")
    assert pagerduty.payload(n, cfg, n.alerts, "http://mon") == {
        "routing_key": "R0UT1NG",
        "event_action": "trigger",
        "dedup_key": key,
        "client": "monitoring",
        "client_url": "http://mon",
        "payload": {
            "summary": "[FIRING:2] HighCPU",
            "source": "monitoring",
            "severity": "critical",
            "custom_details": {
                "firing": DB1_FIRING + "\n\n" + db2_firing,
                "num_firing": 2,
                "num_resolved": 0,
                "fingerprints": fps,
            },
        },
    }
    r = cpu_notification("ops", ("resolved", "resolved"))
    assert pagerduty.payload(r, cfg, r.alerts, "") == {
        "routing_key": "R0UT1NG",
        "event_action": "resolve",
        "dedup_key": key,
        "client": "monitoring",
        "client_url": "",
    }


def test_pagerduty_severity_choice() -> None:
    n = cpu_notification("ops")
    assert pagerduty.severity(n, PagerDutyConfig(routing_key="k", severity="info")) == "info"
    assert pagerduty.severity(n, PagerDutyConfig(routing_key="k")) == "critical"
    page = Alert({**LABELS1, "severity": "page"}, {}, "firing", 0)
    odd = Notification("ops", "k", {}, (page,), "firing")
    assert pagerduty.severity(odd, PagerDutyConfig(routing_key="k")) == "error"


def test_alertmanager_payload() -> None:
    n = cpu_notification("ops", ("firing", "resolved"))
    assert am.payload(n.alerts) == [
        {
            "labels": LABELS1,
            "annotations": {"summary": "CPU above 90%"},
            "startsAt": "2023-11-14T22:13:20.000Z",
            "generatorURL": "http://mon/rules/HighCPU",
        },
        {
            "labels": LABELS2,
            "annotations": {"summary": "CPU above 90%"},
            "startsAt": "2023-11-14T22:13:20.000Z",
            "endsAt": "2023-11-14T22:18:20.000Z",
            "generatorURL": "http://mon/rules/HighCPU",
        },
    ]


def test_email_message() -> None:
    n = cpu_notification("ops", ("firing", "resolved"))
    cfg = EmailConfig.model_validate(
        {
            "to": "a@x.org, b@x.org",
            "from": "mon@x.org",
            "smarthost": "mail:25",
            "send_resolved": True,
            "headers": {"Reply-To": "noc@x.org"},
        }
    )
    msg = email.message(n, cfg, n.alerts)
    assert (msg["Subject"], msg["To"], msg["From"], msg["Reply-To"]) == (
        "[FIRING:1] HighCPU",
        "a@x.org, b@x.org",
        "mon@x.org",
        "noc@x.org",
    )
    assert msg["X-Monitoring-Group-Key"] == GROUP_KEY
    assert msg.get_content() == DB1_FIRING + "\n\n" + DB2_RESOLVED + "\n"
    custom = cfg.model_copy(update={"headers": {"Subject": "Pager!"}})
    assert email.message(n, custom, n.alerts)["Subject"] == "Pager!"


def test_email_error_classification() -> None:
    import smtplib

    assert email.classify(smtplib.SMTPResponseException(451, b"try later")).retryable
    perm = email.classify(smtplib.SMTPAuthenticationError(535, b"bad credentials"))
    assert (perm.retryable, perm.status, str(perm)) == (False, 535, "SMTP 535: bad credentials")
    assert email.classify(ConnectionRefusedError(111, "refused")).retryable
    refused = smtplib.SMTPRecipientsRefused({"a@x": (550, b"no such user")})
    assert not email.classify(refused).retryable


# -- contract tests over every registered channel ------------------------------------

SAMPLE_CONFIGS: dict[str, dict[str, Any]] = {
    "email_configs": {"to": "a@x", "from": "m@x", "smarthost": "127.0.0.1:1"},
    "slack_configs": {"api_url": "https://hooks.example/services/T0/B0/SECRETSLACK"},
    "pagerduty_configs": {"routing_key": "SECRETROUTINGKEY", "url": "https://pd.example/enq"},
    "webhook_configs": {"url": "https://user:SECRETPASS@hook.example/h?token=SECRETTOKEN"},
    "alertmanager_configs": {"url": "http://am.example:9093/SECRETPATH"},
}
SECRET_WORDS = ["SECRETSLACK", "SECRETROUTINGKEY", "SECRETPASS", "SECRETTOKEN", "SECRETPATH"]


def test_every_receiver_config_key_has_a_channel_and_a_sample() -> None:
    keys = {k for k in Receiver.model_fields if k.endswith("_configs")}
    assert set(CHANNELS) == keys == set(SAMPLE_CONFIGS)
    assert len({c.kind for c in CHANNELS.values()}) == len(CHANNELS)


@pytest.mark.parametrize("key", sorted(SAMPLE_CONFIGS))
def test_channel_target_and_repr_hold_no_secret(key: str) -> None:
    rec = parse_receiver({"name": "r", key: [SAMPLE_CONFIGS[key]]})
    (integ,) = build(
        rec,
        Context(httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))),
    )
    assert integ.id == f"{key}[0]"
    shown = integ.target + repr(rec) + str(rec)
    assert not [w for w in SECRET_WORDS if w in shown], shown


@pytest.mark.parametrize("key", sorted(set(SAMPLE_CONFIGS) - {"email_configs"}))
@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (404, False)]
)
async def test_http_channels_classify_answers(key: str, status: int, retryable: bool) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text=f"echo {request.url}")

    rec = parse_receiver({"name": "r", key: [SAMPLE_CONFIGS[key]]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        (integ,) = build(rec, Context(http))
        with pytest.raises(DeliveryError) as info:
            await integ.send(cpu_notification("r"))
    assert (info.value.retryable, info.value.status) == (retryable, status)
    assert len(seen) == 1 and seen[0].method == "POST"
    json.loads(seen[0].content)  # valid JSON body


@pytest.mark.parametrize("key", sorted(set(SAMPLE_CONFIGS) - {"email_configs"}))
async def test_http_channels_succeed_on_2xx_and_send_resolved_filter(key: str) -> None:
    rec = parse_receiver({"name": "r", key: [SAMPLE_CONFIGS[key]]})
    transport = httpx.MockTransport(lambda request: httpx.Response(202))
    async with httpx.AsyncClient(transport=transport) as http:
        (integ,) = build(rec, Context(http))
        assert await integ.send(cpu_notification("r")) == 202
    resolved = cpu_notification("r", ("resolved",))
    default_send_resolved = {"slack_configs": False, "email_configs": False}.get(key, True)
    assert integ.wants(resolved) is default_send_resolved


def _hostile_notification() -> Notification:
    """A firing alert whose label values try Slack mentions/links and header injection."""
    labels = {
        "alertname": "HighCPU <!channel>",
        "host": "db1\r\nBcc: evil@example.com",
        "team": "<!here> <@U123> <http://evil.example|click> & co",
    }
    a = Alert(labels, {"summary": "ping <!everyone>"}, "firing", 0)
    group = {"host": labels["host"], "team": labels["team"]}
    key = "{}:{" + ",".join(f'{k}="{v}"' for k, v in group.items()) + "}"  # unescaped
    return Notification("ops", key, group, (a,), "firing")


def test_slack_escapes_mentions_and_links_from_label_values() -> None:
    n = _hostile_notification()
    att = slack.payload(n, SlackConfig(api_url="https://h/x"), n.alerts)["attachments"][0]
    for key in ("title", "fallback", "text"):
        assert "<" not in att[key] and ">" not in att[key], (key, att[key])
    assert att["title"] == (
        "[FIRING:1] db1\r\nBcc: evil@example.com "
        "&lt;!here&gt; &lt;@U123&gt; &lt;http://evil.example|click&gt; &amp; co"
    )
    assert "alertname=HighCPU &lt;!channel&gt;" in att["text"]
    assert "summary=ping &lt;!everyone&gt;" in att["text"]
    # Fields substituted into a configured title/text are escaped; the template is not.
    cfg = SlackConfig(api_url="https://h/x", title="<!here> {alertname}", text="{group_labels}")
    att = slack.payload(n, cfg, n.alerts)["attachments"][0]
    assert att["title"] == "<!here> HighCPU &lt;!channel&gt;"
    assert "<" not in att["text"] and "&lt;@U123&gt;" in att["text"]


def test_email_headers_fold_line_breaks_of_label_values() -> None:
    n = _hostile_notification()
    cfg = EmailConfig.model_validate({"to": "a@x.org", "from": "m@x.org", "smarthost": "h:25"})
    msg = email.message(n, cfg, n.alerts)
    assert msg["Subject"] == (
        "[FIRING:1] db1 Bcc: evil@example.com <!here> <@U123> <http://evil.example|click> & co"
    )
    assert msg["Bcc"] is None
    assert msg["X-Monitoring-Group-Key"].startswith('{}:{host="db1 Bcc: evil@example.com"')
    head = msg.as_bytes().split(b"\n\n", 1)[0]
    assert b"\nBcc:" not in head and b"\r" not in head
