"""Counter fields of closed windows (first, increase, resets) against raw samples.

The aggregator's general oracle (``test_aggregator.counter_oracle``) covers arbitrary
arrival orders, lateness and crashes; these tests hold the counter maths to what a
counter user expects: for in-order samples, the increases of consecutive windows add up
to the counter's increase over its raw samples, resets counted as Prometheus counts them.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics.aggregator import Aggregate, PartitionAggregator
from monitoring.metrics.checkpoint import (
    pack_meta,
    pack_series,
    restore_record,
    unpack_meta,
    unpack_series,
)
from monitoring.metrics.samples import Sample, series_key

BASE = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
WINDOWS = (10_000, 60_000)


def raw_increase(values: list[float]) -> tuple[float, int]:
    """Prometheus' counter increase over raw samples: positive deltas summed, a drop
    counts the new value (the counter restarted from 0); and the number of drops."""
    total, resets = 0.0, 0
    for prev, cur in itertools.pairwise(values):
        if cur < prev:
            total += cur
            resets += 1
        else:
            total += cur - prev
    return total, resets


@st.composite
def counters(draw: st.DrawFn) -> list[list[Sample]]:
    """Messages of in-order samples of up to three counters with random increments,
    resets and scrape gaps (at most a minute: the default horizon)."""
    points: list[tuple[int, int, float]] = []
    for k in range(draw(st.integers(1, 3))):
        t, v = BASE + draw(st.integers(0, 20_000)), float(draw(st.integers(0, 100)))
        for _ in range(draw(st.integers(1, 40))):
            points.append((t, k, v))
            t += draw(st.integers(0, 60_000))
            if draw(st.integers(0, 9)) == 0:
                v = float(draw(st.integers(0, 50)))  # reset: restarted, maybe counted up
            else:
                v += draw(st.integers(0, 1000)) / 4  # dyadic: every sum is exact
    points.sort(key=lambda p: p[0])  # one clock: nothing late, nothing out of order
    messages: list[list[Sample]] = []
    i = 0
    while i < len(points):
        n = draw(st.integers(1, 40))
        messages.append([sample(k, t, v) for t, k, v in points[i : i + n]])
        i += n
    return messages


def sample(k: int, ts: int, v: float) -> Sample:
    labels = {"k": str(k)}
    return Sample(series_key("c_total", labels), "c_total", labels, ts, v, "COUNTER", "")


def run_all(agg: PartitionAggregator, messages: list[list[Sample]]) -> list[Aggregate]:
    out: list[Aggregate] = []
    for offset, msg in enumerate(messages):
        out += agg.process(offset, msg).closed
    return out + agg.close_idle()


@settings(max_examples=examples(200), deadline=None)
@given(counters(), st.sampled_from([1, 10**9]), st.sampled_from([0, 5_000]))
def test_window_increases_add_up_to_the_raw_increase(messages, vector_min, lateness):
    agg = PartitionAggregator(WINDOWS, lateness, vector_min=vector_min)
    closed = run_all(agg, messages)
    raw: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for msg in messages:
        for s in msg:
            raw[s.series].append((s.timestamp_ms, s.value))
    for w in WINDOWS:
        for key, points in raw.items():
            windows = sorted(
                (a for a in closed if a.series == key and a.window_ms == w),
                key=lambda a: a.window_start_ms,
            )
            values = [v for _, v in points]
            total, resets = raw_increase(values)
            assert sum(a.increase for a in windows) == total  # type: ignore[misc]
            assert sum(a.resets for a in windows) == resets  # type: ignore[misc]
            assert windows[0].first == values[0]
            for a in windows:  # each window: from the sample before it to its last one
                before = [v for t, v in points if t < a.window_start_ms][-1:]
                inside = [v for t, v in points if a.window_start_ms <= t < a.window_end_ms]
                assert a.first == inside[0] and a.last == inside[-1]
                assert (a.increase, a.resets) == raw_increase(before + inside)


def test_a_reset_inside_a_window_counts_from_zero() -> None:
    agg = PartitionAggregator((10_000,), 0, vector_min=10**9)
    agg.process(0, [sample(0, BASE + t, v) for t, v in [(1, 5.0), (2, 9.0), (3, 2.0), (4, 6.0)]])
    [a] = agg.process(1, [sample(0, BASE + 10_001, 10.0)]).closed
    assert (a.first, a.increase, a.resets) == (5.0, 4.0 + 2.0 + 4.0, 1)
    assert a.last - a.first == 1.0  # what min/last inference sees
    [b] = agg.process(2, [sample(0, BASE + 20_000, 11.0)]).closed
    assert (b.first, b.increase, b.resets) == (10.0, 4.0, 0)  # 6 -> 10 across the boundary


def test_out_of_order_samples_stay_out_of_the_counter_sequence() -> None:
    """As Prometheus' TSDB refuses them: an older sample still counts in count, sum and
    the quantiles, but not in first, increase or resets."""
    for vector_min in (1, 10**9):
        agg = PartitionAggregator((10_000,), 30_000, vector_min=vector_min)
        agg.process(0, [sample(0, BASE + 5_000, 7.0), sample(0, BASE + 9_000, 8.0)])
        agg.process(1, [sample(0, BASE + 1_000, 3.0)])  # older than 9_000: out of order
        agg.process(2, [sample(0, BASE + 12_000, 10.0), sample(0, BASE + 11_000, 1.0)])
        a, b = agg.close_idle()
        assert (a.count, a.first, a.increase, a.resets) == (3, 7.0, 1.0, 0)
        assert (b.count, b.first, b.increase, b.resets) == (2, 10.0, 2.0, 0)


def test_a_window_of_only_out_of_order_samples_has_no_counter_fields() -> None:
    agg = PartitionAggregator((10_000,), 30_000, vector_min=10**9)
    agg.process(0, [sample(0, BASE + 15_000, 7.0)])
    agg.process(1, [sample(0, BASE + 5_000, 3.0)])
    a, b = agg.close_idle()
    assert (a.window_start_ms, a.count) == (BASE, 1)
    assert (a.first, a.increase, a.resets) == (None, None, None)
    assert (b.first, b.increase, b.resets) == (7.0, 0.0, 0)


def test_a_counter_silent_past_the_horizon_starts_afresh_and_frees_its_slot() -> None:
    agg = PartitionAggregator((10_000,), 0, counter_horizon_ms=30_000)
    agg.process(0, [sample(0, BASE, 5.0)])
    agg.process(1, [sample(1, BASE + 25_000, 1.0)])  # within the horizon: kept
    agg.checkpoint()
    agg.checkpoint()
    assert agg.series_count == 2
    agg.process(2, [sample(1, BASE + 45_000, 1.0)])  # the watermark passes BASE + 30 s
    agg.checkpoint()
    agg.checkpoint()
    assert agg.series_count == 1  # counter 0 tombstoned
    agg.process(3, [sample(0, BASE + 50_000, 9.0)])
    [a] = [a for a in agg.close_idle() if a.labels == {"k": "0"}]
    assert (a.first, a.increase) == (9.0, 0.0)  # no step from the forgotten 5.0


def test_forgetting_does_not_depend_on_checkpoints() -> None:
    """The same messages with or without checkpoints (which tombstone) give the same
    counter fields: an expired carry is ignored whether or not it was tombstoned."""
    messages = [
        [sample(0, BASE, 5.0)],
        [sample(1, BASE + 95_000, 1.0)],
        [sample(0, BASE + 100_000, 9.0), sample(0, BASE + 101_000, 4.0)],
    ]
    plain = PartitionAggregator(WINDOWS, 0, counter_horizon_ms=60_000)
    checkpointed = PartitionAggregator(WINDOWS, 0, counter_horizon_ms=60_000)
    want = run_all(plain, messages)
    got: list[Aggregate] = []
    for offset, msg in enumerate(messages):
        got += checkpointed.process(offset, msg).closed
        checkpointed.checkpoint()
        checkpointed.checkpoint()
    got += checkpointed.close_idle()
    assert [a.to_record() for a in got] == [a.to_record() for a in want]
    last = [a for a in want if a.labels == {"k": "0"}][-1]
    assert (last.first, last.increase, last.resets) == (9.0, 4.0, 1)


def test_the_carry_survives_a_checkpoint_and_restore() -> None:
    messages = [[sample(0, BASE + t * 1_000, float(t * t))] for t in range(40)]
    want = run_all(PartitionAggregator(WINDOWS, 0), messages)
    agg = PartitionAggregator(WINDOWS, 0)
    got = []
    for offset, msg in enumerate(messages[:25]):
        got += agg.process(offset, msg).closed
    cp = agg.checkpoint()
    changelog = {k: pack_series(v) for k, v in cp.series if v is not None}
    restored = PartitionAggregator(WINDOWS, 0)
    restored.restore(
        unpack_meta(pack_meta(cp.meta)), [restore_record(k, v) for k, v in changelog.items()]
    )
    for offset, msg in enumerate(messages[25:], 25):
        got += restored.process(offset, msg).closed
    got += restored.close_idle()
    assert [a.to_record() for a in got] == [a.to_record() for a in want]
    assert sum(a.increase for a in got if a.window_ms == 10_000) == 39.0**2  # type: ignore[misc]


def test_a_version_1_state_restores_windows_without_counter_fields() -> None:
    """A state written before the counter fields: its open windows close with None (the
    readers fall back to inference); the carry starts with the next sample."""
    agg = PartitionAggregator((10_000,), 0)
    agg.process(0, [sample(0, BASE + 1_000, 3.0)])
    cp = agg.checkpoint()
    [(key, state)] = cp.series
    assert state is not None
    v2 = pack_series(state)
    v1 = b"\x01" + v2[1:9] + v2[25:29]  # version, applied offset, window count
    for w in state["windows"]:
        assert len(w["values"]) == 1
    v1 += v2[29 : 29 + 64] + v2[29 + 96 :]  # a window less its four counter fields
    assert unpack_series(v1)["carry_ts"] == -(2**62)
    restored = PartitionAggregator((10_000,), 0)
    restored.restore(unpack_meta(pack_meta(cp.meta)), [restore_record(key, v1)])
    restored.process(1, [sample(0, BASE + 2_000, 5.0)])
    [a] = restored.process(2, [sample(0, BASE + 12_000, 6.0)]).closed
    [b] = restored.close_idle()
    assert (a.count, a.last, a.first, a.increase, a.resets) == (2, 5.0, None, None, None)
    assert (b.first, b.increase) == (6.0, 1.0)
    assert math.isnan(unpack_series(v1)["carry"])


def test_pull_back_forgets_a_carry_from_the_future() -> None:
    """A sample from the future (state from before the skew bound) would make the next
    on-time sample look like a reset; pulled back, the sequence starts afresh."""
    agg = PartitionAggregator((10_000,), 0, vector_min=10**9)
    agg.process(0, [sample(0, BASE + 1_000, 5.0)])
    agg.process(1, [sample(0, BASE + 3_600_000, 1e9)])
    agg.pull_back(BASE + 2_000)
    agg.process(2, [sample(0, BASE + 2_000, 7.0)])
    [a] = [a for a in agg.close_idle() if a.window_start_ms == BASE]
    # (the window of 5.0 was closed early by the future watermark; its output stands)
    assert (a.count, a.first, a.increase, a.resets) == (1, 7.0, 0.0, 0)  # not a reset


def test_an_increase_that_overflows_is_unknown_not_infinite() -> None:
    agg = PartitionAggregator([10_000], 0)
    huge = [(1, 1.0), (2, 1e308), (3, -1e308), (4, 1e308)]  # steps overflow to +Inf
    agg.process(0, [sample(0, BASE + t, v) for t, v in huge])
    [a] = agg.process(1, [sample(0, BASE + 10_001, 1.0)]).closed
    assert (a.count, a.first, a.increase, a.resets) == (4, None, None, None)
