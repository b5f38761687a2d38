"""The alert as a value: what Alertmanager carries for one alert instance.

Rule evaluation produces ``Alert`` values; the alert manager groups, silences and
routes them; notifiers deliver them. The Kafka contract is ``schemas/alert.v*.avsc``.

The fingerprint is Prometheus' label-set fingerprint (FNV-1a 64 over the sorted
label names and values, each followed by the separator byte 0xff), printed as 16 hex
digits, so it equals what Alertmanager shows for the same labels.

>>> fingerprint({"alertname": "HighCPU", "host": "a"})
'8eb796a0cf42dedf'
>>> fingerprint({})  # the hash of the empty label set, as in Prometheus
'cbf29ce484222325'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["firing", "resolved"]

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1
_SEP = 0xFF


def fingerprint(labels: Mapping[str, str]) -> str:
    """Prometheus/Alertmanager fingerprint of a label set, as 16 lowercase hex digits."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for b in part.encode():
                h = ((h ^ b) * _FNV_PRIME) & _MASK
            h = ((h ^ _SEP) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def rfc3339(ms: int | None) -> str:
    """Milliseconds since the epoch as RFC 3339 in UTC; ``None`` as Go's zero time."""
    if ms is None:
        return "0001-01-01T00:00:00Z"
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Alert:
    """One state change of one alert instance (labels identify the instance).

    ``status`` is ``firing`` or ``resolved``; ``ends_at_ms`` is when it resolved, or
    for a firing alert its validity horizon (as Prometheus' ``endsAt``: the evaluator
    re-sends it before then; if no refresh comes, it counts as resolved at that time,
    see ``at``). ``labels`` include ``alertname`` and the rule's extra labels.
    """

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    status: Status
    starts_at_ms: int
    ends_at_ms: int | None = None
    generator_url: str = ""
    value: float | None = None
    severity: str = ""
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.labels))

    @property
    def name(self) -> str:
        """The ``alertname`` label."""
        return self.labels.get("alertname", "")

    def at(self, now_ms: int) -> Alert:
        """The alert as it stands at ``now_ms``: firing past its horizon is resolved.

        >>> a = Alert({"alertname": "A"}, {}, "firing", 0, ends_at_ms=240_000)
        >>> a.at(239_999).status, a.at(240_000).status, a.at(240_000).ends_at_ms
        ('firing', 'resolved', 240000)
        """
        if self.status == "firing" and self.ends_at_ms is not None and now_ms >= self.ends_at_ms:
            return replace(self, status="resolved")
        return self

    def to_alertmanager(self) -> dict[str, Any]:
        """The alert as Alertmanager's webhook payloads spell it.

        A firing alert's horizon is not shown (Go's zero time), as Alertmanager's
        ``types.Alerts`` hides an end that has not come yet.
        """
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at_ms),
            "endsAt": rfc3339(self.ends_at_ms if self.status == "resolved" else None),
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
            "status": self.status,
        }


@dataclass(frozen=True)
class Notification:
    """One message for one receiver: a group of alerts, as Alertmanager's webhook sends it.

    ``group_key`` identifies the aggregation group (route + group labels);
    ``status`` is ``firing`` when any alert in ``alerts`` fires, else ``resolved``.
    ``tier`` is the escalation tier (0 for the first receivers of a policy).
    ``previous_ms`` is when this receiver was last notified of the group (0: never):
    a repeat of unchanged content differs from the message it repeats by it, while a
    replay after a restart repeats it exactly (so delivery keys tell them apart).
    """

    receiver: str
    group_key: str
    group_labels: Mapping[str, str]
    alerts: tuple[Alert, ...]
    status: Status
    tier: int = 0
    previous_ms: int = 0

    @property
    def common_labels(self) -> dict[str, str]:
        """Labels shared by every alert of the group."""
        if not self.alerts:
            return {}
        first = dict(self.alerts[0].labels)
        return {k: v for k, v in first.items() if all(a.labels.get(k) == v for a in self.alerts)}

    @property
    def common_annotations(self) -> dict[str, str]:
        """Annotations shared by every alert of the group."""
        if not self.alerts:
            return {}
        first = dict(self.alerts[0].annotations)
        return {
            k: v for k, v in first.items() if all(a.annotations.get(k) == v for a in self.alerts)
        }


@dataclass(frozen=True)
class Recorded:
    """One sample the evaluator writes (a recording rule's output, an ``ALERTS``
    series): its series and value at the evaluation time."""

    name: str
    labels: dict[str, str]
    value: float
