"""The alert state machine: table-driven cases and hypothesis against a reference model."""

from __future__ import annotations

import math

import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.alerts.model import fingerprint
from monitoring.alerts.state import AlertStateMachine, Observation, labels_key

S = 10_000  # one evaluation per 10 s window close


def inst(i: int) -> dict[str, str]:
    return {"alertname": "A", "host": f"h{i}", "severity": "page"}


def step(
    sm: AlertStateMachine, t: int, active: set[int], hold: set[int] = frozenset(), v: float = 1.0
):
    obs = {labels_key(inst(i)): Observation(inst(i), {"s": f"v={v}"}, v) for i in active}
    return [
        (a.status, a.labels["host"], a.starts_at_ms, a.ends_at_ms)
        for a in sm.step(t, obs, {labels_key(inst(i)) for i in hold})
    ]


# Each row: for, keep_firing_for, [(active, hold)] per step (step k at time k*S),
# expected emissions (status, step it fired, step it resolved or None) for host h0.
CASES = [
    (
        "fires at once without for",
        0,
        0,
        [(1, 0), (1, 0), (0, 0)],
        [("firing", 0, None), ("resolved", 0, 2)],
    ),
    (
        "for of two steps",
        2 * S,
        0,
        [(1, 0), (1, 0), (1, 0), (0, 0)],
        [("firing", 2, None), ("resolved", 2, 3)],
    ),
    ("pending interrupted never fires", 2 * S, 0, [(1, 0), (1, 0), (0, 0), (1, 0), (1, 0)], []),
    ("pending restarts after a gap", S, 0, [(1, 0), (0, 0), (1, 0), (1, 0)], [("firing", 3, None)]),
    (
        "keep_firing_for bridges a gap",
        0,
        2 * S,
        [(1, 0), (0, 0), (0, 0), (1, 0), (0, 0), (0, 0), (0, 0)],
        [("firing", 0, None), ("resolved", 0, 6)],
    ),
    (
        "keep_firing_for ends",
        0,
        S,
        [(1, 0), (0, 0), (0, 0)],
        [("firing", 0, None), ("resolved", 0, 2)],
    ),
    (
        "hysteresis holds",
        0,
        0,
        [(1, 0), (0, 1), (0, 1), (0, 0)],
        [("firing", 0, None), ("resolved", 0, 3)],
    ),
    (
        "hold then keep_firing_for",
        0,
        S,
        [(1, 0), (0, 1), (0, 0), (0, 1), (0, 0), (0, 0)],
        [("firing", 0, None), ("resolved", 0, 5)],
    ),
    ("hold does not start pending", S, 0, [(0, 1), (0, 1)], []),
    ("hold does not keep pending", S, 0, [(1, 0), (0, 1), (1, 0), (1, 0)], [("firing", 3, None)]),
    (
        "refires after resolve",
        0,
        0,
        [(1, 0), (0, 0), (1, 0)],
        [("firing", 0, None), ("resolved", 0, 1), ("firing", 2, None)],
    ),
]


