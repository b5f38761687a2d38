"""PagerDuty Events API v2: ``trigger`` while any alert fires, ``resolve`` when all resolved.

``dedup_key`` is the SHA-256 (hex) of the group key, as Alertmanager sends it, so the
resolve closes the incident the trigger opened. Only a trigger carries ``payload``.
Severity: the config's, else the group's common ``severity`` label if PagerDuty knows
it, else ``error``.

>>> dedup_key("{}:{alertname=\\"HighCPU\\"}")[:12]
'9f2a099adf99'
"""

from __future__ import annotations

import hashlib
from typing import Any

from monitoring.alerts.model import Alert, Notification
from monitoring.alerts.receivers import PAGERDUTY_SEVERITIES, PagerDutyConfig
from monitoring.sinks.notifiers.base import (
    Integration,
    body_text,
    post_json,
    redact_url,
    register,
    title,
    url_secrets,
)

MAX_SUMMARY = 1024


def dedup_key(group_key: str) -> str:
    """SHA-256 hex of the group key (64 chars, under PagerDuty's 255 limit)."""
    return hashlib.sha256(group_key.encode()).hexdigest()


def severity(n: Notification, cfg: PagerDutyConfig) -> str:
    """The event's severity (config, else common ``severity`` label, else ``error``)."""
    if cfg.severity:
        return cfg.severity
    label = n.common_labels.get("severity", "")
    return label if label in PAGERDUTY_SEVERITIES else "error"


def payload(
    n: Notification, cfg: PagerDutyConfig, alerts: tuple[Alert, ...], external_url: str
) -> dict[str, Any]:
    """The Events API v2 body (``routing_key`` included: it is the endpoint's secret)."""
    action = "trigger" if n.status == "firing" else "resolve"
    out: dict[str, Any] = {
        "routing_key": cfg.routing_key.get_secret_value(),
        "event_action": action,
        "dedup_key": dedup_key(n.group_key),
        "client": cfg.client,
        "client_url": cfg.client_url or external_url,
    }
    if action == "trigger":
        out["payload"] = {
            "summary": title(n, alerts)[:MAX_SUMMARY],
            "source": cfg.source,
            "severity": severity(n, cfg),
            "custom_details": {
                "firing": body_text(tuple(a for a in alerts if a.status == "firing")),
                "num_firing": sum(a.status == "firing" for a in alerts),
                "num_resolved": sum(a.status == "resolved" for a in alerts),
                "fingerprints": [a.fingerprint for a in alerts],
            },
        }
    return out


@register
class PagerDutyNotifier(Integration):
    """``pagerduty_configs``."""

    kind = "pagerduty"
    config_key = "pagerduty_configs"
    config: PagerDutyConfig

    @property
    def target(self) -> str:
        return redact_url(self.config.url)

    def secrets(self) -> list[str]:
        return [self.config.routing_key.get_secret_value(), *url_secrets(self.config.url)[1:]]

    async def send(self, n: Notification) -> int | None:
        body = payload(n, self.config, self.alerts(n), self.ctx.external_url)
        return await post_json(self.ctx, self.config.url, body)
