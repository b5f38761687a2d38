"""Rules over window history: ``Evaluator`` (expressions) and ``AlertEngine`` (alerts).

The aggregation stream calls ``AlertEngine.add(aggregate)`` for every closed window
and ``AlertEngine.evaluate(at_ms)`` once every window ending at ``at_ms`` has arrived
(the agent decides when). ``evaluate`` runs every rule against the history at
``at_ms`` and returns the alerts whose state changed, and with ``resend_ms`` the
re-sends of firing alerts that are due (``state.py``); a firing alert's horizon
(``ends_at_ms``) is ``T + 4 * max(resend_ms, window_ms)``, as Prometheus uses
``4 * max(resend_delay, evaluation interval)``.

After ``evaluate``, ``alert_samples`` holds what Prometheus writes for the rules
evaluated: ``ALERTS`` and ``ALERTS_FOR_STATE`` of every pending or firing instance, and
staleness markers for the series that ended (``alert_series.py``).

An instance's labels are the expression's output labels without ``__name__``, then
the rule's (templated) labels, then ``alertname``, as in Prometheus. Templates see
``$labels`` = the output labels and ``$value`` = the output value.

Cost: expressions are compiled once; a selector reads only its metric's series
(``WindowHistory`` indexes by name) and remembers which series its matchers accept
until a series of that metric appears or goes; instant selectors shared by several
rules are evaluated once per close.

>>> from monitoring.alerts.history import WindowRow
>>> from monitoring.alerts.rules import load_rules_text
>>> rules = load_rules_text("rules: [{name: Hot, condition: temp > 30, severity: page}]").rules
>>> eng = AlertEngine(rules)
>>> eng.add(WindowRow.of("temp", {"room": "a"}, 10_000, [35.0]))
True
>>> [(a.status, dict(a.labels)) for a in eng.evaluate(10_000)]
[('firing', {'alertname': 'Hot', 'room': 'a', 'severity': 'page'})]

Recording rules run at the same ends: ``record(at_ms)`` gives their output samples,
labelled as Prometheus labels them (the output's labels, ``__name__`` set to the
record name, then the rule's labels, an empty one removing the label; a scalar result
is one sample without labels). A rule whose output has two samples with one label set
fails that evaluation, as in Prometheus. Values that are not finite are not recorded
(the samples contract refuses them); they are counted in ``dropped``.

A rule group's ``limit`` (``Rule.limit``, ``RecordingRule.limit``; 0: none) works as
in Prometheus (``rules/alerting.go``, ``rules/recording.go``): an alerting rule whose
evaluation leaves more pending and firing instances than the limit fails ("exceeded
limit of N with M alerts", in ``errors``), forgets every instance and sends nothing:
the firing ones resolve at their horizon downstream, and if the result falls under the
limit later the instances start again as pending. Its ``ALERTS`` series get no samples
and no markers while it fails, and their staleness markers at its next successful
evaluation, as Prometheus keeps a failed rule's series of its last good evaluation. A
recording rule with more output series than the limit records nothing at that end
("exceeded limit of N with M series", in ``recording_errors``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from monitoring.alerts import alert_series
from monitoring.alerts.history import DEFAULT_LOOKBACK_MS, NAME, Labels, Series, WindowHistory
from monitoring.alerts.model import Alert, Recorded
from monitoring.alerts.promql import CompiledExpr, Context, EvalError
from monitoring.alerts.rules import RecordingRule, Rule
from monitoring.alerts.state import AlertStateMachine, Key, Observation

FORMAT_VERSION = 1
EXPIRE_EVERY_MS = 60_000


@dataclass(frozen=True)
class RuleResult:
    """One rule's expressions at one time: output labels (no ``__name__``) to values."""

    rule: Rule
    active: dict[Labels, float]
    hold: frozenset[Labels] = frozenset()
    error: str | None = None


def _as_map(value: Any, what: str) -> dict[Labels, float]:
    if isinstance(value, float):
        return {(): value}
    out: dict[Labels, float] = {}
    for labels, v in value:
        key = tuple(p for p in labels if p[0] != NAME)
        if key in out:
            raise EvalError(
                f"{what}: two series with the labels {dict(key)} after dropping the name"
            )
        out[key] = v
    return out


