"""Receivers: the ``receivers:`` section of an Alertmanager configuration, validated.

Pure configuration (no I/O except reading secret files). The shape is Alertmanager's:

.. code-block:: yaml

    receivers:
      - name: team-db
        email_configs:
          - {to: "db@example.com", from: "alerts@example.com", smarthost: "mail:587",
             auth_username: alerts, auth_password_file: /run/secrets/smtp}
        slack_configs: [{api_url: "${SLACK_WEBHOOK_URL}", channel: "#db"}]
        pagerduty_configs: [{routing_key_file: /run/secrets/pd}]
        webhook_configs: [{url: "http://hooks.local/alert", max_alerts: 20}]
        alertmanager_configs: [{url: "http://alertmanager:9093"}]   # extension
        rate_limit: {per_second: 1, burst: 5}                         # extension

Secrets (``auth_password``, ``api_url``, ``routing_key``, webhook and Alertmanager
``url``) are ``SecretStr``: they never print. Each can be given three ways:

* inline;
* ``<key>_file``: a file whose content (trailing newline stripped) is the secret,
  read at load time, as Alertmanager's ``*_file`` options;
* ``${ENV_VAR}`` inside the inline value, expanded from the environment (or the
  ``env`` mapping passed to :func:`parse_receivers`) at load time; an unset variable
  is an error.

Only secret fields are expanded: other strings are taken literally. A bad config
raises :class:`ReceiverConfigError` naming the receiver, the key and the reason, and
never the value (a secret may be in it).

>>> rs = parse_receivers({"receivers": [{"name": "ops",
...     "webhook_configs": [{"url": "http://h:1/${TOKEN}"}]}]}, env={"TOKEN": "s3cr3t"})
>>> rs["ops"].webhook_configs[0].url
SecretStr('**********')
>>> rs["ops"].webhook_configs[0].url.get_secret_value()
'http://h:1/s3cr3t'
>>> parse_receivers([{"name": "ops", "slack_configs": [{}]}])
Traceback (most recent call last):
...
monitoring.alerts.receivers.ReceiverConfigError: receiver 'ops': slack_configs[0].api_url: \
Field required
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

PAGERDUTY_EVENTS_V2 = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ReceiverConfigError(ValueError):
    """A receiver is misconfigured; the message names receiver, key and reason."""


def _expand(value: str, env: Mapping[str, str], key: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise ValueError(f"{key}: environment variable {m.group(1)} is not set")
        return env[m.group(1)]

    return _ENV.sub(sub, value)


def _http_url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The value may hold a token: name the key, never print the value.
        raise ValueError(f"{key}: must be an http(s) URL with a host")
    return value


class _Config(BaseModel):
    """Base of one integration's config: frozen, unknown keys rejected, secrets resolved."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # Secret fields of this integration: ``<key>_file`` and ``${ENV}`` are resolved.
    SECRETS: ClassVar[tuple[str, ...]] = ()
    send_resolved: bool = True

    @model_validator(mode="before")
    @classmethod
    def _resolve_secrets(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        env = (info.context or {}).get("env", os.environ)
        out = dict(data)
        for key in cls.SECRETS:
            file_key = f"{key}_file"
            if file_key in out:
                if out.get(key) is not None:
                    raise ValueError(f"{key} and {file_key} are mutually exclusive")
                path = Path(str(out.pop(file_key)))
                try:
                    out[key] = path.read_text().rstrip("\r\n")
                except OSError as e:
                    raise ValueError(f"{file_key}: cannot read {path}: {e.strerror}") from None
            value = out.get(key)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, str):
                out[key] = _expand(value, env, key)
        return out


class EmailConfig(_Config):
    """``email_configs``: SMTP delivery (``smarthost`` is ``host:port``)."""

    SECRETS = ("auth_password",)
    send_resolved: bool = False
    to: str = Field(min_length=1)
    from_: str = Field(alias="from", min_length=1)
    smarthost: str
    hello: str = "localhost"
    auth_username: str | None = None
    auth_password: SecretStr | None = None
    require_tls: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("smarthost")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port")
        return v

    @property
    def host(self) -> str:
        """Host part of ``smarthost``."""
        return self.smarthost.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """Port part of ``smarthost``."""
        return int(self.smarthost.rpartition(":")[2])

    @property
    def recipients(self) -> list[str]:
        """``to`` split on commas."""
        return [a.strip() for a in self.to.split(",") if a.strip()]


