"""SMTP delivery with the standard library's smtplib (run in a worker thread).

STARTTLS when the server offers it (required when ``require_tls``), implicit TLS on
port 465, AUTH when ``auth_username`` is set. SMTP 4xx answers, disconnects, refused
connections and timeouts are retryable; 5xx answers and a missing STARTTLS are not.

Header values (the subject holds label values, ``X-Monitoring-Group-Key`` the group
key) go through ``header_value``: line breaks and other control characters become a
space, so a label value cannot add a header (``Bcc:``) nor make the message unsendable.

>>> from monitoring.alerts.model import Alert, Notification
>>> from monitoring.alerts.receivers import EmailConfig
>>> a = Alert({"alertname": "HighCPU"}, {}, "firing", 0)
>>> cfg = EmailConfig.model_validate({"to": "a@x, b@x", "from": "m@x", "smarthost": "h:25"})
>>> msg = message(Notification("ops", "{}:{}", {}, (a,), "firing"), cfg, (a,))
>>> msg["Subject"], msg["To"]
('[FIRING:1] HighCPU', 'a@x, b@x')
>>> header_value("db1\\r\\nBcc: evil@example.com")
'db1 Bcc: evil@example.com'
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from monitoring.alerts.model import Alert, Notification
from monitoring.alerts.receivers import EmailConfig
from monitoring.sinks.notifiers.base import DeliveryError, Integration, body_text, register, title

# C0 controls, DEL, and what str.splitlines() also breaks at (NEL, LS, PS)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def header_value(value: str) -> str:
    """``value`` on one line: runs of control characters (CR, LF, tab...) -> a space."""
    return _CONTROLS.sub(" ", value)


def message(n: Notification, cfg: EmailConfig, alerts: tuple[Alert, ...]) -> EmailMessage:
    """The plain-text message; ``headers`` of the config override Subject/To/From."""
    msg = EmailMessage()
    headers = {"Subject": title(n, alerts), "To": ", ".join(cfg.recipients), "From": cfg.from_}
    headers.update(cfg.headers)
    for k, v in headers.items():
        msg[k] = header_value(v)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=cfg.hello)
    msg["X-Monitoring-Group-Key"] = header_value(n.group_key)
    msg.set_content(f"{body_text(alerts)}\n")
    return msg


def _send(cfg: EmailConfig, msg: EmailMessage) -> int:
    tls = ssl.create_default_context()
    smtp: smtplib.SMTP
    if cfg.port == 465:
        smtp = smtplib.SMTP_SSL(
            cfg.host, cfg.port, local_hostname=cfg.hello, timeout=cfg.timeout_s, context=tls
        )
    else:
        smtp = smtplib.SMTP(cfg.host, cfg.port, local_hostname=cfg.hello, timeout=cfg.timeout_s)
    with smtp:
        smtp.ehlo()
        if cfg.port != 465:
            if smtp.has_extn("starttls"):
                smtp.starttls(context=tls)
                smtp.ehlo()
            elif cfg.require_tls:
                raise DeliveryError(
                    "require_tls is set but the server does not offer STARTTLS", retryable=False
                )
        if cfg.auth_username:
            password = cfg.auth_password.get_secret_value() if cfg.auth_password else ""
            smtp.login(cfg.auth_username, password)
        smtp.send_message(msg, from_addr=cfg.from_, to_addrs=cfg.recipients)
        return 250


def send_message(cfg: EmailConfig, msg: EmailMessage) -> int:
    """Send any message (a scheduled report, say) as notifications go: STARTTLS, AUTH,
    timeouts; a DeliveryError (retryable or not) when it fails. Blocking."""
    try:
        return _send(cfg, msg)
    except Exception as e:
        raise classify(e) from None


def classify(e: Exception) -> DeliveryError:
    """The DeliveryError for an smtplib/socket exception."""
    if isinstance(e, DeliveryError):
        return e
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in e.recipients.values()]
        return DeliveryError(
            f"all recipients refused: {sorted(set(codes))}",
            retryable=all(400 <= c < 500 for c in codes),
            status=codes[0] if codes else None,
        )
    if isinstance(e, smtplib.SMTPResponseException):
        text = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) else ""
        return DeliveryError(
            f"SMTP {e.smtp_code}: {text[:200]}",
            retryable=400 <= e.smtp_code < 500,
            status=e.smtp_code,
        )
    if isinstance(e, smtplib.SMTPNotSupportedError):
        return DeliveryError(f"SMTP: {e}", retryable=False)
    if isinstance(e, smtplib.SMTPServerDisconnected | OSError):
        return DeliveryError(f"SMTP connection failed ({type(e).__name__}): {e}", retryable=True)
    return DeliveryError(f"SMTP error ({type(e).__name__}): {e}", retryable=False)


@register
class EmailNotifier(Integration):
    """``email_configs``."""

    kind = "email"
    config_key = "email_configs"
    config: EmailConfig

    @property
    def target(self) -> str:
        return f"smtp://{self.config.smarthost}"

    def secrets(self) -> list[str]:
        pw = self.config.auth_password
        return [pw.get_secret_value()] if pw else []

    async def send(self, n: Notification) -> int | None:
        msg = message(n, self.config, self.alerts(n))
        try:
            return await asyncio.to_thread(_send, self.config, msg)
        except Exception as e:
            raise classify(e) from None
