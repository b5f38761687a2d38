"""The alert state machine of one rule: inactive -> pending -> firing -> resolved.

Pure: every step takes the evaluation time and what the rule's expressions returned.
Per instance (identified by its final label set):

* inactive + active: pending since ``T`` (``active_at``); in the same step, if
  ``T - active_at >= for``, firing (``fired_at = T``; a ``firing`` ``Alert`` is emitted
  with ``starts_at = fired_at``, as Prometheus sends ``StartsAt: FiredAt``).
* pending + not active: back to inactive, silently (pending alerts are not sent).
* firing + active, or firing + held by the recovery expression (hysteresis): stays
  firing; value and annotations follow the latest active evaluation.
* firing + neither: ``keep_firing_for`` starts (``keep_since = T``); it resolves at the
  first step with ``T - keep_since >= keep_firing_for`` (at once when 0); an active or
  held step in between clears ``keep_since``. Resolving emits one ``resolved`` alert
  (``ends_at = T``, last value and annotations) and forgets the instance.

Re-sends (``resend_ms``, as Prometheus' ``resend_delay``): a firing instance is sent
again at the first step with ``T - sent_at >= resend_ms`` (``sent_at``: the step of its
last send), so while steps come it is sent at least every ``resend_ms`` of evaluation
time and never twice within it. Every firing alert sent then carries
``ends_at = T + valid_for_ms`` (by default ``4 * resend_ms``), a validity horizon: the
alert manager resolves a firing alert whose horizon passed without a refresh. Both
depend on ``T`` only, never on the wall clock. Without ``resend_ms`` only state
changes are sent, with no horizon.

Steps at or before the last step's time are ignored (a replay after a restart
re-evaluates old window closes), so restoring a checkpoint and replaying neither
re-fires, re-sends early nor forgets anything (``sent_at`` is part of the state).

State is serialised as JSON (``to_bytes`` / ``from_bytes``), not pickle; values are
kept as ``repr`` strings so NaN and infinities round-trip exactly.

>>> sm = AlertStateMachine(for_ms=20_000)
>>> cpu = {"alertname": "HighCPU", "host": "a"}
>>> obs = {labels_key(cpu): Observation(cpu, {}, 91.0)}
>>> [sm.step(t, obs) for t in (0, 10_000)]
[[], []]
>>> [(a.status, a.starts_at_ms) for a in sm.step(20_000, obs)]
[('firing', 20000)]
>>> [(a.status, a.ends_at_ms) for a in sm.step(30_000, {})]
[('resolved', 30000)]
>>> rs = AlertStateMachine(resend_ms=60_000)
>>> [[(a.status, a.ends_at_ms) for a in rs.step(t, obs)] for t in (0, 50_000, 60_000)]
[[('firing', 240000)], [], [('firing', 300000)]]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from monitoring.alerts.model import Alert

FORMAT_VERSION = 1
Key = tuple[tuple[str, str], ...]


def labels_key(labels: Mapping[str, str]) -> Key:
    """The hashable identity of an instance: its sorted label pairs."""
    return tuple(sorted(labels.items()))


class Observation(NamedTuple):
    """What one evaluation says about one active instance."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: float


@dataclass
class Instance:
    """The state of one pending or firing instance."""

    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    state: Literal["pending", "firing"]
    active_at_ms: int
    fired_at_ms: int | None = None
    keep_since_ms: int | None = None
    sent_at_ms: int | None = None  # the step of the last firing send

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "annotations": self.annotations,
            "value": repr(self.value),
            "state": self.state,
            "active_at_ms": self.active_at_ms,
            "fired_at_ms": self.fired_at_ms,
            "keep_since_ms": self.keep_since_ms,
            "sent_at_ms": self.sent_at_ms,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Instance:
        if d["state"] not in ("pending", "firing"):
            raise ValueError(f"bad instance state {d['state']!r}")
        return cls(
            dict(d["labels"]),
            dict(d["annotations"]),
            float(d["value"]),
            d["state"],
            int(d["active_at_ms"]),
            d["fired_at_ms"],
            d["keep_since_ms"],
            d.get("sent_at_ms", d["fired_at_ms"]),  # states written before re-sends
        )


