"""Aggregation groups: timers and deduplication, as Alertmanager's dispatcher and nflog.

A group holds the alerts of one route with the same group labels, by fingerprint (a
repeated alert replaces the stored one). Its first flush comes ``group_wait`` after it
was created (at once if an alert's ``startsAt + group_wait`` is already past, as in
Alertmanager), then every ``group_interval``. At each flush and for each receiver, the
notification log decides (``needs_update``, Alertmanager's DedupStage):

* never notified: send if anything fires;
* a firing alert the receiver was not told about: send;
* nothing fires any more: send (the resolution) if the last message had firing alerts;
* an alert resolved since the last message: send;
* otherwise only when ``repeat_interval`` has passed since the last message. (The check
  runs at flushes, so a repeat goes out at the first flush at or after that time;
  Alertmanager's strict comparison makes it one ``group_interval`` later.)

A notification carries every unmuted alert of the group; when all are muted nothing is
sent and the logs stay as they were. Resolved alerts are dropped after the flush that
saw them, and an empty group is removed.

Expiry, as Alertmanager's ``Alert.Resolved()``: a firing alert whose horizon
(``ends_at_ms``) has passed at a flush without a refresh counts as resolved at that
horizon (``expire``), and the resolution goes out by the rules above. A refresh (same
fingerprint, later horizon) replaces the stored alert; as the firing set is unchanged
it sends nothing by itself, only ``repeat_interval`` does. A refresh arriving with an
earlier horizon than the stored one (a replay) keeps the later horizon.

>>> needs_update(None, frozenset({"a"}), frozenset(), repeat_ms=60_000, now_ms=0)
True
>>> entry = LogEntry(frozenset({"a"}), frozenset(), at_ms=0)
>>> needs_update(entry, frozenset({"a"}), frozenset(), repeat_ms=60_000, now_ms=30_000)
False
>>> needs_update(entry, frozenset({"a"}), frozenset(), repeat_ms=60_000, now_ms=60_000)
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from monitoring.alerts.escalation import Acknowledgement, EscalationState
from monitoring.alerts.model import Alert, Notification
from monitoring.alerts.routing import Route


@dataclass(frozen=True)
class LogEntry:
    """What one receiver was last told about a group, and when."""

    firing: frozenset[str]
    resolved: frozenset[str]
    at_ms: int

    def to_json(self) -> dict[str, Any]:
        """Snapshot form."""
        return {"firing": sorted(self.firing), "resolved": sorted(self.resolved), "at": self.at_ms}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LogEntry:
        """Inverse of ``to_json``."""
        return cls(frozenset(obj["firing"]), frozenset(obj["resolved"]), obj["at"])


def needs_update(
    entry: LogEntry | None,
    firing: frozenset[str],
    resolved: frozenset[str],
    repeat_ms: int,
    now_ms: int,
) -> bool:
    """Whether a receiver with log ``entry`` must be sent the group now."""
    if entry is None:
        return bool(firing)
    if not firing <= entry.firing:
        return True
    if not firing:
        return bool(entry.firing)
    if not resolved <= entry.resolved:
        return True
    return now_ms - entry.at_ms >= repeat_ms


def alert_order(alert: Alert) -> tuple[tuple[str, str], ...]:
    """Notifications list alerts sorted by label set, whatever the arrival order."""
    return tuple(sorted(alert.labels.items()))


Muted = Callable[[Alert], bool]


@dataclass
class AggregationGroup:
    """One group's alerts, timer, per-receiver log, escalation and acknowledgement."""

    route: Route
    key: str
    labels: dict[str, str]
    next_flush_ms: int
    alerts: dict[str, Alert] = field(default_factory=dict)
    flushed: bool = False
    log: dict[str, LogEntry] = field(default_factory=dict)
    escalation: EscalationState = field(default_factory=EscalationState)
    acked: Acknowledgement | None = None
    # resolves held until the due flush is done: their firing was never notified
    held: dict[str, Alert] = field(default_factory=dict)

    def insert(self, alert: Alert, now_ms: int) -> None:
        """Add or replace an alert; before the first flush an old alert flushes at once.

        A resolve of a firing alert that no receiver was told of, arriving when the
        group's flush is due already, is held until that flush is done: the flush says
        the alert fired, the next one that it resolved. An evaluator catching up sends
        both in one batch, long after both; live, a resolve within ``group_wait`` still
        replaces the firing (nothing is sent, as in Alertmanager).
        """
        old = self.alerts.get(alert.fingerprint)
        if (
            alert.status == "resolved"
            and old is not None
            and old.status == "firing"
            and self.next_flush_ms <= now_ms
            and not any(alert.fingerprint in e.firing for e in self.log.values())
        ):
            self.held[alert.fingerprint] = alert
            return
        self.held.pop(alert.fingerprint, None)
        if (
            old is not None
            and old.status == alert.status == "firing"
            and old.starts_at_ms == alert.starts_at_ms
            and old.ends_at_ms is not None
            and alert.ends_at_ms is not None
            and alert.ends_at_ms < old.ends_at_ms
        ):
            alert = replace(alert, ends_at_ms=old.ends_at_ms)
        self.alerts[alert.fingerprint] = alert
        if not self.flushed and alert.starts_at_ms + self.route.group_wait_ms < now_ms:
            self.next_flush_ms = min(self.next_flush_ms, now_ms)

    def expire(self, now_ms: int) -> bool:
        """Firing alerts past their horizon become resolved; whether any did."""
        expired = [a for a in self.alerts.values() if a.at(now_ms) is not a]
        for a in expired:
            self.alerts[a.fingerprint] = a.at(now_ms)
        return bool(expired)

    def visible(self, muted: Muted) -> list[Alert]:
        """The unmuted alerts, in notification order."""
        return sorted((a for a in self.alerts.values() if not muted(a)), key=alert_order)

    def notify(
        self, receivers: Iterable[tuple[str, int]], muted: Muted, now_ms: int
    ) -> list[Notification]:
        """Notifications for the receivers whose log says they need one; logs them."""
        alerts = self.visible(muted)
        if not alerts:  # all muted: nothing to say, logs untouched (Alertmanager's MultiStage)
            return []
        firing = frozenset(a.fingerprint for a in alerts if a.status == "firing")
        resolved = frozenset(a.fingerprint for a in alerts if a.status == "resolved")
        out: list[Notification] = []
        for receiver, tier in receivers:
            entry = self.log.get(receiver)
            if not needs_update(entry, firing, resolved, self.route.repeat_interval_ms, now_ms):
                continue
            self.log[receiver] = LogEntry(firing, resolved, now_ms)
            out.append(
                Notification(
                    receiver=receiver,
                    group_key=self.key,
                    group_labels=dict(self.labels),
                    alerts=tuple(alerts),
                    status="firing" if firing else "resolved",
                    tier=tier,
                    previous_ms=entry.at_ms if entry is not None else 0,
                )
            )
        return out

    def flush(
        self, receivers: Iterable[tuple[str, int]], muted: Muted, now_ms: int
    ) -> list[Notification]:
        """The timer's flush: notify, drop resolved alerts, set the next flush."""
        out = self.notify(receivers, muted, now_ms)
        for fp in [fp for fp, a in self.alerts.items() if a.status == "resolved"]:
            del self.alerts[fp]
        self.alerts.update(self.held)  # resolved: said at the next flush
        self.held.clear()
        self.flushed = True
        self.next_flush_ms = now_ms + self.route.group_interval_ms
        return out

    def firing_fingerprints(self, muted: Muted) -> set[str]:
        """Fingerprints of the unmuted firing alerts."""
        return {a.fingerprint for a in self.visible(muted) if a.status == "firing"}

    @property
    def empty(self) -> bool:
        """No alerts left: the group can go."""
        return not self.alerts and not self.held

    def to_json(self) -> dict[str, Any]:
        """Snapshot form (the route by path and key)."""
        return {
            "route_path": list(self.route.path),
            "route_key": self.route.key,
            "key": self.key,
            "labels": self.labels,
            "next_flush_ms": self.next_flush_ms,
            "alerts": [alert_to_json(self.alerts[fp]) for fp in sorted(self.alerts)],
            "flushed": self.flushed,
            "log": {r: e.to_json() for r, e in sorted(self.log.items())},
            "escalation": self.escalation.to_json(),
            "acked": self.acked.to_json() if self.acked else None,
            **({"held": [alert_to_json(self.held[fp]) for fp in sorted(self.held)]}
               if self.held else {}),
        }  # fmt: skip

    @classmethod
    def from_json(cls, route: Route, obj: Mapping[str, Any]) -> AggregationGroup:
        """Inverse of ``to_json`` for the route found at the stored path."""
        alerts = [alert_from_json(a) for a in obj["alerts"]]
        return cls(
            route=route,
            key=obj["key"],
            labels=dict(obj["labels"]),
            next_flush_ms=obj["next_flush_ms"],
            alerts={a.fingerprint: a for a in alerts},
            flushed=obj["flushed"],
            log={r: LogEntry.from_json(e) for r, e in obj["log"].items()},
            escalation=EscalationState.from_json(obj["escalation"]),
            acked=Acknowledgement.from_json(obj["acked"]) if obj["acked"] else None,
            held={a.fingerprint: a for a in map(alert_from_json, obj.get("held", []))},
        )


