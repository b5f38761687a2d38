"""Re-sends of firing alerts and their horizon (``ends_at_ms``), as Prometheus'
``resend_delay`` and ``endsAt``: by evaluation time only, across restores; and the
built-in Watchdog."""

from __future__ import annotations

from typing import Any

import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.alerts.evaluator import AlertEngine
from monitoring.alerts.history import WindowRow
from monitoring.alerts.rules import load_rules_text
from monitoring.alerts.state import AlertStateMachine, Observation, labels_key
from monitoring.alerts.watchdog import WATCHDOG, watchdog_rule, with_watchdog

S = 10_000  # one evaluation per 10 s window close
M = 60_000
LABELS = {"alertname": "A", "host": "h0"}
OBS = {labels_key(LABELS): Observation(LABELS, {}, 1.0)}


def sends(sm: AlertStateMachine, t: int, active: bool) -> list[tuple[str, int, int | None]]:
    return [(a.status, a.starts_at_ms, a.ends_at_ms) for a in sm.step(t, OBS if active else {})]


def test_a_firing_alert_is_resent_every_interval_with_a_horizon() -> None:
    sm = AlertStateMachine(resend_ms=M)
    got = {t: sends(sm, t, True) for t in range(0, 3 * M + 1, S)}
    assert {t: s for t, s in got.items() if s} == {
        0: [("firing", 0, 4 * M)],
        M: [("firing", 0, 5 * M)],
        2 * M: [("firing", 0, 6 * M)],
        3 * M: [("firing", 0, 7 * M)],
    }
    assert sends(sm, 3 * M + S, False) == [("resolved", 0, 3 * M + S)]
    assert [a.ends_at_ms for a in sm.firing()] == []


def test_resends_follow_evaluation_time_and_carry_the_latest_value() -> None:
    sm = AlertStateMachine(resend_ms=M, valid_for_ms=5 * M)
    assert sends(sm, 0, True) == [("firing", 0, 5 * M)]
    assert sends(sm, 7 * S, True) == [("firing", 0, 7 * S + 5 * M)]  # one evaluation late
    assert sends(sm, 7 * S + M - 1, True) == []  # not twice within the interval
    hot = {labels_key(LABELS): Observation(LABELS, {"s": "hotter"}, 99.0)}
    (a,) = sm.step(7 * S + M, hot)
    assert (a.value, dict(a.annotations), a.ends_at_ms) == (99.0, {"s": "hotter"}, 7 * S + 6 * M)
    assert [x.ends_at_ms for x in sm.firing()] == [7 * S + 6 * M]


def test_keep_firing_for_and_hysteresis_resend_too() -> None:
    sm = AlertStateMachine(keep_firing_for_ms=5 * M, resend_ms=M)
    assert sends(sm, 0, True) == [("firing", 0, 4 * M)]
    assert sends(sm, M, False) == [("firing", 0, 5 * M)]  # kept firing: re-sent
    assert sends(sm, 2 * M, False) == [("firing", 0, 6 * M)]


def test_a_state_written_before_resends_restores() -> None:
    sm = AlertStateMachine(resend_ms=M)
    sends(sm, 0, True)
    old = sm.to_json()
    for item in old["instances"]:
        del item["sent_at_ms"]
    again = AlertStateMachine(resend_ms=M)
    again.restore_json(old)
    assert sends(again, M - S, True) == [] and sends(again, M, True) == [("firing", 0, 5 * M)]


def test_without_resend_only_state_changes_and_no_horizon_and_a_bad_interval() -> None:
    sm = AlertStateMachine()
    assert [sends(sm, t, True) for t in (0, M, 10 * M)] == [[("firing", 0, None)], [], []]
    with pytest.raises(ValueError, match="resend_ms"):
        AlertStateMachine(resend_ms=0)


def run(
    steps: list[tuple[int, bool]], resend: int, for_ms: int, kff: int, restore_at: int | None
) -> list[list[tuple[str, int, int | None]]]:
    sm = AlertStateMachine(for_ms, kff, resend_ms=resend)
    out = []
    for i, (t, active) in enumerate(steps):
        if i == restore_at:
            sm = AlertStateMachine.from_bytes(sm.to_bytes(), for_ms, kff, resend_ms=resend)
        out.append(sends(sm, t, active))
    return out


