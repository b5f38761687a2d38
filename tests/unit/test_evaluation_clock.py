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


# --- catch-up after a restart, and ends from the future -----------------------------


def test_in_catch_up_a_partition_counts_before_it_delivers_and_there_is_no_grace() -> None:
    c = EvaluationClock(grace_ms=2_000, settle_ms=0, live_ms=5_000)
    c.begin_catch_up([0, 1, 2])
    for end in (W, 2 * W, 3 * W):  # partition 0's whole backlog arrives first
        c.observe(0, end, now_ms=0)
        c.complete(0, end, now_ms=0)
    assert c.due(60_000) == []  # 1 and 2 have not delivered; no grace, however long
    c.complete(1, 3 * W, now_ms=60_000)
    c.caught_up(1, now_ms=60_000)
    c.complete(2, W, now_ms=60_000)
    assert c.due(60_000) == [W]
    c.caught_up(0, now_ms=61_000)
    assert c.due(120_000) == []  # 2 still reads its backlog (and is through W only)
    c.caught_up(2, now_ms=130_000)  # 2 had nothing more: catch-up is over
    assert c.catching_up == frozenset()
    assert c.due(130_000) == []  # 2 is live and through W: the grace counts from now
    assert c.due(132_000) == [2 * W, 3 * W]


@given(st.data())
def test_in_catch_up_an_end_is_due_only_once_every_partition_marked_it(data: st.DataObject) -> None:
    partitions = data.draw(st.integers(1, 4))
    n = data.draw(st.integers(1, 15))
    c = EvaluationClock(grace_ms=1_000, settle_ms=0, live_ms=5_000)
    c.begin_catch_up(range(partitions))
    read, now, due = [0] * partitions, 0, []
    while any(r < n for r in read):
        p = data.draw(st.sampled_from([p for p in range(partitions) if read[p] < n]))
        read[p] += 1
        now += data.draw(st.integers(0, 10_000))  # past the grace and the liveness
        c.observe(p, read[p] * W, now)
        c.complete(p, read[p] * W, now)
        if read[p] == n:
            c.caught_up(p, now)
        got = c.due(now)
        assert all(min(read) * W >= end for end in got)  # every partition is through
        due += got
    due += c.due(now + 1_000)
    assert due == [(i + 1) * W for i in range(n)]


def test_an_end_from_the_future_is_not_taken_and_moves_nothing() -> None:
    c = EvaluationClock(grace_ms=0, settle_ms=0, live_ms=30_000, max_ahead_ms=W)
    now = 1_000 * W
    assert c.observe(0, now + 360 * W, now) is False  # an hour ahead
    c.complete(0, now + 360 * W, now)  # its mark counts up to one window ahead only
    assert c.due(now) == []
    assert c.last_evaluated_ms == 0
    assert c.observe(0, now - W, now) and c.observe(0, now + W, now)  # one window: fine
    assert c.due(now) == [now - W, now + W]
    c.observe(1, now + 2 * W, now + W)
    assert c.due(now + W) == [now + 2 * W]


def test_every_assigned_partition_counts_from_the_start() -> None:
    c = EvaluationClock(grace_ms=2_000, settle_ms=0, live_ms=30_000)
    c.assign([0, 1], now_ms=0)
    c.observe(0, W, now_ms=100)
    c.complete(0, W, now_ms=100)
    assert c.due(1_000) == []  # partition 1 has said nothing yet, but it is read
    c.complete(1, W, now_ms=1_500)
    assert c.due(1_500) == [W]
    c.observe(0, 2 * W, now_ms=2_000)
    assert c.due(4_000) == [2 * W]  # the grace still bounds the wait