class AlertStateMachine:
    """Pending/firing instances of one rule, advanced by ``step``."""

    def __init__(
        self,
        for_ms: int = 0,
        keep_firing_for_ms: int = 0,
        generator_url: str = "",
        *,
        resend_ms: int | None = None,
        valid_for_ms: int | None = None,
    ):
        if for_ms < 0 or keep_firing_for_ms < 0:
            raise ValueError("for and keep_firing_for must not be negative")
        if resend_ms is not None and resend_ms <= 0:
            raise ValueError("resend_ms must be positive")
        self.for_ms = for_ms
        self.keep_firing_for_ms = keep_firing_for_ms
        self.generator_url = generator_url
        self.resend_ms = resend_ms
        self.valid_for_ms = valid_for_ms
        if resend_ms is not None and valid_for_ms is None:
            self.valid_for_ms = 4 * resend_ms
        self.instances: dict[Key, Instance] = {}
        self.last_step_ms: int | None = None

    def _alert(self, inst: Instance, resolved_at: int | None) -> Alert:
        assert inst.fired_at_ms is not None
        ends = resolved_at
        if resolved_at is None and self.valid_for_ms is not None:
            sent = inst.sent_at_ms if inst.sent_at_ms is not None else inst.fired_at_ms
            ends = sent + self.valid_for_ms
        return Alert(
            labels=dict(inst.labels),
            annotations=dict(inst.annotations),
            status="resolved" if resolved_at is not None else "firing",
            starts_at_ms=inst.fired_at_ms,
            ends_at_ms=ends,
            generator_url=self.generator_url,
            value=inst.value,
            severity=inst.labels.get("severity", ""),
        )

    def step(
        self,
        at_ms: int,
        active: Mapping[Key, Observation],
        hold: Set[Key] = frozenset(),
    ) -> list[Alert]:
        """Advance to ``at_ms``; the alerts whose state changed (firing/resolved), then
        the re-sends of those still firing that are due."""
        if self.last_step_ms is not None and at_ms <= self.last_step_ms:
            return []
        self.last_step_ms = at_ms
        out: list[Alert] = []
        for key, obs in active.items():
            inst = self.instances.get(key)
            if inst is None:
                inst = Instance(
                    dict(obs.labels), dict(obs.annotations), obs.value, "pending", at_ms
                )
                self.instances[key] = inst
            else:
                inst.annotations = dict(obs.annotations)
                inst.value = obs.value
                inst.keep_since_ms = None
            if inst.state == "pending" and at_ms - inst.active_at_ms >= self.for_ms:
                inst.state = "firing"
                inst.fired_at_ms = inst.sent_at_ms = at_ms
                out.append(self._alert(inst, None))
        for key in [k for k in self.instances if k not in active]:
            inst = self.instances[key]
            if inst.state == "pending":
                del self.instances[key]
                continue
            if key in hold:
                inst.keep_since_ms = None
                continue
            if inst.keep_since_ms is None:
                inst.keep_since_ms = at_ms
            if at_ms - inst.keep_since_ms >= self.keep_firing_for_ms:
                del self.instances[key]
                out.append(self._alert(inst, at_ms))
        if self.resend_ms is not None:
            for inst in self.instances.values():
                sent = inst.sent_at_ms
                if inst.state == "firing" and sent is not None and at_ms - sent >= self.resend_ms:
                    inst.sent_at_ms = at_ms
                    out.append(self._alert(inst, None))
        return out

    def firing(self) -> list[Alert]:
        """The currently firing instances as ``firing`` alerts (as last sent)."""
        return [self._alert(i, None) for i in self.instances.values() if i.state == "firing"]

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON-able dict."""
        return {
            "v": FORMAT_VERSION,
            "last_step_ms": self.last_step_ms,
            "instances": [i.to_json() for i in self.instances.values()],
        }

    def to_bytes(self) -> bytes:
        """The state as compact JSON bytes."""
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()

    def restore_json(self, d: Mapping[str, Any]) -> None:
        """Replace the state with a ``to_json`` dict (config stays this object's)."""
        if d.get("v") != FORMAT_VERSION:
            raise ValueError(f"unknown alert state version {d.get('v')!r}")
        self.last_step_ms = d["last_step_ms"]
        self.instances = {}
        for item in d["instances"]:
            inst = Instance.from_json(item)
            self.instances[labels_key(inst.labels)] = inst

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        for_ms: int = 0,
        keep_firing_for_ms: int = 0,
        generator_url: str = "",
        *,
        resend_ms: int | None = None,
        valid_for_ms: int | None = None,
    ) -> AlertStateMachine:
        """Restore ``to_bytes`` output under the (possibly reloaded) rule's settings."""
        sm = cls(
            for_ms,
            keep_firing_for_ms,
            generator_url,
            resend_ms=resend_ms,
            valid_for_ms=valid_for_ms,
        )
        sm.restore_json(json.loads(data))
        return sm
