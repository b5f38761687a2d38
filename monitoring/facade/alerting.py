"""``AlertRules().define_rules(...)`` and ``NotificationService().send_notifications(...)``.

**Thresholds and conditions.** ``define_rules(thresholds=..., conditions=...)`` returns
compiled ``Rule`` values (the evaluator's own), or raises ``ValueError`` naming the rule
and the problem:

* ``thresholds``: ``{metric: value}`` (fires above ``value``), or ``{metric: {"above":
  v}}`` / ``{metric: {"below": v}}``; a value may be written ``"80%"`` (the number 80:
  the metric is in percent, as the platform's ``cpu_usage > 80%``). The rule is named
  ``<metric>_high`` (``_low`` for below).
* ``conditions``: per metric of ``thresholds``, ``{metric: {"duration": "5m",
  "severity": "critical", "summary": ..., "recovery": "cpu_usage < 70", "name": ...}}``
  (how long the threshold must hold before the alert fires, and what it carries); or a
  list of whole rules in the platform's shorthand (``{"name": "high_cpu", "condition":
  "cpu_usage > 80%", "duration": "5m"}``, as ``alerts.rules`` in monitoring.yaml) or
  Prometheus' rule objects (``alert``, ``expr``, ``for``...).
* neither: the rules of the configuration (``alerting.definitions``).

**Channels.** ``send_notifications(alerts=..., channels=...)`` groups the alerts as the
alert manager does (by alertname) and delivers each group to every channel, with the
notifier's own integrations, retries and secret redaction. A channel is

* a type, ``"email"``, ``"slack"``, ``"pagerduty"``, ``"webhook"`` or
  ``"alertmanager"``: the first such integration among the receivers of the notifier's
  config file (``notifier.config``, Alertmanager's shape);
* a receiver's name in that file: all its integrations;
* a mapping ``{"type": "email", ...}``: one integration configured inline, with the
  keys of that file's ``<type>_configs`` entries (``to``, ``smarthost``... for email).

None: ``notifier.channels`` (the platform's ``alerts.notifications.channels``). The
result is one ``DeliveryRecord`` per integration and group (``outcome`` ``delivered`` or
``failed``, the error redacted). In ``pipeline`` mode the deliveries are also sent to the
``alerts.deliveries`` topic, which the store keeps in its ``deliveries`` table, as the
notifier process does for its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from monitoring.alerts.model import Alert
from monitoring.alerts.rules import Rule, load_rule_objects, percent_to_number
from monitoring.config import Settings
from monitoring.facade.common import resolve

CHANNEL_TYPES = ("email", "slack", "pagerduty", "webhook", "alertmanager")
MAX_RULES = 10_000
MAX_CHANNELS = 32
MAX_ALERTS = 10_000
RECEIVER = "python-api"


def _number(v: Any, where: str) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"{where}: a number (or '80%'), not {v!r}")
    text = percent_to_number(str(v).strip())
    try:
        float(text)
    except ValueError:
        raise ValueError(f"{where}: a number (or '80%'), not {v!r}") from None
    return text


def _threshold_rules(thresholds: Mapping[str, Any], conditions: Mapping[str, Any]) -> list[Any]:
    out = []
    for metric, spec in thresholds.items():
        where = f"thresholds.{metric}"
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"above", "below"}
            if unknown or len(spec) != 1:
                raise ValueError(f"{where}: one of 'above' or 'below', got {sorted(spec)}")
            ((side, value),) = spec.items()
        else:
            side, value = "above", spec
        op, suffix = (">", "high") if side == "above" else ("<", "low")
        rule: dict[str, Any] = {
            "name": f"{metric}_{suffix}",
            "condition": f"{metric} {op} {_number(value, where)}",
        }
        extra = conditions.get(metric, {})
        if not isinstance(extra, Mapping):
            raise ValueError(f"conditions.{metric}: a mapping (duration, severity...)")
        unknown = set(extra) - {"name", "duration", "severity", "summary", "description",
                                "recovery", "labels", "keep_firing_for"}  # fmt: skip
        if unknown:
            raise ValueError(f"conditions.{metric}: unknown key(s) {sorted(unknown)}")
        out.append({**rule, **extra})
    stray = set(conditions) - set(thresholds)
    if stray:
        raise ValueError(f"conditions: {sorted(stray)} have no threshold")
    return out


class AlertRules:
    """Builds the evaluator's rules from thresholds and conditions (see the module).

    >>> rules = AlertRules(Settings.load(None)).define_rules(
    ...     thresholds={"cpu_usage": "80%"}, conditions={"cpu_usage": {"duration": "5m"}})
    >>> [(r.name, r.expr, r.for_ms) for r in rules]
    [('cpu_usage_high', 'cpu_usage > 80', 300000)]
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.load()

    def define_rules(
        self,
        thresholds: Mapping[str, Any] | None = None,
        conditions: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Rule]:
        """Compiled rules (see the module); ValueError naming each problem."""
        objects: list[Any] = []
        per_metric: Mapping[str, Any] = {}
        if isinstance(conditions, Mapping):
            per_metric = conditions
        elif conditions is not None:
            objects.extend(conditions)
        if thresholds:
            objects = _threshold_rules(thresholds, per_metric) + objects
        elif per_metric:
            raise ValueError("conditions by metric need thresholds for those metrics")
        if thresholds is None and conditions is None:
            objects = list(self.settings.alerting.definitions)
        if len(objects) > MAX_RULES:
            raise ValueError(f"more than {MAX_RULES} rules")
        loaded = load_rule_objects(objects, "define_rules")
        if loaded.errors:
            raise ValueError("; ".join(str(e) for e in loaded.errors[:20]))
        return loaded.rules


