"""The alert manager: routing, grouping, dedup, silences, inhibition and escalation.

Pure and clock-explicit: the caller passes ``now_ms`` to every call, feeds alert state
changes with ``receive``, commands (silences, acknowledgements) with ``apply``, and
calls ``flush_due`` when ``next_deadline()`` comes (and after ``receive`` if it wants
``group_wait: 0`` to be immediate). ``to_bytes``/``from_bytes`` snapshot the whole state
as JSON, so a restarted process re-sends nothing and forgets nothing; for a compacted
topic, ``checkpoint()`` returns only the records changed since the last call (one per
aggregation group plus ``meta`` for silences and acks, ``None`` for a removed group) and
``from_records`` restores from the latest record per key.

Silences and inhibition are applied when a group is flushed, as in Alertmanager: a
muted alert is left out of the notification, and a group whose alerts are all muted
sends nothing. So is expiry: a firing alert whose ``ends_at_ms`` horizon passed
without a refresh is resolved at its group's next flush (``grouping.py``).

>>> am = AlertManager.from_yaml('''
... route: {receiver: team, group_by: [alertname], group_wait: 30s, group_interval: 5m}
... receivers: [{name: team}]
... ''')
>>> am.receive(Alert({"alertname": "HighCPU", "host": "a"}, {}, "firing", 0), now_ms=0)
>>> am.next_deadline()
30000
>>> [(n.receiver, n.group_key, n.status) for n in am.flush_due(30_000)]
[('team', '{}:{alertname="HighCPU"}', 'firing')]
>>> am.flush_due(330_000)  # nothing changed, repeat_interval (4h) not reached
[]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from monitoring.alerts.commands import (
    Acknowledge,
    AnyCommand,
    CommandError,
    CreateSilence,
    ExpireSilence,
    parse_command,
)
from monitoring.alerts.escalation import Acknowledgement, EscalationPolicy
from monitoring.alerts.grouping import AggregationGroup, Muted, alert_order
from monitoring.alerts.inhibition import InhibitionIndex, Inhibitor
from monitoring.alerts.manager_config import ManagerConfig
from monitoring.alerts.model import Alert, Notification, rfc3339
from monitoring.alerts.routing import Route, build_routes, group_key
from monitoring.alerts.rules import Rule, RuleSet
from monitoring.alerts.silences import (
    DEFAULT_MAX_SILENCES,
    DEFAULT_RETENTION_MS,
    Silence,
    SilenceError,
    Silences,
)

SNAPSHOT_VERSION = 1
# ``AlertManager()`` with no config: every alert to one receiver, grouped by alertname,
# sent at once (group_wait 0)
DEFAULT_CONFIG: dict[str, Any] = {
    "route": {
        "receiver": "default",
        "group_by": ["alertname"],
        "group_wait": "0s",
        "group_interval": "1m",
        "repeat_interval": "4h",
    },
    "receivers": [{"name": "default"}],
}
GroupId = tuple[tuple[int, ...], str]


class SnapshotError(ValueError):
    """Snapshot bytes cannot be read."""


@dataclass(frozen=True)
class Applied:
    """What a command did: the silence it created or expired, the groups it acked."""

    kind: str
    silence: Silence | None = None
    group_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlertStatus:
    """An alert as ``GET /api/v2/alerts`` shows it: state, muting, receivers, ack."""

    alert: Alert
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]
    receivers: tuple[str, ...]
    acknowledged_by: str | None

    @property
    def state(self) -> Literal["active", "suppressed"]:
        """``suppressed`` when silenced or inhibited, else ``active``."""
        return "suppressed" if self.silenced_by or self.inhibited_by else "active"

    def to_api(self) -> dict[str, Any]:
        """Alertmanager's v2 ``GettableAlert`` (plus ``acknowledgedBy``); unlike in
        notifications, a firing alert's ``endsAt`` is its horizon, as there."""
        return {
            **self.alert.to_alertmanager(),
            "endsAt": rfc3339(self.alert.ends_at_ms),
            "receivers": [{"name": r} for r in self.receivers],
            "status": {
                "state": self.state,
                "silencedBy": list(self.silenced_by),
                "inhibitedBy": list(self.inhibited_by),
            },
            "acknowledgedBy": self.acknowledged_by,
        }