@settings(max_examples=examples(300), deadline=None)
@given(
    gaps=st.lists(st.integers(1, 30), min_size=1, max_size=60),
    active=st.lists(st.booleans(), min_size=60, max_size=60),
    resend_steps=st.integers(1, 12),
    for_steps=st.integers(0, 3),
    kff_steps=st.integers(0, 3),
    restore=st.integers(0, 60),
)
def test_any_sequence_sends_at_least_every_interval_never_twice_within_it(
    gaps: list[int],
    active: list[bool],
    resend_steps: int,
    for_steps: int,
    kff_steps: int,
    restore: int,
) -> None:
    resend = resend_steps * S
    times = [sum(gaps[: i + 1]) * S for i in range(len(gaps))]  # increasing, uneven
    steps = list(zip(times, active, strict=False))
    out = run(steps, resend, for_steps * S, kff_steps * S, None)
    # a restore from the checkpoint of any step changes nothing
    assert run(steps, resend, for_steps * S, kff_steps * S, restore) == out
    sm = AlertStateMachine(for_steps * S, kff_steps * S, resend_ms=resend)
    last_sent: int | None = None
    for (t, a), emitted in zip(steps, out, strict=True):
        sm.step(t, OBS if a else {})
        firing = [e for e in emitted if e[0] == "firing"]
        assert len(emitted) <= 1 and all(e[2] == t + 4 * resend for e in firing)
        if firing:
            assert last_sent is None or t - last_sent >= resend  # never twice within it
            last_sent = t
        if any(e[0] == "resolved" for e in emitted):
            last_sent = None
        if sm.firing():  # still firing after the step: sent within the last interval
            assert last_sent is not None and t - last_sent < resend
        else:
            assert last_sent is None or not firing


RULES = "rules: [{name: Hot, condition: temp > 30, severity: page}]"


def engine(resend_ms: int | None, watchdog: bool = True, window_ms: int = S) -> AlertEngine:
    rules = load_rules_text(RULES).rules
    return AlertEngine(
        with_watchdog(rules) if watchdog else rules, window_ms=window_ms, resend_ms=resend_ms
    )


def brief(alerts: list[Any]) -> list[tuple[str, str, int | None]]:
    return [(a.name, a.status, a.ends_at_ms) for a in alerts]


def test_the_engine_resends_the_watchdog_and_firing_rules() -> None:
    eng = engine(M)
    got = []
    for t in range(S, 3 * M + 1, S):
        eng.add(WindowRow.of("temp", {"room": "a"}, t, [35.0 if t <= 2 * M else 20.0]))
        got += [(t, *x) for x in brief(eng.evaluate(t))]
    assert got == [
        (S, "Hot", "firing", S + 4 * M),
        (S, WATCHDOG, "firing", S + 4 * M),
        (S + M, "Hot", "firing", S + 5 * M),
        (S + M, WATCHDOG, "firing", S + 5 * M),
        (2 * M + S, "Hot", "resolved", 2 * M + S),
        (2 * M + S, WATCHDOG, "firing", S + 6 * M),
    ]


def test_the_horizon_covers_at_least_four_evaluations() -> None:
    """As Prometheus' 4 * max(resend_delay, interval): a re-send interval shorter than the
    window would otherwise let the alert expire between two evaluations."""
    eng = engine(1_000, window_ms=S)
    assert brief(eng.evaluate(S)) == [(WATCHDOG, "firing", S + 4 * S)]
    assert brief(eng.evaluate(2 * S)) == [(WATCHDOG, "firing", 2 * S + 4 * S)]


def test_an_engine_restored_midway_sends_what_the_uninterrupted_one_sends() -> None:
    def feed(eng: AlertEngine, ts: range) -> list[Any]:
        out = []
        for t in ts:
            eng.add(WindowRow.of("temp", {"room": "a"}, t, [35.0]))
            out += [(t, *x) for x in brief(eng.evaluate(t))]
        return out

    straight = engine(M)
    whole = feed(straight, range(S, 10 * M, S))
    first = engine(M)
    part = feed(first, range(S, 35 * S, S))
    second = engine(M)
    second.restore(first.to_bytes())
    # as after a restart: the history re-read, old ends replayed are ignored
    feed(second, range(S, 35 * S, S))
    assert part + feed(second, range(35 * S, 10 * M, S)) == whole


def test_watchdog_rule_and_a_user_rule_of_the_same_name() -> None:
    w = watchdog_rule()
    assert (w.name, w.expr, dict(w.labels), w.for_ms) == (
        WATCHDOG,
        "vector(1)",
        {"severity": "none"},
        0,
    )
    assert "entire alerting pipeline is functional" in w.annotations["description"]
    mine = load_rules_text("rules: [{name: Watchdog, condition: vector(1)}]").rules
    assert with_watchdog(mine) == mine