def alert_to_json(alert: Alert) -> dict[str, Any]:
    """An alert as a JSON object (every field, so it restores equal)."""
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "status": alert.status,
        "starts_at_ms": alert.starts_at_ms,
        "ends_at_ms": alert.ends_at_ms,
        "generator_url": alert.generator_url,
        "value": alert.value,
        "severity": alert.severity,
        "fingerprint": alert.fingerprint,
    }


def alert_from_json(obj: Mapping[str, Any]) -> Alert:
    """Inverse of ``alert_to_json``."""
    return Alert(
        labels=dict(obj["labels"]),
        annotations=dict(obj["annotations"]),
        status=obj["status"],
        starts_at_ms=obj["starts_at_ms"],
        ends_at_ms=obj["ends_at_ms"],
        generator_url=obj["generator_url"],
        value=obj["value"],
        severity=obj["severity"],
        fingerprint=obj["fingerprint"],
    )


def notification_to_json(n: Notification) -> dict[str, Any]:
    """A notification as a JSON object (every field, so it restores equal)."""
    return {
        "receiver": n.receiver,
        "group_key": n.group_key,
        "group_labels": dict(n.group_labels),
        "alerts": [alert_to_json(a) for a in n.alerts],
        "status": n.status,
        "tier": n.tier,
        "previous_ms": n.previous_ms,
    }


def notification_from_json(obj: Mapping[str, Any]) -> Notification:
    """Inverse of ``notification_to_json``."""
    return Notification(
        receiver=obj["receiver"],
        group_key=obj["group_key"],
        group_labels=dict(obj["group_labels"]),
        alerts=tuple(alert_from_json(a) for a in obj["alerts"]),
        status=obj["status"],
        tier=obj["tier"],
        previous_ms=obj["previous_ms"],
    )
