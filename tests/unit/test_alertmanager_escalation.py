"""Escalation: tiers paged after their delays unless acknowledged; resolution to all."""

from __future__ import annotations

import re

import pytest

from monitoring.alerts.alert_manager import AlertManager
from monitoring.alerts.commands import Acknowledge, CommandError
from monitoring.alerts.model import Alert
from monitoring.config import ConfigError

S = 1000
M = 60 * S

CONFIG = """
route:
  receiver: slack
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  escalation: oncall
receivers: [{name: slack}, {name: primary}, {name: secondary}, {name: manager}]
escalation_policies:
  - name: oncall
    tiers:
      - {receivers: [primary], delay: 5m}
      - {receivers: [secondary], delay: 10m}
      - {receivers: [manager]}
"""
KEY = '{}:{alertname="Down"}'


def fire(host: str, t: int = 0) -> Alert:
    return Alert({"alertname": "Down", "host": host}, {}, "firing", t)


def resolved(host: str, t: int) -> Alert:
    return Alert({"alertname": "Down", "host": host}, {}, "resolved", 0, ends_at_ms=t)


def run(am: AlertManager, until: int) -> list[tuple[int, str, int, str]]:
    """Drive the clock through every deadline up to ``until``."""
    out: list[tuple[int, str, int, str]] = []
    while (t := am.next_deadline()) is not None and t <= until:
        out += [(t, n.receiver, n.tier, n.status) for n in am.flush_due(t)]
    return out


def test_unacknowledged_group_climbs_every_tier() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.receive(fire("a"), 0)
    assert run(am, 60 * M) == [
        (30 * S, "slack", 0, "firing"),
        (30 * S, "primary", 0, "firing"),
        (30 * S + 5 * M, "secondary", 1, "firing"),
        (30 * S + 15 * M, "manager", 2, "firing"),
    ]
    assert am.groups()[0]["escalationTier"] == 2


def test_group_ack_stops_escalation() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.receive(fire("a"), 0)
    run(am, 30 * S)
    applied = am.apply(Acknowledge(group_key=KEY, by="bob"), 2 * M)
    assert applied.group_keys == (KEY,)
    assert run(am, 60 * M) == []
    assert am.groups()[0]["acknowledgedBy"] == "bob"


def test_ack_after_first_escalation_stops_the_next() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.receive(fire("a"), 0)
    assert [r for _, r, _, _ in run(am, 6 * M)] == ["slack", "primary", "secondary"]
    am.apply(Acknowledge(group_key=KEY, by="bob"), 7 * M)
    assert run(am, 60 * M) == []


def test_fingerprint_acks_must_cover_every_firing_alert() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.receive(fire("a"), 0)
    am.receive(fire("b"), 0)
    run(am, 30 * S)
    am.apply(Acknowledge(fingerprint=fire("a").fingerprint, by="bob"), M)
    assert [r for _, r, _, _ in run(am, 6 * M)] == ["secondary"]
    am.apply(Acknowledge(fingerprint=fire("b").fingerprint, by="bob"), 7 * M)
    assert run(am, 60 * M) == []
    acked = {s.alert.labels["host"]: s.acknowledged_by for s in am.alerts(60 * M)}
    assert acked == {"a": "bob", "b": "bob"}


def test_resolution_reaches_every_paged_tier() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.receive(fire("a"), 0)
    run(am, 6 * M)
    am.receive(resolved("a", 7 * M), 7 * M)
    assert run(am, 60 * M) == [
        (30 * S + 10 * M, "slack", 0, "resolved"),
        (30 * S + 10 * M, "primary", 0, "resolved"),
        (30 * S + 10 * M, "secondary", 1, "resolved"),
    ]
    assert am.next_deadline() is None


def test_paged_tier_gets_later_updates() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.receive(fire("a"), 0)
    run(am, 6 * M)  # secondary paged at 5m30s
    am.receive(fire("b", 7 * M), 7 * M)
    assert run(am, 11 * M) == [
        (30 * S + 10 * M, "slack", 0, "firing"),
        (30 * S + 10 * M, "primary", 0, "firing"),
        (30 * S + 10 * M, "secondary", 1, "firing"),
    ]


def test_silenced_group_does_not_escalate() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.receive(fire("a"), 0)
    run(am, 30 * S)
    am.apply({"kind": "create_silence", "id": "s", "silence": {
        "matchers": [{"name": "host", "value": "a"}], "startsAt": "1970-01-01T00:01:00Z",
        "endsAt": "1970-01-01T02:00:00Z", "createdBy": "bob", "comment": "known"}}, M)  # fmt: skip
    assert run(am, 60 * M) == []


def test_receiver_in_several_tiers_is_notified_once() -> None:
    cfg = CONFIG.replace("- {receivers: [primary], delay: 5m}",
                         "- {receivers: [primary, slack], delay: 5m}")  # fmt: skip
    am = AlertManager.from_yaml(cfg)
    am.receive(fire("a"), 0)
    assert [(r, tier) for _, r, tier, _ in run(am, 30 * S)] == [("slack", 0), ("primary", 0)]


def test_route_without_policy_does_not_escalate() -> None:
    am = AlertManager.from_yaml(CONFIG.replace("  escalation: oncall\n", ""))
    am.receive(fire("a"), 0)
    assert [r for _, r, _, _ in run(am, 60 * M)] == ["slack"]


def test_ack_errors_name_the_target() -> None:
    am = AlertManager.from_yaml(CONFIG)
    with pytest.raises(CommandError, match="no alert group with key 'nope'"):
        am.apply(Acknowledge(group_key="nope", by="bob"), 0)
    with pytest.raises(CommandError, match="no firing alert with fingerprint 'ffff'"):
        am.apply(Acknowledge(fingerprint="ffff", by="bob"), 0)
    with pytest.raises(CommandError, match="exactly one of fingerprint or group_key"):
        am.apply({"kind": "acknowledge", "by": "bob"}, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("escalation: oncall", "escalation: nobody"),
         "route.escalation: undefined escalation policy 'nobody'"),
        (("[manager]}", "[ghost]}"),
         "escalation_policies.0.tiers.2.receivers: undefined receiver 'ghost'"),
        (("{receivers: [secondary], delay: 10m}", "{receivers: [secondary]}"),
         "escalation_policies.0: tiers.1.delay is required"),
        (("delay: 5m", "delay: 0s"),
         "escalation_policies.0.tiers.0.delay: Input should be greater"),
        (("- {receivers: [manager]}", "- {receivers: []}"),
         "escalation_policies.0.tiers.2.receivers: Tuple should have at least 1 item"),
    ],
)  # fmt: skip
def test_bad_policies_name_the_key(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        AlertManager.from_yaml(CONFIG.replace(*change))


def test_a_resolve_read_late_of_an_acknowledged_alert_pages_no_further_tier() -> None:
    """The notifier running behind: the resolve is read after the group's next flush
    was due. The alert was notified and acknowledged: its resolution goes to the tiers
    that heard of it, and no further tier is paged."""
    am = AlertManager.from_yaml(CONFIG)
    am.receive(fire("a"), 0)
    assert run(am, 30 * S) == [(30 * S, "slack", 0, "firing"), (30 * S, "primary", 0, "firing")]
    am.apply(Acknowledge(fingerprint=fire("a").fingerprint, by="bob"), 2 * M)
    am.receive(resolved("a", 5 * M), 6 * M)
    sent = [(n.receiver, n.tier, n.status) for n in am.flush_due(6 * M)]
    assert sent == [("slack", 0, "resolved"), ("primary", 0, "resolved")]
