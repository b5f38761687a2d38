"""Slack incoming webhook: one attachment per notification (Alertmanager's layout).

Every text that comes from alerts (label and annotation values, the receiver, the
default title and body, the ``{fields}`` of a configured ``title``/``text``) is escaped
as Slack documents (``&`` ``<`` ``>``), so a label value such as ``<!channel>``,
``<@U123>`` or ``<http://evil|click>`` shows as written instead of notifying everyone
or hiding a link. The configured ``title``/``text`` templates themselves are not
escaped: the operator may put mentions and links there on purpose.

>>> escape("<!channel> & <http://evil|click>")
'&lt;!channel&gt; &amp; &lt;http://evil|click&gt;'
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


def escape(text: str) -> str:
    """Slack's escaping of its control characters: ``&`` ``<`` ``>`` as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def payload(n: Notification, cfg: SlackConfig, alerts: tuple[Alert, ...]) -> dict[str, Any]:
    """The JSON body for an incoming webhook."""
    fields = _Fields(
        status=n.status,
        alertname=escape(n.common_labels.get("alertname", "")),
        count=str(len(alerts)),
        receiver=escape(n.receiver),
        group_labels=escape(pairs(n.group_labels)),
    )
    head = cfg.title.format_map(fields) if cfg.title else escape(title(n, alerts))
    text = cfg.text.format_map(fields) if cfg.text else escape(body_text(alerts))
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


def text_payload(cfg: SlackConfig, text: str) -> dict[str, Any]:
    """A plain message (``text``, escaped) for an incoming webhook, as ``cfg`` posts.

    >>> text_payload(SlackConfig(api_url="http://h/x"), "Daily report: <http://r>")["text"]
    'Daily report: &lt;http://r&gt;'
    """
    out: dict[str, Any] = {"username": cfg.username, "text": escape(text)}
    if cfg.channel:
        out["channel"] = cfg.channel
    return out
