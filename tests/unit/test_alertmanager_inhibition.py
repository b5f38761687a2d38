"""Inhibition: a firing source mutes matching targets with equal label values."""

from __future__ import annotations

import pytest

from monitoring.alerts.alert_manager import AlertManager
from monitoring.alerts.inhibition import Inhibitor, InhibitRuleConfig
from monitoring.alerts.model import Alert

S = 1000

# The example of Alertmanager's configuration docs.
DOCS_RULE = {
    "source_matchers": ['severity="critical"'],
    "target_matchers": ['severity="warning"'],
    "equal": ["alertname", "cluster"],
}


def alert(status: str = "firing", **labels: str) -> Alert:
    return Alert(labels, {}, status, 0)  # type: ignore[arg-type]


def inhibitor(*rules: dict) -> Inhibitor:
    return Inhibitor([InhibitRuleConfig.model_validate(r).build() for r in rules])


CRIT_A = alert(alertname="Down", severity="critical", cluster="a")

CASES = [
    # (source alerts, target, inhibited?)
    ([CRIT_A], alert(alertname="Down", severity="warning", cluster="a"), True),
    ([CRIT_A], alert(alertname="Down", severity="warning", cluster="b"), False),  # cluster differs
    ([CRIT_A], alert(alertname="Slow", severity="warning", cluster="a"), False),  # alertname
    ([CRIT_A], alert(alertname="Down", severity="info", cluster="a"), False),  # not a target
    ([CRIT_A], alert(alertname="Down", severity="critical", cluster="a"), False),  # the source
    ([alert("resolved", alertname="Down", severity="critical", cluster="a")],
     alert(alertname="Down", severity="warning", cluster="a"), False),  # source not firing
    ([alert(alertname="Down", severity="critical")],
     alert(alertname="Down", severity="warning"), True),  # cluster absent on both: equal
    ([alert(alertname="Down", severity="critical")],
     alert(alertname="Down", severity="warning", cluster="a"), False),  # absent vs "a"
]  # fmt: skip


@pytest.mark.parametrize(("sources", "target", "inhibited"), CASES)
def test_docs_rule(sources: list[Alert], target: Alert, inhibited: bool) -> None:
    found = inhibitor(DOCS_RULE).index(sources).inhibited_by(target)
    assert found == (tuple(a.fingerprint for a in sources) if inhibited else ())


def test_rule_without_equal_mutes_every_target() -> None:
    idx = inhibitor({"source_matchers": ['alertname="ClusterDown"'],
                     "target_matchers": ['alertname!="ClusterDown"']}
                    ).index([alert(alertname="ClusterDown")])  # fmt: skip
    assert idx.inhibited_by(alert(alertname="Anything", cluster="x")) != ()


def test_an_alert_matching_both_sides_does_not_inhibit_itself() -> None:
    rule = {"source_matchers": ['severity=~"critical|warning"'],
            "target_matchers": ['severity=~"critical|warning"'], "equal": ["cluster"]}  # fmt: skip
    a = alert(alertname="A", severity="critical", cluster="x")
    b = alert(alertname="B", severity="warning", cluster="x")
    idx = inhibitor(rule).index([a, b])
    # each matches both sides, so sources that also match the target side do not count
    assert idx.inhibited_by(a) == () and idx.inhibited_by(b) == ()


def test_legacy_source_match_and_target_match_re() -> None:
    rule = {"source_match": {"severity": "critical"}, "target_match_re": {"severity": "warn.*"},
            "equal": ["cluster"]}  # fmt: skip
    idx = inhibitor(rule).index([CRIT_A])
    assert idx.inhibited_by(alert(severity="warning", cluster="a")) == (CRIT_A.fingerprint,)


def test_bad_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="target_matchers"):
        InhibitRuleConfig.model_validate({"target_matchers": ["sev~critical"]})
    with pytest.raises(ValueError, match="invalid regex"):
        InhibitRuleConfig.model_validate({"source_match_re": {"a": "("}})


def test_manager_leaves_inhibited_alerts_out_and_reports_them() -> None:
    am = AlertManager.from_yaml("""
route: {receiver: team, group_by: [cluster], group_wait: 30s}
receivers: [{name: team}]
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [cluster]
""")
    crit = alert(alertname="Down", severity="critical", cluster="a")
    warn = alert(alertname="Slow", severity="warning", cluster="a")
    other = alert(alertname="Slow", severity="warning", cluster="b")
    for a in (crit, warn, other):
        am.receive(a, 0)
    out = am.flush_due(30 * S)
    assert sorted((n.group_labels["cluster"], [a.name for a in n.alerts]) for n in out) == [
        ("a", ["Down"]),
        ("b", ["Slow"]),
    ]
    states = {(s.alert.name, s.alert.labels["cluster"]): s for s in am.alerts(30 * S)}
    assert states[("Slow", "a")].state == "suppressed"
    assert states[("Slow", "a")].inhibited_by == (crit.fingerprint,)
    assert states[("Slow", "b")].state == "active"
    # the source resolves: the target is notified at the next flush
    am.receive(Alert(crit.labels, {}, "resolved", 0, ends_at_ms=60 * S), 60 * S)
    out = am.flush_due(330 * S)
    (n,) = [n for n in out if n.group_labels["cluster"] == "a"]
    assert [(a.name, a.status) for a in n.alerts] == [("Down", "resolved"), ("Slow", "firing")]