@pytest.mark.parametrize(
    ("name", "for_ms", "kff", "steps", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_table(name: str, for_ms: int, kff: int, steps: list, expected: list) -> None:
    sm = AlertStateMachine(for_ms, kff)
    got = []
    for k, (a, h) in enumerate(steps):
        got += step(sm, k * S, {0} if a else set(), {0} if h else set())
    assert got == [(s, "h0", f * S, None if r is None else r * S) for s, f, r in expected]


def test_alert_fields() -> None:
    sm = AlertStateMachine(0, 0, generator_url="http://x/graph")
    labels = inst(0)
    (a,) = sm.step(5, {labels_key(labels): Observation(labels, {"s": "hot"}, 91.5)})
    assert (a.status, a.starts_at_ms, a.ends_at_ms, a.value, a.severity) == (
        "firing",
        5,
        None,
        91.5,
        "page",
    )
    assert (a.generator_url, dict(a.annotations), a.fingerprint) == (
        "http://x/graph",
        {"s": "hot"},
        fingerprint(labels),
    )
    (r,) = sm.step(6, {})
    assert (r.status, r.starts_at_ms, r.ends_at_ms, r.value, r.fingerprint) == (
        "resolved",
        5,
        6,
        91.5,
        a.fingerprint,
    )


def test_old_and_repeated_times_are_ignored() -> None:
    sm = AlertStateMachine(0, 0)
    assert step(sm, 2 * S, {0}) == [("firing", "h0", 2 * S, None)]
    assert step(sm, 2 * S, {0}) == []
    assert step(sm, S, set()) == []  # a replayed older close does not resolve
    assert step(sm, 3 * S, set()) == [("resolved", "h0", 2 * S, 3 * S)]


def test_serialisation_round_trip_with_special_values() -> None:
    sm = AlertStateMachine(S, 0)
    step(sm, 0, {0, 1}, v=math.nan)
    step(sm, S, {0}, v=math.inf)
    data = sm.to_bytes()
    back = AlertStateMachine.from_bytes(data, S, 0)
    assert back.to_bytes() == data
    assert math.isinf(back.instances[labels_key(inst(0))].value)
    assert data.startswith(b"{")  # JSON
    with pytest.raises(ValueError, match="version"):
        AlertStateMachine.from_bytes(b'{"v": 99}')
    with pytest.raises(ValueError):
        AlertStateMachine(-1)


def test_firing_lists_current_firing_instances() -> None:
    sm = AlertStateMachine(S, 0)
    step(sm, 0, {0})
    step(sm, S, {0, 1})
    assert [a.labels["host"] for a in sm.firing()] == ["h0"]


# --- hypothesis: against a reference model, and restore at any point ----------------


def reference(steps: list[tuple[int, set[int], set[int]]], for_ms: int, kff: int) -> list[tuple]:
    """The documented rules, written per instance over its whole timeline."""
    out = []
    for i in range(3):
        phase, since, fired, missing_since = "off", 0, 0, None
        for t, active, hold in steps:
            a, h = i in active, i in hold
            if phase == "off" and a:
                phase, since = "pending", t
            elif phase == "pending" and not a:
                phase = "off"
            if phase == "pending" and t - since >= for_ms:
                phase, fired, missing_since = "firing", t, None
                out.append((t, "firing", f"h{i}", fired, None))
            elif phase == "firing" and not a:
                if h:
                    missing_since = None
                    continue
                missing_since = t if missing_since is None else missing_since
                if t - missing_since >= kff:
                    out.append((t, "resolved", f"h{i}", fired, t))
                    phase = "off"
            elif phase == "firing":
                missing_since = None
    return sorted(out)


steps_st = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.sets(st.integers(0, 2)),
        st.sets(st.integers(0, 2)),
    ),
    max_size=30,
).map(lambda xs: [(sum(d for d, _, _ in xs[: k + 1]) * S, a, h) for k, (_, a, h) in enumerate(xs)])
for_st = st.sampled_from([0, S, 2 * S, 3 * S, 6 * S])
kff_st = st.sampled_from([0, S, 2 * S, 45_000])


def run(sm: AlertStateMachine, steps: list) -> list[tuple]:
    out = []
    for t, a, h in steps:
        out += [(t, *e) for e in step(sm, t, a, h)]
    return out


@settings(max_examples=examples(150), deadline=None)
@given(steps_st, for_st, kff_st)
def test_matches_reference(steps: list, for_ms: int, kff: int) -> None:
    got = run(AlertStateMachine(for_ms, kff), steps)
    assert sorted(got) == reference(steps, for_ms, kff)


@settings(max_examples=examples(150), deadline=None)
@given(steps_st, for_st, kff_st, st.data())
def test_restore_at_any_point_equals_no_restore(steps: list, for_ms: int, kff: int, data) -> None:
    whole = run(AlertStateMachine(for_ms, kff), steps)
    cut = data.draw(st.integers(0, len(steps)))
    replay_from = data.draw(st.integers(0, cut))
    first = AlertStateMachine(for_ms, kff)
    before = run(first, steps[:cut])
    restored = AlertStateMachine.from_bytes(first.to_bytes(), for_ms, kff)
    # the agent may replay windows the checkpoint already covered: they emit nothing
    assert run(restored, steps[replay_from:cut]) == []
    assert before + run(restored, steps[cut:]) == whole


@settings(max_examples=examples(100), deadline=None)
@given(steps_st, for_st, kff_st)
def test_each_firing_is_resolved_at_most_once(steps: list, for_ms: int, kff: int) -> None:
    got = run(AlertStateMachine(for_ms, kff), steps)
    for host in ("h0", "h1", "h2"):
        statuses = [e[1] for e in got if e[2] == host]
        assert statuses == ["firing", "resolved"] * (len(statuses) // 2) + ["firing"] * (
            len(statuses) % 2
        )
        for _, status, _, start, end in (e for e in got if e[2] == host):
            assert status == "firing" or end >= start
