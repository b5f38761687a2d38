"""Grouping timers and deduplication, with an explicit clock."""

from __future__ import annotations

import itertools

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.alerts.alert_manager import AlertManager
from monitoring.alerts.model import Alert, Notification

S = 1000
M = 60 * S

CONFIG = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
  routes:
    - matchers: ['team="db"']
      receiver: db
      continue: true
    - matchers: ['team="db"']
      receiver: db-archive
receivers: [{name: team}, {name: db}, {name: db-archive}]
"""


def manager(text: str = CONFIG) -> AlertManager:
    return AlertManager.from_yaml(text)


def fire(host: str, t: int, name: str = "HighCPU", **extra: str) -> Alert:
    return Alert({"alertname": name, "host": host, **extra}, {"summary": host}, "firing", t)


def resolve(host: str, start: int, t: int, name: str = "HighCPU", **extra: str) -> Alert:
    labels = {"alertname": name, "host": host, **extra}
    return Alert(labels, {"summary": host}, "resolved", start, ends_at_ms=t)


def brief(ns: list[Notification]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [(n.receiver, n.status, [(a.labels["host"], a.status) for a in n.alerts]) for n in ns]


def test_group_wait_is_exact_and_batches_alerts() -> None:
    am = manager()
    am.receive(fire("a", 0), 0)
    am.receive(fire("b", 10 * S), 10 * S)
    assert am.next_deadline() == 30 * S
    assert am.flush_due(30 * S - 1) == []
    assert brief(am.flush_due(30 * S)) == [("team", "firing", [("a", "firing"), ("b", "firing")])]
    assert am.next_deadline() == 30 * S + 5 * M


def test_group_labels_and_key() -> None:
    am = manager()
    am.receive(fire("a", 0), 0)
    (n,) = am.flush_due(30 * S)
    assert n.group_key == '{}:{alertname="HighCPU"}'
    assert dict(n.group_labels) == {"alertname": "HighCPU"}
    assert n.tier == 0


def test_group_by_splits_groups() -> None:
    am = manager()
    am.receive(fire("a", 0, name="HighCPU"), 0)
    am.receive(fire("a", 0, name="DiskFull"), 0)
    out = am.flush_due(30 * S)
    assert sorted(n.group_key for n in out) == [
        '{}:{alertname="DiskFull"}',
        '{}:{alertname="HighCPU"}',
    ]


def test_new_alert_waits_for_group_interval() -> None:
    am = manager()
    am.receive(fire("a", 0), 0)
    am.flush_due(30 * S)
    am.receive(fire("b", 40 * S), 40 * S)
    assert am.next_deadline() == 330 * S
    assert am.flush_due(329 * S) == []
    assert brief(am.flush_due(330 * S)) == [("team", "firing", [("a", "firing"), ("b", "firing")])]


def test_unchanged_group_repeats_exactly_at_repeat_interval() -> None:
    am = manager()
    am.receive(fire("a", 0), 0)
    sent_at = []
    while (t := am.next_deadline()) is not None and t <= 3 * 3600 * S + M:
        if am.flush_due(t):
            sent_at.append(t)
    # first at 30 s; ticks every 5 m; repeats when 1 h has passed since the last message
    assert sent_at == [30 * S, 30 * S + 60 * M, 30 * S + 120 * M, 30 * S + 180 * M]


def test_duplicate_alert_is_not_notified_again() -> None:
    am = manager()
    am.receive(fire("a", 0), 0)
    am.flush_due(30 * S)
    am.receive(fire("a", 0), 60 * S)  # the same state change again (a replay)
    am.receive(fire("a", 0), 90 * S)
    assert am.flush_due(330 * S) == []


def test_resolution_is_sent_once_then_the_group_goes() -> None:
    am = manager()
    am.receive(fire("a", 0), 0)
    am.receive(fire("b", 0), 0)
    am.flush_due(30 * S)
    am.receive(resolve("a", 0, 100 * S), 100 * S)
    assert brief(am.flush_due(330 * S)) == [
        ("team", "firing", [("a", "resolved"), ("b", "firing")])
    ]
    am.receive(resolve("b", 0, 400 * S), 400 * S)
    assert brief(am.flush_due(630 * S)) == [("team", "resolved", [("b", "resolved")])]
    assert am.next_deadline() is None
    assert am.alerts(630 * S) == []


def test_alert_resolved_before_first_flush_is_never_sent() -> None:
    am = manager()
    am.receive(fire("a", 0), 0)
    am.receive(resolve("a", 0, 10 * S), 10 * S)
    assert am.flush_due(30 * S) == []
    assert am.next_deadline() is None


def test_resolved_alert_for_unknown_group_sends_nothing() -> None:
    am = manager()
    am.receive(resolve("a", 0, 10 * S), 10 * S)
    assert am.flush_due(40 * S) == []
    assert am.next_deadline() is None


def test_old_alert_flushes_a_new_group_at_once() -> None:
    am = manager()
    am.receive(fire("a", 0), 31 * S)  # startsAt + group_wait already past
    assert am.next_deadline() == 31 * S
    am2 = manager()
    am2.receive(fire("a", 0), 30 * S)  # exactly at startsAt + group_wait: waits (strict)
    assert am2.next_deadline() == 60 * S


def test_group_wait_zero_is_immediate() -> None:
    am = manager(CONFIG.replace("group_wait: 30s", "group_wait: 0s"))
    am.receive(fire("a", 5 * S), 5 * S)
    assert am.next_deadline() == 5 * S
    assert len(am.flush_due(5 * S)) == 1


def test_continue_sends_to_every_matching_route() -> None:
    am = manager()
    am.receive(fire("a", 0, team="db"), 0)
    out = am.flush_due(30 * S)
    assert sorted(n.receiver for n in out) == ["db", "db-archive"]
    assert {n.group_key for n in out} == {
        '{}/{team="db"}:{alertname="HighCPU"}',
    }


def test_refire_after_resolution_starts_a_new_group() -> None:
    am = manager()
    am.receive(fire("a", 0), 0)
    am.flush_due(30 * S)
    am.receive(resolve("a", 0, 40 * S), 40 * S)
    am.flush_due(330 * S)
    am.receive(fire("a", 400 * S), 400 * S)
    assert am.next_deadline() == 430 * S
    assert brief(am.flush_due(430 * S)) == [("team", "firing", [("a", "firing")])]


# -- property: timers hold for any arrival pattern ----------------------------------------

GW, GI, RI = 30 * S, 5 * M, 20 * M
PROP_CONFIG = f"""
route:
  receiver: r
  group_by: [alertname]
  group_wait: {GW}ms
  group_interval: {GI}ms
  repeat_interval: {RI}ms
