"""Alerting rules: the ``Rule`` value and loading rule files of two shapes.

Prometheus' format (``promtool check rules`` accepts the same files)::

    groups:
      - name: node
        interval: 30s            # validated, ignored: rules run as windows close
        limit: 100               # optional: alerts per alerting rule, series per recording rule
        labels: {team: infra}    # optional, added to every rule of the group
        rules:
          - alert: HighCPU
            expr: avg_over_time(cpu_usage[1m]) > 80
            for: 5m
            keep_firing_for: 2m
            recovery: avg_over_time(cpu_usage[1m]) < 70
            labels: {severity: critical}
            annotations:
              summary: "CPU {{ $value | humanize }}% on {{ $labels.host }}"

The seed's shorthand (a top-level ``rules`` list, or inside a group)::

    rules:
      - name: HighCPU
        condition: cpu_usage > 80%
        duration: 5m             # = for
        severity: critical       # = labels.severity
        recovery: cpu_usage < 70%
        summary: ...             # and description: both become annotations

``80%`` in a shorthand expression is the number 80: the percent sign says the metric
is in percent (0-100, as ``cpu_usage``); it does not divide by 100 (write ``0.8`` for
a ratio). A ``%`` directly after a number is that sign; write modulo with spaces.

Recording rules (Prometheus' shape, in any group)::

    groups:
      - name: jobs
        rules:
          - record: job:cpu_usage:avg1m
            expr: avg by (job) (avg_over_time(cpu_usage[1m]))
            labels: {team: infra}

evaluate like alert rules, as windows close, and their output is written back to the
samples topic as ordinary series named ``record`` (see ``monitoring.agents.alerting``):
aggregated, stored and alertable like any other.

``recovery`` (hysteresis, both shapes) is a comparison such as ``cpu_usage < 70``.
While an instance fires and ``expr`` no longer returns it, it keeps firing as long as
the recovery comparison sees its series without holding (evaluated with ``bool``:
value 0); it resolves once the comparison holds, or when the series is gone. So a
value hovering around 80 does not flap; it must fall below 70. The recovery
expression must return the same labels as ``expr`` (same selectors and grouping).

Expressions compile with the window subset (``alerts/promql.py``, exact over window
statistics) when it supports them, else as a whole on ``monitoring.promql`` over the
windows seen as samples (``alerts/sample_rules.py``): ``histogram_quantile``, ``topk``,
``offset``, ``group_left``, subqueries... A ``recovery`` outside the subset is its
comparison with ``bool`` inserted.

A group's ``limit`` (as Prometheus has it; 0 or absent: none) fails an evaluation of
one of its rules whose result exceeds it: an alerting rule with more pending and firing
instances than ``limit`` forgets them all and sends nothing, a recording rule with
more output series records nothing (``AlertEngine``).

Each problem is a ``RuleError`` naming the file, group, rule and problem. Loading
returns the good rules and the errors: one bad rule never hides the others.

>>> rs = load_rules_text("rules: [{name: HighCPU, condition: cpu_usage > 80%, duration: 5m}]")
>>> rs.errors, [(r.name, r.expr, r.for_ms) for r in rs.rules]
([], [('HighCPU', 'cpu_usage > 80', 300000)])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monitoring.alerts.promql import (
    Binary,
    CompiledExpr,
    UnsupportedExpression,
    compile_expr,
)
from monitoring.alerts.sample_rules import bool_comparison, compile_rule_expr, compile_samples
from monitoring.alerts.templating import Template, TemplateError
from monitoring.metrics.prom_syntax import LABEL_NAME, METRIC_NAME, prom_duration_ms
from monitoring.metrics.samples import InvalidSample, Limits, check_series

_PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)%")

PROM_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations", "recovery"}
RECORD_KEYS = {"record", "expr", "labels"}
SHORT_KEYS = {
    "name",
    "condition",
    "duration",
    "severity",
    "labels",
    "annotations",
    "summary",
    "description",
    "keep_firing_for",
    "recovery",
}
GROUP_KEYS = {"name", "interval", "rules", "labels", "limit"}


def parse_duration_ms(value: Any) -> int:
    """A Prometheus duration (``90s``, ``1h30m``, ``0``) in milliseconds.

    >>> parse_duration_ms("1h30m"), parse_duration_ms("0")
    (5400000, 0)
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 5m, got {value!r}")
    ms = prom_duration_ms(value)
    if ms is None:
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h30m")
    return ms


