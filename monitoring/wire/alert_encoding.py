"""``Alert`` values <-> ``monitoring.Alert`` Avro records (schemas/alert.v2.avsc).

>>> from monitoring.alerts.model import Alert
>>> a = Alert({"alertname": "Hot", "room": "a"}, {"summary": "hot"}, "firing", 1_000, value=35.0)
>>> from_record(to_record(a, evaluated_at_ms=10_000)) == a
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitoring.alerts.model import Alert

ALERT = "monitoring.Alert"


def to_record(alert: Alert, evaluated_at_ms: int = 0, rule: str = "") -> dict[str, Any]:
    """The Avro record of one alert state change."""
    return {
        "fingerprint": alert.fingerprint,
        "status": alert.status.upper(),
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "starts_at_ms": alert.starts_at_ms,
        "ends_at_ms": alert.ends_at_ms,
        "generator_url": alert.generator_url,
        "severity": alert.severity or alert.labels.get("severity", ""),
        "value": alert.value,
        "rule": rule,
        "evaluated_at_ms": evaluated_at_ms,
    }


def from_record(rec: Mapping[str, Any]) -> Alert:
    """The ``Alert`` of a decoded record (any kept schema version)."""
    return Alert(
        labels=dict(rec["labels"]),
        annotations=dict(rec["annotations"]),
        status="firing" if rec["status"] == "FIRING" else "resolved",
        starts_at_ms=rec["starts_at_ms"],
        ends_at_ms=rec["ends_at_ms"],
        generator_url=rec["generator_url"],
        value=rec["value"],
        severity=rec["severity"],
        fingerprint=rec["fingerprint"],
    )
