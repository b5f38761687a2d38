"""Generic webhook in Alertmanager's format (payload version "4").

>>> from monitoring.alerts.model import Alert, Notification
>>> a = Alert({"alertname": "HighCPU"}, {}, "resolved", 0, 1000)
>>> p = payload(Notification("ops", "{}:{}", {}, (a,), "resolved"), (a,), 0, "http://x")
>>> p["version"], p["status"], p["alerts"][0]["endsAt"]
('4', 'resolved', '1970-01-01T00:00:01.000Z')
"""

from __future__ import annotations

from typing import Any

from monitoring.alerts.model import Alert, Notification
from monitoring.alerts.receivers import WebhookConfig
from monitoring.sinks.notifiers.base import (
    Integration,
    post_json,
    redact_url,
    register,
    url_secrets,
)


def payload(
    n: Notification, alerts: tuple[Alert, ...], max_alerts: int, external_url: str
) -> dict[str, Any]:
    """Alertmanager's webhook body; ``max_alerts`` > 0 truncates (``truncatedAlerts``)."""
    sent = alerts[:max_alerts] if max_alerts else alerts
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": len(alerts) - len(sent),
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": dict(n.group_labels),
        "commonLabels": n.common_labels,
        "commonAnnotations": n.common_annotations,
        "externalURL": external_url,
        "alerts": [a.to_alertmanager() for a in sent],
    }


@register
class WebhookNotifier(Integration):
    """``webhook_configs``."""

    kind = "webhook"
    config_key = "webhook_configs"
    config: WebhookConfig

    @property
    def target(self) -> str:
        return redact_url(self.config.url.get_secret_value())

    def secrets(self) -> list[str]:
        return url_secrets(self.config.url.get_secret_value())

    async def send(self, n: Notification) -> int | None:
        body = payload(n, self.alerts(n), self.config.max_alerts, self.ctx.external_url)
        return await post_json(self.ctx, self.config.url.get_secret_value(), body)
