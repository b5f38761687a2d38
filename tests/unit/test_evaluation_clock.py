"""EvaluationClock: when the alert evaluator evaluates a window end."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from monitoring.alerts.watermark import EvaluationClock

W = 10_000


def test_waits_for_every_live_partition_then_settles() -> None:
    c = EvaluationClock(grace_ms=2_000, settle_ms=100, live_ms=30_000)
    c.observe(0, W, now_ms=1_000)
    assert c.due(1_050) == []  # partition 1 has not been seen: only 0 is live
    assert c.due(1_100) == [W]
    c.observe(0, 2 * W, now_ms=2_000)
    c.observe(1, W, now_ms=2_000)  # partition 1 is live now and behind
    assert c.due(2_500) == []
    c.observe(1, 2 * W, now_ms=2_600)
    assert c.due(2_650) == [2 * W]  # the settle time counts from the first sight (2 000)


def test_a_silent_partition_stops_holding_back_once_it_is_not_live() -> None:
    c = EvaluationClock(grace_ms=60_000, settle_ms=0, live_ms=5_000)
    c.observe(0, W, now_ms=0)
    c.observe(1, W, now_ms=0)
    assert c.due(0) == [W]
    c.observe(0, 2 * W, now_ms=1_000)
    assert c.due(1_000) == []  # partition 1 is live and at W
    assert c.due(5_001) == [2 * W]  # partition 1 silent for more than live_ms


def test_ends_at_or_before_the_checkpoint_are_never_due() -> None:
    c = EvaluationClock(grace_ms=0, settle_ms=0, live_ms=30_000, last_evaluated_ms=5 * W)
    for end in (3 * W, 5 * W, 6 * W):
        c.observe(0, end, now_ms=0)
    assert c.due(0) == [6 * W]


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 30), st.integers(0, 3_000)),
        min_size=1,
        max_size=60,
    )
)
def test_each_end_is_due_once_in_increasing_order_and_within_grace(
    events: list[tuple[int, int, int]],
) -> None:
    grace = 2_000
    c = EvaluationClock(grace_ms=grace, settle_ms=50, live_ms=10_000)
    now, last, expected, due = 0, 0, set(), []
    for partition, window, step in events:
        now += step
        end = window * W
        c.observe(partition, end, now)
        if end > last:
            expected.add(end)
        got = c.due(now)
        due += got
        last = max([last, *got])
    due += c.due(now + grace)  # the grace has passed for everything pending
    assert due == sorted(set(due))  # increasing, each once
    assert set(due) == expected


def test_completion_marks_make_an_end_due_without_settling() -> None:
    c = EvaluationClock(grace_ms=2_000, settle_ms=500, live_ms=30_000)
    c.observe(0, W, now_ms=1_000)
    c.observe(1, W, now_ms=1_000)
    c.complete(0, W + 5_000, now_ms=1_000)
    assert c.due(1_001) == []  # partition 1 reached W but has not said it is done
    c.complete(1, W, now_ms=1_010)
    assert c.due(1_010) == [W]  # both done: no settle time
    c.observe(0, 2 * W, now_ms=2_000)
    c.complete(0, 2 * W, now_ms=2_000)
    assert c.due(3_999) == []  # partition 1 is live and only through W
    assert c.due(4_000) == [2 * W]  # the grace still bounds the wait


def test_a_marking_partition_is_done_with_an_end_it_has_no_windows_for() -> None:
    c = EvaluationClock(grace_ms=60_000, settle_ms=0, live_ms=30_000)
    c.observe(0, W, now_ms=0)
    c.complete(1, 3 * W, now_ms=0)  # its close through 3W had no window ending at W
    c.complete(0, W, now_ms=0)
    assert c.due(0) == [W]


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 12), st.booleans(), st.integers(0, 500)),
        min_size=1,
        max_size=60,
    )
)
def test_with_marks_an_end_is_due_only_when_every_live_partition_is_through_it(
    events: list[tuple[int, int, bool, int]],
) -> None:
    """Every partition marks its closes; before the grace passes, an end is due only
    once every partition seen is marked through it (live_ms spans the whole run)."""
    grace = 10_000_000
    c = EvaluationClock(grace_ms=grace, settle_ms=10_000_000, live_ms=10_000_000)
    now, through, evaluated = 0, {}, 0
    seen: set[int] = set()
    ends: set[int] = set()
    for partition, window, mark, step in events:
        now += step
        end = window * W
        c.observe(partition, end, now)
        seen.add(partition)
        ends.add(end)
        if mark:
            c.complete(partition, end, now)
            through[partition] = max(through.get(partition, 0), end)
        for got in c.due(now):
            assert got > evaluated
            evaluated = got
            assert all(through.get(p, 0) >= got for p in seen)
        # and nothing that every partition is through is left waiting
        done = min(through.get(p, 0) for p in seen)
        assert all(e <= evaluated for e in ends if e <= done)
