"""Inhibition rules, as Alertmanager's ``inhibit_rules``.

A firing alert matching a rule's source matchers mutes every alert matching its target
matchers whose ``equal`` labels have the same values (an absent label equals an absent
one). As in Alertmanager, when an alert matches both sides of a rule, sources that also
match the target side do not count, so an alert never inhibits itself.

>>> rule = InhibitRuleConfig.model_validate({"source_matchers": ['severity="critical"'],
...     "target_matchers": ['severity="warning"'], "equal": ["cluster"]}).build()
>>> crit = Alert({"alertname": "Down", "severity": "critical", "cluster": "a"}, {}, "firing", 0)
>>> warn = Alert({"alertname": "Slow", "severity": "warning", "cluster": "a"}, {}, "firing", 0)
>>> Inhibitor([rule]).index([crit]).inhibited_by(warn) == (crit.fingerprint,)
True
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitoring.alerts.matchers import Matcher, legacy_matchers, matches_all, parse_matchers
from monitoring.alerts.model import Alert


class InhibitRuleConfig(BaseModel):
    """One ``inhibit_rules`` entry as written (``*_match``/``*_match_re`` are legacy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_matchers: tuple[str, ...] = ()
    target_matchers: tuple[str, ...] = ()
    source_match: dict[str, str] = Field(default_factory=dict)
    source_match_re: dict[str, str] = Field(default_factory=dict)
    target_match: dict[str, str] = Field(default_factory=dict)
    target_match_re: dict[str, str] = Field(default_factory=dict)
    equal: tuple[str, ...] = ()

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _parse(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for text in v:
            parse_matchers(text)
        return v

    @field_validator("source_match_re", "target_match_re")
    @classmethod
    def _compile(cls, v: dict[str, str]) -> dict[str, str]:
        legacy_matchers({}, v)
        return v

    def build(self) -> InhibitRule:
        """The rule with parsed matchers."""

        def side(strings: tuple[str, ...], eq: dict[str, str], rx: dict[str, str]) -> tuple:
            out = legacy_matchers(eq, rx)
            for text in strings:
                out.extend(parse_matchers(text))
            return tuple(out)

        return InhibitRule(
            source=side(self.source_matchers, self.source_match, self.source_match_re),
            target=side(self.target_matchers, self.target_match, self.target_match_re),
            equal=tuple(self.equal),
        )


@dataclass(frozen=True)
class InhibitRule:
    """Parsed rule: source matchers, target matchers, labels that must be equal."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


@dataclass(frozen=True)
class _Source:
    fingerprint: str
    matches_target: bool


class InhibitionIndex:
    """Firing sources of each rule, indexed by their ``equal`` label values."""

    def __init__(self, rules: Sequence[InhibitRule], firing: Iterable[Alert]) -> None:
        self._rules = rules
        self._sources: list[dict[tuple[str, ...], list[_Source]]] = [
            defaultdict(list) for _ in rules
        ]
        for alert in firing:
            if alert.status != "firing":
                continue
            for rule, index in zip(rules, self._sources, strict=True):
                if matches_all(rule.source, alert.labels):
                    key = tuple(alert.labels.get(n, "") for n in rule.equal)
                    src = _Source(alert.fingerprint, matches_all(rule.target, alert.labels))
                    index[key].append(src)

    def inhibited_by(self, alert: Alert) -> tuple[str, ...]:
        """Fingerprints of the firing alerts that inhibit ``alert`` (sorted, unique)."""
        found: set[str] = set()
        for rule, index in zip(self._rules, self._sources, strict=True):
            if not matches_all(rule.target, alert.labels):
                continue
            two_sided = matches_all(rule.source, alert.labels)
            key = tuple(alert.labels.get(n, "") for n in rule.equal)
            found.update(
                s.fingerprint
                for s in index.get(key, ())
                if not (two_sided and s.matches_target) and s.fingerprint != alert.fingerprint
            )
        return tuple(sorted(found))


class Inhibitor:
    """The configured rules; ``index(firing)`` prepares the checks for one moment."""

    def __init__(self, rules: Sequence[InhibitRule]) -> None:
        self.rules = tuple(rules)

    def index(self, firing: Iterable[Alert]) -> InhibitionIndex:
        """An index of the currently firing alerts as sources."""
        return InhibitionIndex(self.rules, firing)
