"""A rule group's ``limit``, as Prometheus has it: loaded from the group (0 or absent: no
limit; anything but a whole number >= 0 refused), and in the engine an alerting rule
over it fails, forgets its instances and sends nothing; a recording rule over it
records nothing."""

from __future__ import annotations

import math

import pytest

from monitoring.alerts.evaluator import AlertEngine
from monitoring.alerts.history import WindowRow
from monitoring.alerts.rules import load_rules_text

W = 10_000


def rules(limit: str, extra: str = "") -> str:
    return f"""
groups:
  - name: rooms
    {limit}
    rules:
      - alert: Hot
        expr: temp > 30
{extra}
      - record: room:temp:hot
        expr: temp > 30
"""


def engine(limit: int, **kw: object) -> AlertEngine:
    rs = load_rules_text(rules(f"limit: {limit}"), "rooms.yml")
    assert rs.errors == []
    return AlertEngine(rs.rules, recordings=rs.recordings, window_ms=W, **kw)  # type: ignore[arg-type]


def step(eng: AlertEngine, t: int, hot: int) -> list[tuple[str, str]]:
    """Rooms r0..r(hot-1) at 35, the rest of four at 20; evaluate at ``t``."""
    for i in range(4):
        eng.add(WindowRow.of("temp", {"room": f"r{i}"}, t, [35.0 if i < hot else 20.0]))
    return sorted((a.status, a.labels["room"]) for a in eng.evaluate(t))


def test_the_limit_is_loaded_from_the_group() -> None:
    rs = load_rules_text(rules("limit: 3"))
    assert rs.errors == []
    assert [r.limit for r in rs.rules] == [3] and [r.limit for r in rs.recordings] == [3]
    rs = load_rules_text(rules(""))
    assert [r.limit for r in rs.rules] == [0] and [r.limit for r in rs.recordings] == [0]


@pytest.mark.parametrize("bad", ["-1", "1.5", "'3'", "true", "[1]", "null"])
def test_a_bad_limit_is_refused_with_the_group(bad: str) -> None:
    rs = load_rules_text(rules(f"limit: {bad}"), "rooms.yml")
    assert rs.rules == [] and rs.recordings == []
    assert len(rs.errors) == 1 and "limit" in str(rs.errors[0]), rs.errors
    assert "group 'rooms'" in str(rs.errors[0])


def test_over_the_limit_the_rule_fails_forgets_its_instances_and_sends_nothing() -> None:
    eng = engine(2)
    assert step(eng, W, 2) == [("firing", "r0"), ("firing", "r1")]
    assert eng.errors == []
    # a third instance: the evaluation fails, nothing is sent, every instance forgotten
    assert step(eng, 2 * W, 3) == []
    assert [(r.name, e) for r, e in eng.errors] == [("Hot", "exceeded limit of 2 with 3 alerts")]
    assert eng.firing() == []
    assert step(eng, 3 * W, 3) == [] and len(eng.errors) == 1
    # back under the limit: the instances start afresh (for: 0, so firing at once)
    assert step(eng, 4 * W, 1) == [("firing", "r0")]
    assert eng.errors == []
    assert [a.starts_at_ms for a in eng.firing()] == [4 * W]


def test_pending_instances_count_toward_the_limit() -> None:
    text = rules("limit: 2").replace("expr: temp > 30\n", "expr: temp > 30\n        for: 1m\n", 1)
    rs = load_rules_text(text)
    eng = AlertEngine(rs.rules, window_ms=W)
    step(eng, W, 3)
    assert [e for _, e in eng.errors] == ["exceeded limit of 2 with 3 alerts"]


def test_a_limit_of_zero_is_no_limit() -> None:
    eng = engine(0)
    assert len(step(eng, W, 4)) == 4 and eng.errors == []


def test_the_alert_series_are_left_unmarked_while_failing_and_marked_after() -> None:
    """As Prometheus keeps a failed rule's series of its last good evaluation: no
    samples and no markers at a failed evaluation; the markers at the next good one."""
    eng = engine(2)
    step(eng, W, 2)
    assert {s.labels["room"] for s in eng.alert_samples} == {"r0", "r1"}
    step(eng, 2 * W, 3)
    assert eng.alert_samples == []
    step(eng, 3 * W, 4)
    assert eng.alert_samples == []
    step(eng, 4 * W, 0)  # good again, nothing active: r0 and r1's series end here
    marked = {(s.name, s.labels["room"]) for s in eng.alert_samples if math.isnan(s.value)}
    assert marked == {(n, r) for n in ("ALERTS", "ALERTS_FOR_STATE") for r in ("r0", "r1")}
    assert all(math.isnan(s.value) for s in eng.alert_samples)


def test_a_recording_rule_over_the_limit_records_nothing() -> None:
    eng = engine(2)
    step(eng, W, 2)
    assert sorted(r.labels["room"] for r in eng.record(W)) == ["r0", "r1"]
    step(eng, 2 * W, 3)
    assert eng.record(2 * W) == []
    assert [(r.record, e) for r, e in eng.recording_errors] == [
        ("room:temp:hot", "EvalError: exceeded limit of 2 with 3 series")
    ]
    step(eng, 3 * W, 1)
    assert len(eng.record(3 * W)) == 1 and eng.recording_errors == []


def test_a_reload_dropping_a_failing_rule_marks_its_series() -> None:
    eng = engine(2)
    step(eng, W, 2)
    step(eng, 2 * W, 3)
    eng.set_rules([])
    step(eng, 3 * W, 0)
    assert {(s.name, s.labels["room"]) for s in eng.alert_samples} == {
        (n, r) for n in ("ALERTS", "ALERTS_FOR_STATE") for r in ("r0", "r1")
    }
