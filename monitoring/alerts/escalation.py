"""Escalation policies (our extension of Alertmanager's config).

```yaml
escalation_policies:
  - name: db-oncall
    tiers:
      - receivers: [db-primary]      # tier 0: paged with the group's first notification
        delay: 5m                    # no ack within 5m -> page tier 1
      - receivers: [db-secondary]
        delay: 10m                   # still no ack 10m later -> page tier 2
      - receivers: [eng-manager]
route:
  routes:
    - matchers: ['team="db"']
      receiver: db-slack             # notified as always (tier 0)
      escalation: db-oncall          # inherited by child routes like receiver
```

A group's escalation starts when its first firing notification goes out. When a tier's
``delay`` passes and the group is still firing, unmuted and not acknowledged, the next
tier's receivers are paged (``Notification.tier``) and from then on receive the group's
updates, repeats and resolution like the first receivers. An acknowledgement (of the
group key, or of every firing alert's fingerprint) stops the escalation of that group.

>>> policy = EscalationPolicyConfig.model_validate({"name": "p", "tiers": [
...     {"receivers": ["a"], "delay": "5m"}, {"receivers": ["b"]}]}).build()
>>> state = EscalationState()
>>> state.start(policy, now_ms=0); state.next_ms
300000
>>> state.advance(policy, now_ms=300_000, acknowledged=False), state.next_ms
(1, None)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitoring.alerts.durations import DurationMs


class TierConfig(BaseModel):
    """One tier: who is paged, and how long to wait for an ack before the next tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    receivers: tuple[str, ...] = Field(min_length=1)
    delay: DurationMs | None = Field(None, gt=0)


class EscalationPolicyConfig(BaseModel):
    """An ``escalation_policies`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    tiers: tuple[TierConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _delays_set(self) -> EscalationPolicyConfig:
        for i, tier in enumerate(self.tiers[:-1]):
            if tier.delay is None:
                raise ValueError(f"tiers.{i}.delay is required: a later tier follows it")
        return self

    def build(self) -> EscalationPolicy:
        """The policy value."""
        return EscalationPolicy(
            self.name, tuple(Tier(t.receivers, t.delay or 0) for t in self.tiers)
        )


@dataclass(frozen=True)
class Tier:
    """Receivers of one tier and the wait (ms) before the next tier."""

    receivers: tuple[str, ...]
    delay_ms: int


@dataclass(frozen=True)
class EscalationPolicy:
    """Named tiers, tier 0 first."""

    name: str
    tiers: tuple[Tier, ...]

    def receivers_through(self, tier: int) -> list[tuple[str, int]]:
        """``(receiver, tier)`` for tiers ``0..tier``, each receiver at its lowest tier."""
        seen: dict[str, int] = {}
        for i, t in enumerate(self.tiers[: tier + 1]):
            for r in t.receivers:
                seen.setdefault(r, i)
        return list(seen.items())


@dataclass
class EscalationState:
    """One group's progress: highest tier paged and when the next one is due."""

    tier: int = 0
    next_ms: int | None = None
    started: bool = False

    def start(self, policy: EscalationPolicy, now_ms: int) -> None:
        """Start the clock at the group's first firing notification (once)."""
        if self.started:
            return
        self.started = True
        self.next_ms = now_ms + policy.tiers[0].delay_ms if len(policy.tiers) > 1 else None

    def due(self, now_ms: int) -> bool:
        """Whether the next tier's deadline has come."""
        return self.next_ms is not None and self.next_ms <= now_ms

    def advance(self, policy: EscalationPolicy, now_ms: int, acknowledged: bool) -> int | None:
        """At the deadline: the newly paged tier, or None (acknowledged: escalation stops)."""
        if acknowledged or self.tier + 1 >= len(policy.tiers):  # (a shorter policy now)
            self.next_ms = None
            return None
        self.tier += 1
        has_next = self.tier + 1 < len(policy.tiers)
        self.next_ms = now_ms + policy.tiers[self.tier].delay_ms if has_next else None
        return self.tier

    def to_json(self) -> dict[str, Any]:
        """Snapshot form."""
        return {"tier": self.tier, "next_ms": self.next_ms, "started": self.started}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EscalationState:
        """Inverse of ``to_json``."""
        return cls(obj["tier"], obj["next_ms"], obj["started"])


@dataclass(frozen=True)
class Acknowledgement:
    """Who acknowledged, when, and why."""

    by: str
    at_ms: int
    comment: str = ""

    def to_json(self) -> dict[str, Any]:
        """Snapshot form."""
        return {"by": self.by, "at_ms": self.at_ms, "comment": self.comment}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Acknowledgement:
        """Inverse of ``to_json``."""
        return cls(obj["by"], obj["at_ms"], obj.get("comment", ""))