def recorded_samples(rule: RecordingRule, value: Any) -> list[Recorded]:
    """``expr``'s output as the rule records it; EvalError on a duplicate label set."""
    pairs: list[tuple[Labels, float]] = [((), value)] if isinstance(value, float) else value
    out: list[Recorded] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for labels, v in pairs:
        final = {k: lv for k, lv in labels if k != NAME}
        for k, lv in rule.labels.items():
            if lv:
                final[k] = lv
            else:
                final.pop(k, None)
        key = tuple(sorted(final.items()))
        if key in seen:
            raise EvalError(
                "vector contains metrics with the same labelset after applying rule labels"
            )
        seen.add(key)
        out.append(Recorded(rule.record, dict(key), v))
    return out


class Evaluator:
    """Evaluates every rule's expressions against one ``WindowHistory``."""

    def __init__(self, rules: Sequence[Rule], history: WindowHistory) -> None:
        self.rules = list(rules)
        self.history = history
        self.matches: dict[str, tuple[int, list[Series]]] = {}
        self.last: Context | None = None  # the last evaluation's, reused by the recordings

    def evaluate(self, at_ms: int) -> list[RuleResult]:
        """Every rule at ``at_ms``.

        An error in one rule (``EvalError`` such as duplicate matches, or any other
        exception) is reported in its result only; the other rules still run.
        """
        ctx = self.last = Context(self.history, at_ms, self.matches)
        out = []
        for rule in self.rules:
            try:
                active = _as_map(rule.compiled.evaluate(self.history, at_ms, ctx), "expr")
                hold: frozenset[Labels] = frozenset()
                if rule.recovery_compiled is not None:
                    rec = _as_map(_eval(rule.recovery_compiled, ctx), "recovery")
                    hold = frozenset(k for k, v in rec.items() if v == 0.0)
                out.append(RuleResult(rule, active, hold))
            except Exception as e:  # one rule never stops the others
                out.append(RuleResult(rule, {}, frozenset(), f"{type(e).__name__}: {e}"))
        return out


def _eval(expr: CompiledExpr, ctx: Context) -> Any:
    return expr.evaluate(ctx.history, ctx.t_ms, ctx)


def instance_labels(rule: Rule, labels: Labels, value: float) -> dict[str, str]:
    """An alert instance's labels: output labels, rule labels (templated), alertname."""
    out = dict(labels)
    if rule.label_templates:
        for k, t in rule.label_templates.items():
            out[k] = t.render(dict(labels), value)
    out["alertname"] = rule.name
    return dict(sorted(out.items()))


