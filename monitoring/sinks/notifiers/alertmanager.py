"""Forward alerts to a real Prometheus Alertmanager: ``POST <url>/api/v2/alerts``.

Firing alerts carry their horizon as ``endsAt``, as Prometheus posts them (without one,
Alertmanager keeps them active for its ``resolve_timeout`` after the last post);
resolved ones carry ``endsAt``, which resolves them there. Alertmanager computes the
same fingerprint from the labels.

>>> from monitoring.alerts.model import Alert
>>> payload((Alert({"alertname": "A"}, {}, "resolved", 0, 2000),))[0]["endsAt"]
'1970-01-01T00:00:02.000Z'
"""

from __future__ import annotations

import time
from typing import Any

from monitoring.alerts.model import Alert, Notification, rfc3339
from monitoring.alerts.receivers import AlertmanagerConfig
from monitoring.sinks.notifiers.base import (
    Integration,
    post_json,
    redact_url,
    register,
    url_secrets,
)


def payload(alerts: tuple[Alert, ...]) -> list[dict[str, Any]]:
    """Alertmanager's ``postableAlerts``."""
    out = []
    for a in alerts:
        item: dict[str, Any] = {
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "startsAt": rfc3339(a.starts_at_ms),
            "generatorURL": a.generator_url,
        }
        if a.status == "resolved":
            # A resolved alert without an end time ends now (zero time would not resolve).
            ends = a.ends_at_ms if a.ends_at_ms is not None else int(time.time() * 1000)
            item["endsAt"] = rfc3339(ends)
        elif a.ends_at_ms is not None:
            item["endsAt"] = rfc3339(a.ends_at_ms)
        out.append(item)
    return out


@register
class AlertmanagerNotifier(Integration):
    """``alertmanager_configs`` (extension)."""

    kind = "alertmanager"
    config_key = "alertmanager_configs"
    config: AlertmanagerConfig

    @property
    def endpoint(self) -> str:
        """The v2 alerts endpoint under the configured base URL."""
        return self.config.url.get_secret_value().rstrip("/") + "/api/v2/alerts"

    @property
    def target(self) -> str:
        return redact_url(self.endpoint)

    def secrets(self) -> list[str]:
        return url_secrets(self.config.url.get_secret_value())

    async def send(self, n: Notification) -> int | None:
        return await post_json(self.ctx, self.endpoint, payload(self.alerts(n)))
