"""Slack incoming webhook: one attachment per notification (Alertmanager's layout).

>>> from monitoring.alerts.model import Alert, Notification
>>> from monitoring.alerts.receivers import SlackConfig
>>> a = Alert({"alertname": "HighCPU"}, {}, "firing", 0)
>>> n = Notification("ops", "{}:{}", {}, (a,), "firing")
>>> payload(n, SlackConfig(api_url="http://h/x", channel="#ops"), (a,))["attachments"][0]["title"]
'[FIRING:1] HighCPU'
"""

from __future__ import annotations

from typing import Any

from monitoring.alerts.model import Alert, Notification
from monitoring.alerts.receivers import SlackConfig
from monitoring.sinks.notifiers.base import (
    Integration,
    body_text,
    pairs,
    post_json,
    redact_url,
    register,
    title,
    url_secrets,
)


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def payload(n: Notification, cfg: SlackConfig, alerts: tuple[Alert, ...]) -> dict[str, Any]:
    """The JSON body for an incoming webhook."""
    default_title = title(n, alerts)
    fields = _Fields(
        status=n.status,
        alertname=n.common_labels.get("alertname", ""),
        count=str(len(alerts)),
        receiver=n.receiver,
        group_labels=pairs(n.group_labels),
    )
    head = cfg.title.format_map(fields) if cfg.title else default_title
    text = cfg.text.format_map(fields) if cfg.text else body_text(alerts)
    out: dict[str, Any] = {
        "username": cfg.username,
        "attachments": [
            {
                "color": "danger" if n.status == "firing" else "good",
                "title": head,
                "fallback": head,
                "text": text,
                "mrkdwn_in": ["text"],
            }
        ],
    }
    if cfg.channel:
        out["channel"] = cfg.channel
    return out


@register
class SlackNotifier(Integration):
    """``slack_configs``."""

    kind = "slack"
    config_key = "slack_configs"
    config: SlackConfig

    @property
    def target(self) -> str:
        return redact_url(self.config.api_url.get_secret_value())

    def secrets(self) -> list[str]:
        return url_secrets(self.config.api_url.get_secret_value())

    async def send(self, n: Notification) -> int | None:
        body = payload(n, self.config, self.alerts(n))
        return await post_json(self.ctx, self.config.api_url.get_secret_value(), body)
