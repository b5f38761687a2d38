"""Expiry, as Alertmanager's: a firing alert whose horizon (``ends_at_ms``) passed
without a refresh is resolved at its group's next flush; a refresh keeps it firing and
is no change by itself (only ``repeat_interval`` re-sends an unchanged firing set)."""

from __future__ import annotations

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.alerts.alert_manager import AlertManager
from monitoring.alerts.model import Alert, Notification
from monitoring.sinks.notifiers import alertmanager as am_channel
from monitoring.sinks.notifiers import webhook
from monitoring.sinks.notifiers.base import alert_text

S = 1000
M = 60 * S
ZERO = "0001-01-01T00:00:00Z"

CONFIG = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  group_interval: 10s
  repeat_interval: 1h
  routes:
    - matchers: ['alertname="Watchdog"']
      receiver: deadman
      repeat_interval: 1m
inhibit_rules:
  - source_matchers: ['alertname="Down"']
    target_matchers: ['alertname="Slow"']
receivers: [{name: team}, {name: deadman}]
"""


def manager() -> AlertManager:
    return AlertManager.from_yaml(CONFIG)


def fire(t: int, ends: int | None, name: str = "HighCPU", start: int = 0) -> Alert:
    return Alert({"alertname": name, "host": "a"}, {}, "firing", start, ends_at_ms=ends)


Brief = tuple[str, str, list[tuple[str, int | None]]]


def brief(ns: list[Notification]) -> list[Brief]:
    return [(n.receiver, n.status, [(a.status, a.ends_at_ms) for a in n.alerts]) for n in ns]


def run(am: AlertManager, until: int, step: int = S) -> list[tuple[int, Brief]]:
    out: list[tuple[int, Brief]] = []
    for t in range(0, until + 1, step):
        out += [(t, x) for x in brief(am.flush_due(t))]
    return out


def test_a_firing_alert_past_its_horizon_resolves_at_the_next_flush() -> None:
    am = manager()
    am.receive(fire(0, 4 * M), 0)
    got = []
    for t in range(0, 5 * M, S):
        got += [(t, x) for x in brief(am.flush_due(t))]
    assert got == [
        (0, ("team", "firing", [("firing", 4 * M)])),
        (4 * M, ("team", "resolved", [("resolved", 4 * M)])),  # flushes every 10 s
    ]
    assert am.next_deadline() is None  # the resolved alert was dropped with its group


def test_refreshes_keep_it_firing_and_send_nothing_by_themselves() -> None:
    am = manager()
    got = []
    last = 3 * 3600 * S - M
    for t in range(0, 3 * 3600 * S + 5 * M, 10 * S):
        if t % M == 0 and t <= last:  # the evaluator's re-send, every minute, then none
            am.receive(fire(t, t + 4 * M), t)
        got += [(t, x) for x in brief(am.flush_due(t))]
    # the first notification and the hourly repeats: no refresh is a change; then the
    # resolution at the last refresh's horizon
    assert [t for t, _ in got] == [0, 3600 * S, 7200 * S, 10800 * S, last + 4 * M]
    assert all(x == ("team", "firing", [("firing", t + 4 * M)]) for t, x in got[:-2])
    assert got[-2][1] == ("team", "firing", [("firing", last + 4 * M)])  # no refresh since
    assert got[-1][1] == ("team", "resolved", [("resolved", last + 4 * M)])


def test_the_watchdog_repeats_while_refreshed_and_resolves_when_refreshes_stop() -> None:
    am = manager()
    got = []
    for t in range(0, 10 * M + 1, S):
        if t % M == 0 and t <= 3 * M:  # the evaluator stops after 3 min
            am.receive(fire(t, t + 4 * M, "Watchdog"), t)
        got += [(t, n[1]) for n in brief(am.flush_due(t))]
    assert got == [(0, "firing"), (M, "firing"), (2 * M, "firing"), (3 * M, "firing"),
                   (4 * M, "firing"), (5 * M, "firing"), (6 * M, "firing"),
                   (7 * M, "resolved")]  # fmt: skip


def test_an_alert_expired_on_arrival_that_nobody_heard_of_sends_nothing() -> None:
    am = manager()
    am.receive(fire(0, 4 * M), 5 * M)
    assert am.flush_due(5 * M) == [] and am.next_deadline() is None


def test_a_replayed_older_refresh_does_not_shorten_the_horizon() -> None:
    am = manager()
    am.receive(fire(0, 6 * M), 0)
    am.receive(fire(0, 4 * M), S)  # an evaluator replay after a crash
    assert [x for _, x in run(am, 7 * M)] == [
        ("team", "firing", [("firing", 6 * M)]),
        ("team", "resolved", [("resolved", 6 * M)]),
    ]


def test_an_expired_source_no_longer_inhibits() -> None:
    am = manager()
    am.receive(fire(0, 2 * M, "Down"), 0)
    am.receive(fire(0, None, "Slow"), 0)
    assert [n.group_labels["alertname"] for n in am.flush_due(0)] == ["Down"]  # Slow muted
    got = [(t, n[0], n[1]) for t, n in run(am, 3 * M, 10 * S)]
    assert (2 * M, "team", "resolved") in got and (2 * M, "team", "firing") in got
    assert [s.alert.name for s in am.alerts(3 * M) if not s.inhibited_by] == ["Slow"]


def test_the_api_shows_the_horizon_and_the_state_at_now() -> None:
    am = manager()
    am.receive(fire(0, 4 * M), 0)
    (before,) = am.alerts(M)
    assert before.alert.status == "firing"
    assert before.to_api()["endsAt"] == "1970-01-01T00:04:00.000Z"  # as Alertmanager's API
    (after,) = am.alerts(4 * M)
    assert after.alert.status == "resolved"


def test_notifications_hide_a_firing_horizon_as_alertmanager_does() -> None:
    a = fire(0, 4 * M)
    n = Notification("team", "k", {"alertname": "HighCPU"}, (a,), "firing")
    assert webhook.payload(n, n.alerts, 0, "")["alerts"][0]["endsAt"] == ZERO
    assert "ends:" not in alert_text(a)
    # to a real Alertmanager the horizon goes as endsAt, as Prometheus posts it
    assert am_channel.payload((a,))[0]["endsAt"] == "1970-01-01T00:04:00.000Z"


@settings(max_examples=examples(100), deadline=None)
@given(
    refreshes=st.lists(st.integers(0, 20), min_size=1, max_size=12),
    restore=st.integers(0, 40),
)
def test_a_restore_at_any_point_changes_nothing(refreshes: list[int], restore: int) -> None:
    """Refresh times (in 10 s steps) with a 1 m horizon, restored from a snapshot."""
    at = {r * 10 * S for r in refreshes}

    def go(restore_at: int | None) -> list[tuple[int, Brief]]:
        am = manager()
        out: list[tuple[int, Brief]] = []
        for i, t in enumerate(range(0, 40 * 10 * S, 10 * S)):
            if i == restore_at:
                am = AlertManager.from_bytes(am.config, am.to_bytes())
            if t in at:
                am.receive(fire(t, t + M, "Watchdog"), t)
            out += [(t, x) for x in brief(am.flush_due(t))]
        return out

    plain = go(None)
    assert go(restore) == plain
    assert plain[-1][1][1] == "resolved"  # the last refresh's horizon passed
    # resolved only once no refresh is valid; between resolutions, firing notifications
    # no closer than the repeat interval (a refresh is no change)
    last_firing = None
    for t, x in plain:
        if x[1] == "resolved":
            assert not any(r <= t < r + M for r in at)
            last_firing = None
        else:
            assert last_firing is None or t - last_firing >= M
            last_firing = t