class AlertManager:
    """Alertmanager's dispatcher, notification log, silences and inhibitor, plus escalation."""

    def __init__(
        self,
        config: ManagerConfig | None = None,
        *,
        silence_retention_ms: int = DEFAULT_RETENTION_MS,
        max_silences: int = DEFAULT_MAX_SILENCES,
    ) -> None:
        if config is None:  # the documented ``AlertManager()``: one receiver, by alertname
            config = ManagerConfig.from_dict(DEFAULT_CONFIG, "default")
        self.config = config
        self.routes: Route = build_routes(config.route)
        self.policies: dict[str, EscalationPolicy] = config.policies
        self.inhibitor = Inhibitor([r.build() for r in config.inhibit_rules])
        self.silences = Silences(max_silences=max_silences)
        self.silence_retention_ms = silence_retention_ms
        self._groups: dict[GroupId, AggregationGroup] = {}
        self._acks: dict[str, Acknowledgement] = {}
        self._deadline: int | None = None  # cache of next_deadline(); None: recompute
        self._dirty: set[GroupId] = set()  # groups changed since the last checkpoint()
        self._meta_dirty = True  # silences or acks changed since then
        self._handlers: dict[str, Callable[[Any, int], Applied]] = {
            "create_silence": self._create_silence,
            "expire_silence": self._expire_silence,
            "acknowledge": self._acknowledge,
        }

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> AlertManager:
        """A manager for a YAML config (``ConfigError`` naming the key if invalid)."""
        return cls(ManagerConfig.from_yaml(text, source))

    @classmethod
    def load(cls, path: str | Path) -> AlertManager:
        """A manager for a config file."""
        return cls(ManagerConfig.load(path))

    # -- input -------------------------------------------------------------------------

    def monitor(
        self,
        metrics: Iterable[Any],
        rules: Iterable[Rule] | RuleSet,
        window_ms: int | None = None,
    ) -> list[Alert]:
        """The platform's ``monitor(metrics=..., rules=...)``: evaluate ``rules`` over the
        closed windows ``metrics`` (``Aggregate`` values, or objects with ``.aggregate``
        such as ``MetricsAggregator``'s results) at each window end in event-time order,
        as the evaluator does, and receive every alert state change into this manager
        (so ``flush_due`` gives the notifications its routes send). Returns those state
        changes in order: firing ones, and resolved ones for instances that stopped.

        Rules read windows of ``window_ms`` (default: the smallest size given).

        >>> from monitoring.alerts.rules import load_rule_objects
        >>> from monitoring.metrics.aggregator import PartitionAggregator
        >>> from monitoring.metrics.samples import Sample
        >>> agg = PartitionAggregator([10_000], 0)
        >>> windows = agg.process(0, [Sample("cpu_usage", "cpu_usage", {}, t * 10_000, 95.0)
        ...                            for t in range(40)]).closed + agg.close_idle()
        >>> rules = load_rule_objects([{"name": "high_cpu", "condition": "cpu_usage > 80%",
        ...                             "duration": "5m"}]).rules
        >>> [(a.status, a.labels["alertname"], a.starts_at_ms) for a in
        ...  AlertManager().monitor(windows, rules)]
        [('firing', 'high_cpu', 310000)]
        """
        from monitoring.alerts.evaluator import AlertEngine

        windows = [getattr(m, "aggregate", m) for m in metrics]
        for w in windows:
            if not hasattr(w, "window_end_ms"):
                raise TypeError(f"{type(w).__name__} is not a closed window (Aggregate)")
        size = window_ms or min((w.window_ms for w in windows), default=10_000)
        rule_list = list(rules.rules if isinstance(rules, RuleSet) else rules)
        engine = AlertEngine(rule_list, window_ms=size)
        ends: dict[int, list[Any]] = {}
        for w in windows:
            if w.window_ms == size:
                ends.setdefault(w.window_end_ms, []).append(w)
        changes: list[Alert] = []
        for end in sorted(ends):
            for w in ends[end]:
                engine.add(w)
            for alert in engine.evaluate(end):
                self.receive(alert, now_ms=end)
                changes.append(alert)
        return changes

    def receive(self, alert: Alert, now_ms: int) -> None:
        """Take one alert state change into every group its routes lead to."""
        if alert.status == "resolved" and alert.fingerprint in self._acks:
            del self._acks[alert.fingerprint]
            self._meta_dirty = True
        for route in self.routes.match(alert.labels):
            key = group_key(route, alert.labels)
            group = self._groups.get((route.path, key))
            if group is None:
                group = AggregationGroup(
                    route, key, route.group_labels(alert.labels), now_ms + route.group_wait_ms
                )
                self._groups[(route.path, key)] = group
            group.insert(alert, now_ms)
            self._dirty.add((route.path, key))
            if self._deadline is not None:
                self._deadline = min(self._deadline, group.next_flush_ms)

    def apply(self, command: AnyCommand | bytes | str | dict[str, Any], now_ms: int) -> Applied:
        """Apply a command (a value or its JSON); ``CommandError`` when it cannot be."""
        cmd = command if isinstance(command, AnyCommand) else parse_command(command)
        try:
            applied = self._handlers[cmd.kind](cmd, now_ms)
        except SilenceError as e:
            raise CommandError(str(e)) from None
        self._meta_dirty = True
        return applied

    def _create_silence(self, cmd: CreateSilence, now_ms: int) -> Applied:
        silence = self.silences.upsert(cmd.silence.to_silence(cmd.id, now_ms), now_ms)
        return Applied(cmd.kind, silence=silence)

    def _expire_silence(self, cmd: ExpireSilence, now_ms: int) -> Applied:
        return Applied(cmd.kind, silence=self.silences.expire(cmd.id, now_ms))

    def _acknowledge(self, cmd: Acknowledge, now_ms: int) -> Applied:
        ack = Acknowledgement(cmd.by, now_ms, cmd.comment)
        if cmd.group_key is not None:
            groups = [g for g in self._groups.values() if g.key == cmd.group_key]
            if not groups:
                raise CommandError(f"no alert group with key {cmd.group_key!r}")
            for g in groups:
                g.acked = ack
                self._dirty.add((g.route.path, g.key))
            return Applied(cmd.kind, group_keys=(cmd.group_key,))
        fp = cmd.fingerprint
        groups = [
            g for g in self._groups.values() if fp in g.alerts and g.alerts[fp].status == "firing"
        ]
        if not groups:
            raise CommandError(f"no firing alert with fingerprint {fp!r}")
        self._acks[fp] = ack  # type: ignore[index]
        return Applied(cmd.kind, group_keys=tuple(sorted({g.key for g in groups})))

    # -- time --------------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """The earliest time ``flush_due`` has work (None: no groups)."""
        if self._deadline is None:
            times = [g.next_flush_ms for g in self._groups.values()]
            times += [g.escalation.next_ms for g in self._groups.values() if g.escalation.next_ms]
            self._deadline = min(times, default=None)
        return self._deadline

    def flush_due(self, now_ms: int) -> list[Notification]:
        """Flush every group and escalation whose time has come; the notifications."""
        if self.silences.gc(now_ms, self.silence_retention_ms):
            self._meta_dirty = True
        deadline = self.next_deadline()
        if deadline is None or deadline > now_ms:
            return []
        self._deadline = None
        muted = self._muter(now_ms)
        out: list[Notification] = []
        for gid in sorted(self._groups):
            group = self._groups[gid]
            if group.next_flush_ms > now_ms and not group.escalation.due(now_ms):
                continue
            out.extend(self._flush(gid, muted, now_ms))
        live = {fp for g in self._groups.values() for fp in g.alerts}
        if any(fp not in live for fp in self._acks):
            self._acks = {fp: a for fp, a in self._acks.items() if fp in live}
            self._meta_dirty = True
        return out

    def _flush(self, gid: GroupId, muted: Muted, now_ms: int) -> list[Notification]:
        """Flush group ``gid`` if its time has come, and its escalation if due."""
        group = self._groups[gid]
        out: list[Notification] = []
        self._dirty.add(gid)
        group.expire(now_ms)  # past their horizon without a refresh: resolved
        policy = self._policy(group)
        if group.next_flush_ms <= now_ms:
            sent = group.flush(self._receivers(group), muted, now_ms)
            out.extend(sent)
            if policy is not None and any(n.status == "firing" for n in sent):
                group.escalation.start(policy, now_ms)
        if group.empty:
            del self._groups[gid]
        elif group.escalation.due(now_ms):
            if policy is None:  # the policy left the config since this group started
                group.escalation.next_ms = None
            else:
                out.extend(self._escalate(group, policy, muted, now_ms))
        return out

    def _policy(self, group: AggregationGroup) -> EscalationPolicy | None:
        name = group.route.escalation
        return self.policies.get(name) if name is not None else None

    def _receivers(self, group: AggregationGroup) -> list[tuple[str, int]]:
        found = {group.route.receiver: 0}
        policy = self._policy(group)
        if policy is not None:
            for receiver, tier in policy.receivers_through(group.escalation.tier):
                found.setdefault(receiver, tier)
        return list(found.items())

    def _escalate(
        self, group: AggregationGroup, policy: EscalationPolicy, muted: Muted, now_ms: int
    ) -> list[Notification]:
        firing = group.firing_fingerprints(muted)
        handled = group.acked is not None or not firing or firing <= self._acks.keys()
        before = {r for r, _ in self._receivers(group)}
        if group.escalation.advance(policy, now_ms, acknowledged=handled) is None:
            return []
        new = [(r, t) for r, t in self._receivers(group) if r not in before]
        return group.notify(new, muted, now_ms)

    def _muter(self, now_ms: int) -> Muted:
        """Silenced-or-inhibited test for one moment; the inhibition index is built lazily."""
        cache: dict[str, bool] = {}
        index: list[InhibitionIndex] = []
        active = self.silences.active_at(now_ms)

        def muted(alert: Alert) -> bool:
            hit = cache.get(alert.fingerprint)
            if hit is None:
                if not index:
                    index.append(self.inhibitor.index(self._firing_alerts(now_ms)))
                hit = bool(active.silenced_by(alert.labels)) or bool(index[0].inhibited_by(alert))
                cache[alert.fingerprint] = hit
            return hit

        return muted

    def _firing_alerts(self, now_ms: int) -> list[Alert]:
        latest = self._latest()
        return [a for a in latest.values() if a.at(now_ms).status == "firing"]

    def _latest(self) -> dict[str, Alert]:
        return {fp: a for g in self._groups.values() for fp, a in g.alerts.items()}

    # -- views -------------------------------------------------------------------------

    def alerts(self, now_ms: int) -> list[AlertStatus]:
        """Every alert the manager holds, with its state at ``now_ms``."""
        index = self.inhibitor.index(self._firing_alerts(now_ms))
        receivers: dict[str, set[str]] = {}
        for g in self._groups.values():
            for fp in g.alerts:
                receivers.setdefault(fp, set()).update(r for r, _ in self._receivers(g))
        out = []
        for fp, latest in self._latest().items():
            alert = latest.at(now_ms)
            ack = self._acks.get(fp)
            out.append(
                AlertStatus(
                    alert=alert,
                    silenced_by=tuple(self.silences.silenced_by(alert.labels, now_ms)),
                    inhibited_by=index.inhibited_by(alert),
                    receivers=tuple(sorted(receivers[fp])),
                    acknowledged_by=ack.by if ack else None,
                )
            )
        return sorted(out, key=lambda s: alert_order(s.alert))

    def groups(self) -> list[dict[str, Any]]:
        """The aggregation groups as ``GET /api/v2/alerts/groups`` lists them (plus keys)."""
        return [
            {
                "groupKey": g.key,
                "labels": dict(g.labels),
                "receiver": {"name": g.route.receiver},
                "alerts": [a.to_alertmanager() for a in sorted(g.alerts.values(), key=alert_order)],
                "acknowledgedBy": g.acked.by if g.acked else None,
                "escalationTier": g.escalation.tier,
            }
            for _, g in sorted(self._groups.items())
        ]

    # -- snapshot ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state as JSON bytes (deterministic: equal states, equal bytes)."""
        state = {
            **self._meta(),
            "groups": [g.to_json() for _, g in sorted(self._groups.items())],
        }
        return _dumps(state)

    @classmethod
    def from_bytes(
        cls,
        config: ManagerConfig,
        data: bytes,
        *,
        silence_retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> AlertManager:
        """A manager for ``config`` in the state ``data`` (from ``to_bytes``).

        Groups whose route no longer exists in ``config`` (same position, same matchers)
        are routed again: their alerts enter the new tree as if received when the old
        group would have flushed next, so their new receivers hear of them.
        """
        state = _loads(data)
        return cls._from_state(config, state, state["groups"], silence_retention_ms)

    def records(self) -> dict[str, bytes]:
        """The whole state as records for a compacted topic: ``meta`` and one per group."""
        out = {META_KEY: _dumps(self._meta())}
        out.update({_group_record_key(gid): _dumps(g.to_json()) for gid, g in self._groups.items()})
        return out

    def checkpoint(self) -> dict[str, bytes | None]:
        """Records changed since the last checkpoint (None: a removed group's tombstone).

        Written to a compacted topic after every change, the topic always holds what
        ``records()`` would return, at the cost of the changed groups only.
        """
        out: dict[str, bytes | None] = {}
        if self._meta_dirty:
            out[META_KEY] = _dumps(self._meta())
        for gid in sorted(self._dirty):
            group = self._groups.get(gid)
            out[_group_record_key(gid)] = _dumps(group.to_json()) if group else None
        self._dirty.clear()
        self._meta_dirty = False
        return out

    @classmethod
    def from_records(
        cls,
        config: ManagerConfig,
        records: Mapping[str, bytes | None],
        *,
        silence_retention_ms: int = DEFAULT_RETENTION_MS,
        max_silences: int = DEFAULT_MAX_SILENCES,
    ) -> AlertManager:
        """A manager restored from the latest record per key (tombstones ignored)."""
        if records.get(META_KEY) is None:
            raise SnapshotError(f"records have no {META_KEY!r} record")
        meta = _loads(records[META_KEY])  # type: ignore[arg-type]
        groups = [
            _loads_json(v)
            for k, v in sorted(records.items())
            if k.startswith(GROUP_KEY_PREFIX) and v is not None
        ]
        return cls._from_state(config, meta, groups, silence_retention_ms, max_silences)

    def _meta(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "silences": self.silences.to_json(),
            "acks": {fp: a.to_json() for fp, a in sorted(self._acks.items())},
        }

    @classmethod
    def _from_state(
        cls,
        config: ManagerConfig,
        meta: Mapping[str, Any],
        groups: list[Any],
        silence_retention_ms: int,
        max_silences: int = DEFAULT_MAX_SILENCES,
    ) -> AlertManager:
        manager = cls(config, silence_retention_ms=silence_retention_ms, max_silences=max_silences)
        try:
            manager.silences = Silences.from_json(meta["silences"], max_silences)
            manager._acks = {fp: Acknowledgement.from_json(a) for fp, a in meta["acks"].items()}
            orphans = []
            for obj in groups:
                route = manager.routes.find(tuple(obj["route_path"]))
                if route is None or route.key != obj["route_key"]:
                    orphans.append(obj)
                    continue
                group = AggregationGroup.from_json(route, obj)
                manager._groups[(route.path, group.key)] = group
            for obj in orphans:
                manager._dirty.add((tuple(obj["route_path"]), obj["key"]))  # its tombstone
                at = obj["next_flush_ms"]
                for alert in AggregationGroup.from_json(manager.routes, obj).alerts.values():
                    manager.receive(alert, at)
        except (KeyError, TypeError, ValueError) as e:
            raise SnapshotError(f"alert manager snapshot is malformed: {e!r}") from None
        manager._meta_dirty = False
        return manager


META_KEY = "meta"
GROUP_KEY_PREFIX = "group:"


def _group_record_key(gid: GroupId) -> str:
    return GROUP_KEY_PREFIX + json.dumps([list(gid[0]), gid[1]], separators=(",", ":"))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _loads_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as e:
        raise SnapshotError(f"not an alert manager snapshot: {e}") from None


def _loads(data: bytes) -> dict[str, Any]:
    state = _loads_json(data)
    if not isinstance(state, dict) or "version" not in state:
        raise SnapshotError("not an alert manager snapshot: no version")
    if state["version"] != SNAPSHOT_VERSION:
        raise SnapshotError(f"snapshot version {state['version']} is not {SNAPSHOT_VERSION}")
    return state