class RuleError(ValueError):
    """A problem in a rule file, naming where it is."""

    def __init__(self, file: str, problem: str, group: str | None = None, rule: str | None = None):
        self.file, self.group, self.rule, self.problem = file, group, rule, problem
        where = [file or "<rules>"]
        if group is not None:
            where.append(f"group {group!r}")
        if rule is not None:
            where.append(f"rule {rule!r}")
        super().__init__(f"{': '.join(where)}: {problem}")


@dataclass(frozen=True)
class Rule:
    """One alerting rule, compiled (expressions and templates checked at load)."""

    name: str
    expr: str
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    recovery: str | None = None
    group: str = ""
    file: str = ""
    key: str = ""
    compiled: CompiledExpr = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    recovery_compiled: CompiledExpr | None = field(default=None, compare=False, repr=False)
    label_templates: Mapping[str, Template] = field(default_factory=dict, compare=False, repr=False)
    annotation_templates: Mapping[str, Template] = field(
        default_factory=dict, compare=False, repr=False
    )
    limit: int = 0  # the group's: more pending and firing instances fail the evaluation

    @classmethod
    def build(
        cls,
        name: str,
        expr: str,
        *,
        for_ms: int = 0,
        keep_firing_for_ms: int = 0,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        recovery: str | None = None,
        group: str = "",
        file: str = "",
        key: str = "",
        limit: int = 0,
    ) -> Rule:
        """Check and compile a rule; ``UnsupportedExpression``/``TemplateError``/``ValueError``."""
        if not name:
            raise ValueError("the alert name is empty")
        labels = dict(labels or {})
        annotations = dict(annotations or {})
        for k in [*labels, *annotations]:
            if not LABEL_NAME.match(k):
                raise ValueError(f"invalid label/annotation name {k!r}")
        compiled = compile_rule_expr(expr)
        rec = _recovery(recovery) if recovery is not None else None
        lt = {k: _template(v, f"label {k}") for k, v in labels.items()}
        at = {k: _template(v, f"annotation {k}") for k, v in annotations.items()}
        return cls(
            name,
            expr,
            for_ms,
            keep_firing_for_ms,
            labels,
            annotations,
            recovery,
            group,
            file,
            key or f"{group}/{name}",
            compiled,
            rec,
            lt,
            at,
            _limit(limit),
        )

    @property
    def max_range_ms(self) -> int:
        """The longest range any expression of the rule reads."""
        rec = self.recovery_compiled.max_range_ms if self.recovery_compiled else 0
        return max(self.compiled.max_range_ms, rec)

    @property
    def severity(self) -> str:
        """The ``severity`` label ('' when unset)."""
        return self.labels.get("severity", "")


@dataclass(frozen=True)
class RecordingRule:
    """One recording rule: ``expr``'s output, renamed ``record``, with ``labels`` set."""

    record: str
    expr: str
    labels: Mapping[str, str] = field(default_factory=dict)
    group: str = ""
    file: str = ""
    compiled: CompiledExpr = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    limit: int = 0  # the group's: more output series fail the evaluation

    @classmethod
    def build(
        cls,
        record: str,
        expr: str,
        *,
        labels: Mapping[str, str] | None = None,
        group: str = "",
        file: str = "",
        limit: int = 0,
    ) -> RecordingRule:
        """Check and compile; ``UnsupportedExpression``/``ValueError`` when invalid.

        >>> RecordingRule.build("job:up:sum", "sum by (job) (up)").record
        'job:up:sum'
        """
        if not METRIC_NAME.match(record):
            raise ValueError(f"invalid metric name {record!r}: use [a-zA-Z_:][a-zA-Z0-9_:]*")
        labels = dict(labels or {})
        for k in labels:
            if not LABEL_NAME.match(k) or k.startswith("__"):
                raise ValueError(f"invalid label name {k!r}")
        try:  # what the samples contract refuses would drop every output at run time
            check_series(record, {k: v for k, v in labels.items() if v}, Limits())
        except InvalidSample as e:
            raise ValueError(str(e)) from None
        return cls(record, expr, labels, group, file, compile_rule_expr(expr), _limit(limit))

    @property
    def max_range_ms(self) -> int:
        """The longest range the expression reads."""
        return self.compiled.max_range_ms


