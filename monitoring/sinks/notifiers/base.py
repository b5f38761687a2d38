"""What every notification channel shares: the integration base, errors, redaction.

A channel (``email``, ``slack``...) is an :class:`Integration` subclass registered by
its receiver config key (``email_configs``...) in :data:`CHANNELS`; :func:`build`
turns a :class:`~monitoring.alerts.receivers.Receiver` into its integrations. A
channel builds its payload with a pure function (tested on exact values) and sends it;
failures raise :class:`DeliveryError`, ``retryable`` or not, and the dispatcher
decides what to do.

>>> redact_url("https://hooks.slack.com/services/T0/B0/XXXX?x=1")
'https://hooks.slack.com/<redacted>'
>>> Redactor(["XXXX"])("POST /services/T0/B0/XXXX failed")
'POST /services/T0/B0/<redacted> failed'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import httpx

from monitoring.alerts.model import Alert, Notification, rfc3339
from monitoring.alerts.receivers import Receiver

REDACTED = "<redacted>"
MAX_ERROR_CHARS = 300
MAX_RESPONSE_BYTES = 64 * 1024  # of a receiver's answer: only its head is kept


class DeliveryError(Exception):
    """A send failed. ``retryable``: timeouts, connection errors, 5xx, 429 (and SMTP 4xx).

    ``status`` is the HTTP (or SMTP) status code when there was an answer;
    ``retry_after_s`` the server's Retry-After, if it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


def redact_url(url: str) -> str:
    """``scheme://host[:port]/<redacted>``: where a URL points, without path, query or user."""
    p = urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{p.port}" if p.port else ""
    tail = f"/{REDACTED}" if (p.path not in ("", "/") or p.query or p.username) else ""
    return f"{p.scheme}://{host}{port}{tail}"


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that may carry a token: itself, path+query, query, userinfo."""
    p = urlsplit(url)
    out = [url]
    if p.path not in ("", "/"):
        out.append(p.path + (f"?{p.query}" if p.query else ""))
        out.append(p.path)
    if p.query:
        out.append(p.query)
    for part in (p.username, p.password):
        if part:
            out += [part, unquote(part)]
    return out


class Redactor:
    """Replaces every secret string (longest first) by ``<redacted>``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, REDACTED)
        return text


@dataclass(frozen=True)
class Context:
    """What integrations share: the HTTP client and the notifier's external URL."""

    http: httpx.AsyncClient
    external_url: str = ""
    timeout_s: float = 10.0


class Integration(ABC):
    """One configured destination of a receiver (one entry of ``<kind>_configs``)."""

    kind: ClassVar[str]
    config_key: ClassVar[str]

    def __init__(self, receiver: str, config: Any, ctx: Context, index: int = 0) -> None:
        self.receiver = receiver
        self.config = config
        self.ctx = ctx
        self.index = index

    @property
    def id(self) -> str:
        """Stable name within the receiver, ``slack_configs[0]``."""
        return f"{self.config_key}[{self.index}]"

    def alerts(self, n: Notification) -> tuple[Alert, ...]:
        """The alerts this integration sends: resolved ones only with ``send_resolved``."""
        if self.config.send_resolved:
            return n.alerts
        return tuple(a for a in n.alerts if a.status == "firing")

    def wants(self, n: Notification) -> bool:
        """False when nothing of ``n`` is for this integration (resolved, not sent)."""
        return bool(self.alerts(n))

    @property
    @abstractmethod
    def target(self) -> str:
        """Where it sends, safe to log (no secrets)."""

    @abstractmethod
    def secrets(self) -> list[str]:
        """Secret strings to scrub from errors and logs."""

    @abstractmethod
    async def send(self, n: Notification) -> int | None:
        """Deliver ``n``; return the HTTP/SMTP status or None. Raises DeliveryError."""


CHANNELS: dict[str, type[Integration]] = {}