receivers: [{{name: r}}]
"""

events = st.lists(
    st.tuples(
        st.integers(0, 40 * M),  # arrival time
        st.sampled_from(["a", "b", "c"]),  # host
        st.sampled_from(["X", "Y"]),  # alertname (group)
        st.booleans(),  # firing?
    ),
    max_size=25,
)


@settings(max_examples=examples(100), deadline=None)
@given(events=events)
def test_timer_invariants(events: list[tuple[int, str, str, bool]]) -> None:
    am = AlertManager.from_yaml(PROP_CONFIG)
    events = sorted(events)
    sent: list[tuple[int, Notification]] = []
    received: dict[tuple[str, str], tuple[int, bool]] = {}
    i, now = 0, 0
    end = 60 * M
    while True:
        deadline = am.next_deadline()
        next_event = events[i][0] if i < len(events) else None
        candidates = [t for t in (deadline, next_event) if t is not None]
        if not candidates or min(candidates) > end:
            break
        now = min(candidates)
        while i < len(events) and events[i][0] == now:
            t, host, name, firing = events[i]
            alert = fire(host, t, name) if firing else resolve(host, 0, t, name)
            am.receive(alert, now)
            received[(name, host)] = (now, firing)
            i += 1
        sent.extend((now, n) for n in am.flush_due(now))

    by_group: dict[str, list[tuple[int, Notification]]] = {}
    for t, n in sent:
        by_group.setdefault(n.group_key, []).append((t, n))
    for msgs in by_group.values():
        for (t0, n0), (t1, n1) in itertools.pairwise(msgs):
            # never closer than group_interval, unless the first ended the group (all
            # resolved) and the second belongs to a new group with the same key
            assert t1 - t0 >= GI or n0.status == "resolved"
            fp0 = {(a.fingerprint, a.status) for a in n0.alerts}
            fp1 = {(a.fingerprint, a.status) for a in n1.alerts}
            if fp0 == fp1 and n1.status == "firing":
                assert t1 - t0 >= RI  # identical content only after repeat_interval
        for _, n in msgs:
            assert n.status == ("firing" if any(a.status == "firing" for a in n.alerts) else
                                "resolved")  # fmt: skip
    # every alert still firing at the end was notified within group_wait + group_interval
    for (name, host), (t, firing) in received.items():
        if firing and t + GW + GI <= end:
            assert any(
                t <= ts <= t + GW + GI
                and any(a.labels["host"] == host and a.status == "firing" for a in n.alerts)
                for ts, n in sent
                if n.group_labels.get("alertname") == name
            ) or any(  # or it was already notified as firing before and unchanged since
                ts < t and any(a.labels["host"] == host and a.status == "firing" for a in n.alerts)
                for ts, n in sent
                if n.group_labels.get("alertname") == name
            )


def test_a_resolve_read_with_its_firing_in_one_batch_does_not_swallow_it() -> None:
    """An evaluator catching up sends an alert's firing and its resolve (30 s apart in
    event time) in one batch, long after both: each is taken at its own moment, so the
    firing, old enough to flush at once, is notified before the resolve is applied."""
    am = manager()
    now = 10 * M  # both happened minutes ago, read now
    am.receive(fire("a", 0), now)
    am.receive(resolve("a", 0, 30 * S), now)
    assert brief(am.flush_due(now)) == [("team", "firing", [("a", "firing")])]
    assert am.flush_due(now + 5 * M - 1) == []
    assert brief(am.flush_due(now + 5 * M)) == [("team", "resolved", [("a", "resolved")])]


def test_a_live_alert_resolved_within_group_wait_is_still_never_notified() -> None:
    """Alertmanager's rule, kept for live alerts: a resolve that comes before the
    group's first flush replaces the firing, and a group with nothing ever fired says
    nothing."""
    am = manager()
    am.receive(fire("a", 0), 0)
    am.receive(resolve("a", 0, 10 * S), 10 * S)
    assert am.flush_due(30 * S) == []


def test_a_held_resolve_survives_a_snapshot() -> None:
    """Between the batch and the flush the manager may be checkpointed: the held resolve
    is part of the group's record."""
    am = manager()
    now = 10 * M
    am.receive(fire("a", 0), now)
    am.receive(resolve("a", 0, 30 * S), now)
    restored = AlertManager.from_bytes(am.config, am.to_bytes())
    assert brief(restored.flush_due(now)) == [("team", "firing", [("a", "firing")])]
    assert brief(restored.flush_due(now + 5 * M)) == [("team", "resolved", [("a", "resolved")])]
    assert restored.flush_due(now + 10 * M) == [] and restored.groups() == []


def test_a_firing_after_a_held_resolve_replaces_it() -> None:
    """Fired, resolved, fired again, all read in one batch: the held resolve is
    superseded, the alert stays firing after the flush."""
    am = manager()
    now = 10 * M
    am.receive(fire("a", 0), now)
    am.receive(resolve("a", 0, 30 * S), now)
    am.receive(fire("a", 60 * S), now)
    assert brief(am.flush_due(now)) == [("team", "firing", [("a", "firing")])]
    assert am.flush_due(now + 5 * M) == []  # nothing resolved: nothing new to say