class AlertEngine:
    """History, evaluator and one state machine per rule: windows in, alert changes out."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        recordings: Sequence[RecordingRule] = (),
        window_ms: int = 10_000,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
        generator_url: str = "",
        resend_ms: int | None = None,
    ) -> None:
        self.history = WindowHistory(window_ms, 0, lookback_ms)
        self.generator_url = generator_url
        self.resend_ms = resend_ms
        self.valid_for_ms = 4 * max(resend_ms, window_ms) if resend_ms is not None else None
        self.machines: dict[str, AlertStateMachine] = {}
        self.errors: list[tuple[Rule, str]] = []
        """Rules whose last evaluation failed, with the reason."""
        self.recording_errors: list[tuple[RecordingRule, str]] = []
        """Recording rules whose last evaluation failed, with the reason."""
        self.dropped = 0
        """Recorded values not written because they were not finite (NaN, ±Inf)."""
        self._last_expire: int | None = None
        self.alert_samples: list[Recorded] = []
        """The last evaluation's ``ALERTS`` and ``ALERTS_FOR_STATE`` samples and markers."""
        self._retired: list[Recorded] = []  # markers of rules a reload removed
        # per rule failing its limit: the series of its last good evaluation, unmarked
        self._unmarked: dict[str, alert_series.Seen] = {}
        self.set_rules(rules, recordings)

    def set_rules(self, rules: Sequence[Rule], recordings: Sequence[RecordingRule] = ()) -> None:
        """(Re)load rules; state is kept for rules whose key stays."""
        self.rules = list(rules)
        self.recordings = list(recordings)
        self.evaluator = Evaluator(self.rules, self.history)
        ranges = [r.max_range_ms for r in self.rules]
        ranges += [r.max_range_ms for r in self.recordings]
        self.history.retention_ms = max(ranges, default=0)
        old = self.machines
        self.machines = {}
        for r in self.rules:
            sm = AlertStateMachine(
                r.for_ms,
                r.keep_firing_for_ms,
                self._url(r),
                resend_ms=self.resend_ms,
                valid_for_ms=self.valid_for_ms,
            )
            if r.key in old:
                sm.restore_json(old[r.key].to_json())
            self.machines[r.key] = sm
        for key, gone in old.items():
            if key not in self.machines:
                was = alert_series.seen(gone.instances)
                self._retired.extend(alert_series.stale(was, {}))
        for key in [k for k in self._unmarked if k not in self.machines]:
            self._retired.extend(alert_series.stale(self._unmarked.pop(key), {}))

    def _url(self, rule: Rule) -> str:
        if not self.generator_url:
            return ""
        from urllib.parse import quote

        return f"{self.generator_url.rstrip('/')}/graph?g0.expr={quote(rule.expr)}"

    def add(self, aggregate: Any) -> bool:
        """Store one closed window (False if it is not of the evaluation size)."""
        return self.history.add(aggregate)

    def evaluate(self, at_ms: int) -> list[Alert]:
        """Evaluate every rule at ``at_ms``; the alerts that started firing or resolved,
        and the re-sends due."""
        if self._last_expire is None or at_ms - self._last_expire >= EXPIRE_EVERY_MS:
            self.history.expire(at_ms)
            self._last_expire = at_ms
        out: list[Alert] = []
        self.errors = []
        series = list(self._retired)  # kept until an evaluation completes
        for res in self.evaluator.evaluate(at_ms):
            rule = res.rule
            if res.error is not None:
                self.errors.append((rule, res.error))
                continue  # as Prometheus: a failed evaluation changes no state
            active: dict[Key, Observation] = {}
            for labels, value in res.active.items():
                final = instance_labels(rule, labels, value)
                ann = {
                    k: t.render(dict(labels), value) for k, t in rule.annotation_templates.items()
                }
                active[tuple(sorted(final.items()))] = Observation(final, ann, value)
            hold = {
                tuple(sorted(instance_labels(rule, labels, 0.0).items())) for labels in res.hold
            }
            sm = self.machines[rule.key]
            fresh = sm.last_step_ms is None or at_ms > sm.last_step_ms  # else step is a no-op
            before = alert_series.seen(sm.instances) if fresh else {}
            changed = sm.step(at_ms, active, hold)
            if fresh and 0 < rule.limit < len(sm.instances):
                n = len(sm.instances)
                sm.instances.clear()
                self.errors.append((rule, f"exceeded limit of {rule.limit} with {n} alerts"))
                self._unmarked[rule.key] = {**before, **self._unmarked.get(rule.key, {})}
                continue
            out.extend(changed)
            if fresh:
                before = {**self._unmarked.pop(rule.key, {}), **before}
                series.extend(alert_series.samples(sm.instances.values()))
                series.extend(alert_series.stale(before, sm.instances))
        self._retired = []
        self.alert_samples = series
        return out

    def record(self, at_ms: int) -> list[Recorded]:
        """Every recording rule at ``at_ms`` (after ``evaluate`` of the same end)."""
        ctx = self.evaluator.last  # its results at at_ms hold for the recordings too
        if ctx is None or ctx.t_ms != at_ms:
            ctx = Context(self.history, at_ms, self.evaluator.matches)
        out: list[Recorded] = []
        self.recording_errors = []
        for rule in self.recordings:
            try:
                samples = recorded_samples(rule, _eval(rule.compiled, ctx))
                if 0 < rule.limit < len(samples):
                    raise EvalError(f"exceeded limit of {rule.limit} with {len(samples)} series")
            except Exception as e:  # one rule never stops the others
                self.recording_errors.append((rule, f"{type(e).__name__}: {e}"))
                continue
            for r in samples:
                if math.isfinite(r.value):
                    out.append(r)
                else:
                    self.dropped += 1
        return out

    def firing(self) -> list[Alert]:
        """Every firing instance of every rule."""
        return [a for sm in self.machines.values() for a in sm.firing()]

    def to_bytes(self) -> bytes:
        """Every rule's state (JSON), keyed by rule key."""
        d = {"v": FORMAT_VERSION, "rules": {k: sm.to_json() for k, sm in self.machines.items()}}
        return json.dumps(d, separators=(",", ":"), sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        """Restore ``to_bytes`` output; states of rules no longer loaded are dropped."""
        d = json.loads(data)
        if d.get("v") != FORMAT_VERSION:
            raise ValueError(f"unknown alert engine state version {d.get('v')!r}")
        for key, state in d["rules"].items():
            sm = self.machines.get(key)
            if sm is not None:
                sm.restore_json(state)