def register(cls: type[Integration]) -> type[Integration]:
    """Class decorator: register a channel under its receiver config key."""
    if cls.config_key in CHANNELS:
        raise ValueError(f"channel {cls.config_key} registered twice")
    CHANNELS[cls.config_key] = cls
    return cls


def build(receiver: Receiver, ctx: Context) -> list[Integration]:
    """Every integration of a receiver, in config-key then index order."""
    out = []
    for key, cls in CHANNELS.items():
        for i, cfg in enumerate(getattr(receiver, key, ())):
            out.append(cls(receiver.name, cfg, ctx, i))
    return out


# -- shared message text -----------------------------------------------------------


def title(n: Notification, alerts: tuple[Alert, ...] | None = None) -> str:
    """Alertmanager's default title: ``[FIRING:2] HighCPU db`` or ``[RESOLVED] HighCPU``.

    The words are the group labels' values (sorted by name), else the alertname.
    """
    alerts = n.alerts if alerts is None else alerts
    firing = sum(a.status == "firing" for a in alerts)
    head = f"[FIRING:{firing}]" if n.status == "firing" else "[RESOLVED]"
    words = [n.group_labels[k] for k in sorted(n.group_labels)] or [
        n.common_labels.get("alertname", "")
    ]
    return " ".join([head, *(w for w in words if w)])


def pairs(m: Mapping[str, str]) -> str:
    """``a=1 b=2`` sorted by name."""
    return " ".join(f"{k}={m[k]}" for k in sorted(m))


def alert_text(a: Alert) -> str:
    """A few lines describing one alert (status, name, labels, annotations, times)."""
    lines = [f"[{a.status.upper()}] {a.name}", f"  labels: {pairs(a.labels)}"]
    if a.annotations:
        lines.append(f"  annotations: {pairs(a.annotations)}")
    if a.value is not None:
        lines.append(f"  value: {a.value:g}")
    lines.append(f"  starts: {rfc3339(a.starts_at_ms)}")
    if a.status == "resolved" and a.ends_at_ms is not None:  # not a firing one's horizon
        lines.append(f"  ends: {rfc3339(a.ends_at_ms)}")
    if a.generator_url:
        lines.append(f"  source: {a.generator_url}")
    return "\n".join(lines)


def body_text(alerts: tuple[Alert, ...]) -> str:
    """Every alert's text, firing first, blank line between."""
    ordered = sorted(alerts, key=lambda a: a.status != "firing")
    return "\n\n".join(alert_text(a) for a in ordered)


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return float(r.headers["retry-after"])
    except (KeyError, ValueError):
        return None


async def _read_head(r: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a streamed response body; the rest is not read."""
    out = bytearray()
    try:
        async for chunk in r.aiter_raw():
            out += chunk[: limit - len(out)]
            if len(out) >= limit:
                break
    except httpx.StreamConsumed:  # a transport that answered from memory
        return r.content[:limit]
    return bytes(out)


async def post_json(ctx: Context, url: str, payload: Any) -> int:
    """POST JSON; return the 2xx status. Timeouts, transport errors, 5xx and 429 are
    retryable DeliveryErrors, other statuses permanent. Messages never hold the URL."""
    try:
        async with ctx.http.stream("POST", url, json=payload, timeout=ctx.timeout_s) as r:
            head = await _read_head(r, MAX_RESPONSE_BYTES)  # a receiver cannot flood us
    except httpx.TimeoutException as e:
        raise DeliveryError(
            f"timeout after {ctx.timeout_s:g}s ({type(e).__name__})", retryable=True
        ) from None
    except httpx.TransportError as e:
        raise DeliveryError(
            f"connection failed ({type(e).__name__}): {e}", retryable=True
        ) from None
    if 200 <= r.status_code < 300:
        return r.status_code
    retryable = r.status_code >= 500 or r.status_code == 429
    raise DeliveryError(
        f"HTTP {r.status_code}: {head.decode(errors='replace')[:MAX_ERROR_CHARS]}",
        retryable=retryable,
        status=r.status_code,
        retry_after_s=_retry_after(r),
    )
