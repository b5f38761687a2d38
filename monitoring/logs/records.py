"""Validation and normalisation of one decoded ``LogRecord`` (schemas/log_record.v1).

Pure Python. ``normalise`` turns a decoded record into a ``LogEntry`` or raises
``InvalidLog`` naming the reason. What happens to imperfect input, documented here
once and applied by the log agent:

==========================  ===========================================================
input                       outcome
==========================  ===========================================================
``service`` empty           rejected: ``InvalidLog("missing-service")`` (dead letter)
``service`` over            rejected: ``InvalidLog("bad-service")`` (dead letter): the
``max_service_bytes``       name keys the state, the outputs and the series
(256) or holding NUL
``message`` and             rejected: ``InvalidLog("missing-message")`` (dead letter)
``exception`` both empty
``timestamp_ms`` <= 0,      replaced by ``received_ms`` (the Kafka timestamp); the
before 2000 or more than    original goes to attribute ``monitoring.timestamp_original``
``max_future_skew_ms``
ahead of ``received_ms``
unknown level               ``INFO``; the original in ``monitoring.level_original``
                            (see ``levels.normalise_level``)
invalid UTF-8               decoded with U+FFFD replacement characters by the codec;
                            the caller passes ``utf8_replaced=True`` and the entry gets
                            ``monitoring.invalid_utf8 = "true"``
message or exception        cut at ``max_message_bytes`` UTF-8 bytes (never inside a
longer than                 character); attribute ``monitoring.truncated`` lists the
``max_message_bytes``       fields cut and ``monitoring.original_bytes`` their sizes
                            (``message=1048576``)
more than ``max_attributes``  the first ``max_attributes`` keys in sorted order kept;
attributes                  ``monitoring.attributes_dropped`` = how many were dropped
==========================  ===========================================================

Attribute keys starting with ``monitoring.`` are reserved for these flags.

>>> e = normalise({"timestamp_ms": 1_700_000_000_000, "service": "api", "level": "warning",
...                "message": "disk full"}, received_ms=1_700_000_000_005)
>>> e.level, e.severity, e.attributes
('WARN', 13, {})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from monitoring.logs.levels import SEVERITY, normalise_level

FLAG_LEVEL = "monitoring.level_original"
FLAG_UTF8 = "monitoring.invalid_utf8"
FLAG_TRUNCATED = "monitoring.truncated"
FLAG_ORIGINAL_BYTES = "monitoring.original_bytes"
FLAG_TIMESTAMP = "monitoring.timestamp_original"
FLAG_ATTRS_DROPPED = "monitoring.attributes_dropped"
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01


class InvalidLog(ValueError):
    """A log record that cannot be kept; ``reason`` is a short machine-friendly cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class LogLimits:
    """Limits applied by ``normalise``."""

    max_message_bytes: int = 64 * 1024
    max_attributes: int = 64
    max_future_skew_ms: int = 3_600_000
    max_service_bytes: int = 256


class LogEntry(NamedTuple):
    """A normalised log record."""

    timestamp_ms: int
    service: str
    host: str
    level: str
    severity: int
    logger: str
    message: str
    trace_id: str
    span_id: str
    exception: str
    attributes: dict[str, str]


def truncate_utf8(text: str, limit: int) -> tuple[str, int]:
    """``text`` cut to at most ``limit`` UTF-8 bytes, and its original size in bytes.

    Never cuts inside a character:

    >>> truncate_utf8("héllo", 2)
    ('h', 6)
    """
    if len(text) * 4 <= limit:  # cannot be over the limit: skip encoding
        return text, -1
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text, len(raw)
    return raw[:limit].decode("utf-8", "ignore"), len(raw)


def check_service(service: str, limits: LogLimits) -> None:
    """Raises ``InvalidLog`` for a service name the agent cannot key state by.

    >>> check_service("x" * 300, LogLimits())
    Traceback (most recent call last):
    ...
    monitoring.logs.records.InvalidLog: bad-service: service name of 300 bytes, at most 256
    """
    if not service.strip():
        raise InvalidLog("missing-service", "the record has no service name")
    if len(service) * 4 > limits.max_service_bytes:
        n = len(service.encode("utf-8", "surrogatepass"))
        if n > limits.max_service_bytes:
            raise InvalidLog(
                "bad-service", f"service name of {n} bytes, at most {limits.max_service_bytes}"
            )
    if "\0" in service:
        raise InvalidLog("bad-service", "the service name holds a NUL character")


def normalise(
    record: Mapping[str, Any],
    received_ms: int,
    limits: LogLimits = LogLimits(),
    utf8_replaced: bool = False,
) -> LogEntry:
    """Validate and normalise one decoded LogRecord (see the module's table)."""
    service = record.get("service") or ""
    message = record.get("message") or ""
    exception = record.get("exception") or ""
    check_service(service, limits)
    if not message and not exception:
        raise InvalidLog("missing-message", f"service {service[:80]!r}: no message or exception")
    attrs_in = record.get("attributes") or {}
    attrs = dict(attrs_in)
    if len(attrs) > limits.max_attributes:
        keep = sorted(attrs)[: limits.max_attributes]
        attrs = {k: attrs[k] for k in keep}
        attrs[FLAG_ATTRS_DROPPED] = str(len(attrs_in) - limits.max_attributes)
    raw_level = record.get("level") or ""
    level, known = normalise_level(raw_level)
    if not known:
        attrs[FLAG_LEVEL] = raw_level[:200]
    ts = record.get("timestamp_ms") or 0
    if ts < MIN_TIMESTAMP_MS or ts > received_ms + limits.max_future_skew_ms:
        attrs[FLAG_TIMESTAMP] = str(ts)
        ts = received_ms
    limit = limits.max_message_bytes
    cut: list[str] = []
    message, n = truncate_utf8(message, limit)
    if n > limit:
        cut.append(f"message={n}")
    exception, n = truncate_utf8(exception, limit)
    if n > limit:
        cut.append(f"exception={n}")
    if cut:
        attrs[FLAG_TRUNCATED] = ",".join(c.split("=")[0] for c in cut)
        attrs[FLAG_ORIGINAL_BYTES] = ",".join(cut)
    if utf8_replaced:
        attrs[FLAG_UTF8] = "true"
    return LogEntry(
        ts,
        service,
        record.get("host") or "",
        level,
        SEVERITY[level],
        record.get("logger") or "",
        message,
        record.get("trace_id") or "",
        record.get("span_id") or "",
        exception,
        attrs,
    )