def _limit(value: Any) -> int:
    """A group's ``limit``: a whole number, 0 (no limit) or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"limit must be a whole number, 0 (no limit) or more, got {value!r}")
    return value


def _recovery(text: str) -> CompiledExpr:
    """``recovery`` compiled as its comparison with ``bool`` (0: not recovered yet):
    the window subset when it supports it, else the sample engine."""
    try:
        rec = compile_expr(text)
    except UnsupportedExpression:
        try:
            return compile_samples(bool_comparison(text))
        except UnsupportedExpression as e:
            raise UnsupportedExpression(f"recovery: {e}") from None
    root = rec.root
    if not isinstance(root, Binary) or root.cmp is None or root.bool or root.is_scalar:
        raise UnsupportedExpression(
            f"recovery must be a comparison on series without bool, like "
            f"'cpu_usage < 70', got {text!r}"
        )
    bool_root = Binary(root.op, root.lhs, root.rhs, True, root.matching)
    return CompiledExpr(rec.text, bool_root, rec.max_range_ms, rec.metric_names)


def _template(text: str, what: str) -> Template:
    try:
        return Template.compile(text)
    except TemplateError as e:
        raise TemplateError(f"{what}: {e}") from None


@dataclass
class RuleSet:
    """Rules that loaded, and the errors of those that did not."""

    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    recordings: list[RecordingRule] = field(default_factory=list)

    def extend(self, other: RuleSet) -> None:
        self.rules.extend(other.rules)
        self.errors.extend(other.errors)
        self.recordings.extend(other.recordings)


def load_rule_files(paths: Iterable[str | Path]) -> RuleSet:
    """Load every file; rule keys are made unique across files."""
    out = RuleSet()
    for p in paths:
        out.extend(load_rule_file(p))
    seen: dict[str, int] = {}
    for i, r in enumerate(out.rules):
        n = seen.get(r.key, 0)
        seen[r.key] = n + 1
        if n:
            out.rules[i] = _rekey(r, f"{r.key}#{n + 1}")
    return out


def _rekey(r: Rule, key: str) -> Rule:
    from dataclasses import replace

    return replace(r, key=key)


def load_rule_file(path: str | Path) -> RuleSet:
    """Load one file; a missing or unreadable file is one error."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        return RuleSet(errors=[RuleError(str(path), f"cannot read: {e.strerror or e}")])
    return load_rules_text(text, str(path))


def load_rule_objects(rules: list[Any], file: str = "configuration") -> RuleSet:
    """Load a list of rule objects (either shape's rule entries, as parsed YAML), as the
    group ``config``: the ``alerting.definitions`` of the settings.

    >>> rs = load_rule_objects([{"name": "high_cpu", "condition": "cpu_usage > 80%",
    ...                          "duration": "5m"}])
    >>> [(r.key, r.expr, r.for_ms) for r in rs.rules]
    [('config/high_cpu', 'cpu_usage > 80', 300000)]
    """
    return _load_group({"name": "config", "rules": list(rules)}, file, set())