class SlackConfig(_Config):
    """``slack_configs``: Slack incoming webhook. ``title``/``text`` override the defaults.

    ``title`` and ``text`` may use ``{status}``, ``{alertname}``, ``{count}``,
    ``{receiver}`` and ``{group_labels}`` (str.format fields).
    """

    SECRETS = ("api_url",)
    send_resolved: bool = False
    api_url: SecretStr
    channel: str = ""
    username: str = "monitoring"
    title: str = ""
    text: str = ""

    @field_validator("api_url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _http_url(v.get_secret_value(), "api_url")
        return v


class PagerDutyConfig(_Config):
    """``pagerduty_configs``: Events API v2 (trigger/resolve, dedup_key per group)."""

    SECRETS = ("routing_key",)
    routing_key: SecretStr
    url: str = PAGERDUTY_EVENTS_V2
    severity: Literal["critical", "error", "warning", "info", ""] = ""
    source: str = "monitoring"
    client: str = "monitoring"
    client_url: str = ""

    @field_validator("routing_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, "url")


class WebhookConfig(_Config):
    """``webhook_configs``: Alertmanager's webhook payload (version 4)."""

    SECRETS = ("url",)
    url: SecretStr
    max_alerts: int = Field(0, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _http_url(v.get_secret_value(), "url")
        return v


class AlertmanagerConfig(_Config):
    """``alertmanager_configs`` (extension): POST alerts to an Alertmanager's v2 API.

    ``url`` is the Alertmanager's base URL (``http://am:9093``); ``/api/v2/alerts``
    is appended.
    """

    SECRETS = ("url",)
    url: SecretStr

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        _http_url(v.get_secret_value(), "url")
        return v


class RateLimit(BaseModel):
    """Token bucket of one receiver (extension): ``per_second`` refill, ``burst`` size."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    per_second: float = Field(gt=0)
    burst: int = Field(1, ge=1)


class Receiver(BaseModel):
    """One named receiver with its integrations."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    email_configs: tuple[EmailConfig, ...] = ()
    slack_configs: tuple[SlackConfig, ...] = ()
    pagerduty_configs: tuple[PagerDutyConfig, ...] = ()
    webhook_configs: tuple[WebhookConfig, ...] = ()
    alertmanager_configs: tuple[AlertmanagerConfig, ...] = ()
    rate_limit: RateLimit | None = None


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(receiver)"


def _reason(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def parse_receiver(raw: Any, env: Mapping[str, str] | None = None) -> Receiver:
    """Validate one receiver mapping. Raises :class:`ReceiverConfigError`."""
    name = raw.get("name") if isinstance(raw, Mapping) else None
    label = f"receiver {name!r}" if name else "receiver"
    if not isinstance(raw, Mapping):
        raise ReceiverConfigError(f"{label}: must be a mapping")
    try:
        return Receiver.model_validate(raw, context={"env": os.environ if env is None else env})
    except ValidationError as e:
        # Only location and reason: pydantic's own message would print input values.
        first = e.errors(include_url=False, include_input=False)
        reasons = "; ".join(f"{_where(err['loc'])}: {_reason(err)}" for err in first)
        raise ReceiverConfigError(f"{label}: {reasons}") from None


def parse_receivers(config: Any, env: Mapping[str, str] | None = None) -> dict[str, Receiver]:
    """Receivers by name from an Alertmanager config mapping (``receivers:``) or a list.

    Names must be unique. Raises :class:`ReceiverConfigError`.
    """
    raw = config.get("receivers", []) if isinstance(config, Mapping) else config
    if not isinstance(raw, list):
        raise ReceiverConfigError("receivers: must be a list of receivers")
    out: dict[str, Receiver] = {}
    for i, item in enumerate(raw):
        r = parse_receiver(item, env)
        if r.name in out:
            raise ReceiverConfigError(f"receiver {r.name!r}: name: duplicate (entry {i})")
        out[r.name] = r
    return out