def _integrations(channel: Any, settings: Settings, file: dict[str, Any] | None) -> dict[str, Any]:
    """``<type>_configs`` entries of one channel (see the module)."""
    if isinstance(channel, Mapping):
        kind = channel.get("type")
        if kind not in CHANNEL_TYPES:
            raise ValueError(f"channel {dict(channel)!r:.200}: 'type' is one of {CHANNEL_TYPES}")
        return {f"{kind}_configs": [{k: v for k, v in channel.items() if k != "type"}]}
    if not isinstance(channel, str):
        raise ValueError(f"channel {channel!r:.100}: a type, a receiver's name, or a mapping")
    receivers = (file or {}).get("receivers") or []
    for r in receivers:
        if isinstance(r, Mapping) and r.get("name") == channel:
            return {k: list(v) for k, v in r.items() if k.endswith("_configs")}
    if channel in CHANNEL_TYPES:
        for r in receivers:
            entries = r.get(f"{channel}_configs") if isinstance(r, Mapping) else None
            if entries:
                return {f"{channel}_configs": [entries[0]]}
        raise ValueError(
            f"channel {channel!r}: no receiver of {settings.notifier.config} has "
            f"{channel}_configs (configure one, or give the channel as a mapping)"
        )
    raise ValueError(f"channel {channel!r:.100}: not a type {CHANNEL_TYPES} nor a receiver")


class NotificationService:
    """Delivers alerts to channels with the notifier's integrations (see the module)."""

    def __init__(self, settings: Settings | None = None, *, mode: str | None = None) -> None:
        self.settings, self.mode = resolve(settings, mode)

    def _file(self, needed: bool) -> dict[str, Any] | None:
        path = Path(self.settings.notifier.config)
        if not needed:
            return None
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ValueError(f"notifier.config {path}: cannot read: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ValueError(f"notifier.config {path}: not valid YAML: {e}") from None
        return doc if isinstance(doc, dict) else {}

    def receiver(self, channels: Sequence[Any] | None = None) -> Any:
        """The validated receiver holding every channel's integrations."""
        from monitoring.alerts.receivers import parse_receiver

        chosen = list(self.settings.notifier.channels if channels is None else channels)
        if not chosen or len(chosen) > MAX_CHANNELS:
            raise ValueError(f"channels: 1 to {MAX_CHANNELS} (none given or configured)")
        file = self._file(any(isinstance(c, str) for c in chosen))
        merged: dict[str, list[Any]] = {}
        for c in chosen:
            for key, entries in _integrations(c, self.settings, file).items():
                merged.setdefault(key, []).extend(entries)
        try:
            return parse_receiver({"name": RECEIVER, **merged})
        except ValueError as e:
            raise ValueError(f"channels: {e}") from None

    def send_notifications(
        self, alerts: Iterable[Alert], channels: Sequence[Any] | None = None
    ) -> list[Any]:
        """Deliver ``alerts`` to ``channels``; one ``DeliveryRecord`` per integration and
        group (see the module)."""
        from monitoring.alerts.alert_manager import DEFAULT_CONFIG, AlertManager
        from monitoring.alerts.manager_config import ManagerConfig

        receiver = self.receiver(channels)
        items = list(alerts)
        if not items:
            return []
        if len(items) > MAX_ALERTS:
            raise ValueError(f"more than {MAX_ALERTS} alerts in one call")
        config = {**DEFAULT_CONFIG, "route": {**DEFAULT_CONFIG["route"], "receiver": RECEIVER},
                  "receivers": [{"name": RECEIVER}]}  # fmt: skip
        manager = AlertManager(ManagerConfig.from_dict(config, "send_notifications"))
        now = int(time.time() * 1000)
        for a in items:
            if not isinstance(a, Alert):
                raise TypeError(f"{type(a).__name__} is not an Alert (AlertManager.monitor)")
            manager.receive(a, now)
        notifications = manager.flush_due(now)
        records = asyncio.run(self._deliver(receiver, notifications))
        if self.mode == "pipeline":
            self._publish(records)
        return records

    async def _deliver(self, receiver: Any, notifications: list[Any]) -> list[Any]:
        from monitoring.sinks.notifiers.dispatcher import Dispatcher, RetryPolicy

        policy = RetryPolicy(max_attempts=3, give_up_after_s=60.0)
        async with Dispatcher({RECEIVER: receiver}, policy=policy) as d:
            out: list[Any] = []
            for n in notifications:
                out.extend(await d.deliver(n))
            return out

    def _publish(self, records: list[Any]) -> None:
        """The delivery log to ``alerts.deliveries`` (the store keeps it)."""
        from confluent_kafka import Producer

        from monitoring.runtime.kafka_client import client_config
        from monitoring.runtime.topics import NOTIFY_DELIVERIES, topic_name
        from monitoring.wire.codec import AvroCodec

        codec = AvroCodec.from_directory()
        producer = Producer(client_config(
            self.settings.kafka, **{"acks": "all", "client.id": "monitoring-python-api"}
        ))  # fmt: skip
        topic = topic_name(self.settings.kafka, NOTIFY_DELIVERIES)
        for r in records:
            producer.produce(topic, codec.encode("monitoring.Delivery", r.to_avro()), r.delivery_id)
        if producer.flush(30):
            raise RuntimeError("delivery records not acknowledged by Kafka")