def load_rules_text(text: str, file: str = "") -> RuleSet:
    """Load rules from YAML text (either shape)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return RuleSet(errors=[RuleError(file, f"invalid YAML: {e}")])
    except RecursionError:  # PyYAML composes recursively
        return RuleSet(errors=[RuleError(file, "invalid YAML: nested too deep")])
    if doc is None:
        return RuleSet()
    if not isinstance(doc, dict):
        return RuleSet(errors=[RuleError(file, "expected a mapping with 'groups' or 'rules'")])
    unknown = set(doc) - {"groups", "rules"}
    if unknown:
        return RuleSet(
            errors=[
                RuleError(file, f"unknown top-level key(s) {sorted(unknown)}: use groups or rules")
            ]
        )
    out = RuleSet()
    if "rules" in doc:
        gname = Path(file).stem if file else "default"
        out.extend(_load_group({"name": gname, "rules": doc["rules"]}, file, set()))
    groups = doc.get("groups", [])
    if not isinstance(groups, list):
        out.errors.append(RuleError(file, "'groups' must be a list"))
        return out
    names: set[str] = set()
    for g in groups:
        out.extend(_load_group(g, file, names))
    return out


def _load_group(g: Any, file: str, names: set[str]) -> RuleSet:
    out = RuleSet()
    if not isinstance(g, dict):
        out.errors.append(RuleError(file, f"a group must be a mapping, got {g!r}"))
        return out
    gname = g.get("name")
    if not isinstance(gname, str) or not gname:
        out.errors.append(RuleError(file, "a group needs a non-empty 'name'"))
        return out
    if gname in names:
        out.errors.append(RuleError(file, "duplicate group name", gname))
        return out
    names.add(gname)
    unknown = set(g) - GROUP_KEYS
    if unknown:
        out.errors.append(RuleError(file, f"unknown key(s) {sorted(unknown)}", gname))
        return out
    if "interval" in g:
        try:
            parse_duration_ms(g["interval"])
        except ValueError as e:
            out.errors.append(RuleError(file, f"interval: {e}", gname))
            return out
    try:
        limit = _limit(g.get("limit", 0))
    except ValueError as e:
        out.errors.append(RuleError(file, str(e), gname))
        return out
    glabels = g.get("labels") or {}
    if not isinstance(glabels, dict):
        out.errors.append(RuleError(file, "'labels' must be a mapping", gname))
        return out
    rules = g.get("rules") or []
    if not isinstance(rules, list):
        out.errors.append(RuleError(file, "'rules' must be a list", gname))
        return out
    for i, r in enumerate(rules):
        try:
            if isinstance(r, dict) and "record" in r:
                out.recordings.append(_load_recording(r, gname, file, glabels, limit))
            else:
                out.rules.append(_load_rule(r, i, gname, file, glabels, limit))
        except RuleError as e:
            out.errors.append(e)
    return out


def _load_recording(
    r: dict[str, Any], group: str, file: str, glabels: dict[str, Any], limit: int
) -> RecordingRule:
    name = str(r["record"])
    try:
        unknown = set(r) - RECORD_KEYS
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} (allowed: {sorted(RECORD_KEYS)})")
        if "expr" not in r:
            raise ValueError("missing 'expr'")
        labels = {**_str_map(glabels, "group labels"), **_str_map(r.get("labels"), "labels")}
        return RecordingRule.build(
            name, _text(r["expr"], "expr"), labels=labels, group=group, file=file, limit=limit
        )
    except ValueError as e:
        raise RuleError(file, str(e), group, name) from None


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"'{what}' must be a mapping of names to strings, got {value!r}")
    out = {}
    for k, v in value.items():
        if isinstance(v, (dict, list)) or v is None:
            raise ValueError(f"{what}.{k} must be a string, got {v!r}")
        out[str(k)] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"'{what}' must be a string, got {value!r}")
    return str(value)


def percent_to_number(expr: str) -> str:
    """The shorthand's ``80%`` -> ``80``.

    >>> percent_to_number("cpu_usage > 80% and mem % 2 > 0.5%")
    'cpu_usage > 80 and mem % 2 > 0.5'
    """
    return _PERCENT.sub(r"\1", expr)


def _duration(r: dict[str, Any], key: str) -> int:
    if r.get(key) is None:
        return 0
    try:
        return parse_duration_ms(r[key])
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None


def _load_rule(
    r: Any, index: int, group: str, file: str, glabels: dict[str, Any], limit: int
) -> Rule:
    if not isinstance(r, dict):
        raise RuleError(file, f"rule #{index + 1} must be a mapping, got {r!r}", group)
    short = "alert" not in r
    name = r.get("name") if short else r.get("alert")
    if not isinstance(name, str) or not name:
        raise RuleError(
            file,
            f"rule #{index + 1} needs {'name' if short else 'alert'} (a non-empty string)",
            group,
        )
    try:
        allowed = SHORT_KEYS if short else PROM_KEYS
        unknown = set(r) - allowed
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} (allowed: {sorted(allowed)})")
        expr_key = "condition" if short else "expr"
        if expr_key not in r:
            raise ValueError(f"missing '{expr_key}'")
        expr = _text(r[expr_key], expr_key)
        recovery = _text(r["recovery"], "recovery") if r.get("recovery") is not None else None
        if short:
            expr = percent_to_number(expr)
            recovery = percent_to_number(recovery) if recovery is not None else None
        labels = {**_str_map(glabels, "group labels"), **_str_map(r.get("labels"), "labels")}
        annotations = _str_map(r.get("annotations"), "annotations")
        if short:
            if r.get("severity") is not None:
                labels["severity"] = _text(r["severity"], "severity")
            for k in ("summary", "description"):
                if r.get(k) is not None:
                    annotations[k] = _text(r[k], k)
        for_key = "duration" if short else "for"
        return Rule.build(
            name,
            expr,
            for_ms=_duration(r, for_key),
            keep_firing_for_ms=_duration(r, "keep_firing_for"),
            labels=labels,
            annotations=annotations,
            recovery=recovery,
            group=group,
            file=file,
            limit=limit,
        )
    except (ValueError, TemplateError) as e:
        raise RuleError(file, str(e), group, name) from None
