"""Idle close in the middle of a stream (``PartitionAggregator.close_idle``), against a
brute-force oracle (hypothesis).

The case that went wrong (tests/integration/test_ha_failover.py's producer): 10 s and
1 min windows, samples up to 149 s, an idle close, then a burst from 150 s on. The idle
close raised the watermark to the end of the minute it closed (180 s), so the burst's
samples of 150-179 s were late for the 10 s size too, although newer than every sample
seen and their 10 s windows never opened: no 10 s window ended at 160, 170 or 180 s,
and the close mark said the partition was complete through 180 s.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics.aggregator import CHECKPOINT_KEY, Aggregate, PartitionAggregator
from monitoring.metrics.checkpoint import pack_meta, restore_record, unpack_meta
from monitoring.metrics.samples import Sample, series_key

SERIES = [("cpu", {"host": "a"}), ("cpu", {"host": "b"}), ("mem", {})]
IDLE = "idle"  # a step of the stream: the partition was quiet, close_idle() is called


def mk(i: int, ts: int, value: float) -> Sample:
    name, labels = SERIES[i]
    return Sample(series_key(name, labels), name, labels, ts, value)


sample_st = st.builds(
    mk,
    st.integers(0, len(SERIES) - 1),
    st.integers(1_000_000, 1_000_000 + 150_000),
    st.integers(-100, 1000).map(lambda v: v / 4),
)
step_st = st.one_of(st.just(IDLE), st.lists(sample_st, min_size=1, max_size=4))
steps_st = st.lists(step_st, min_size=1, max_size=40)
windows_st = st.sampled_from([(10_000, 60_000), (5_000, 15_000), (7_000, 10_000), (10_000,)])
lateness_st = st.sampled_from([0, 1_000, 5_000, 30_000])
vector_min_st = st.sampled_from([1, 3, 10**9])

Key = tuple[str, int, int]  # series, window size, start


def oracle(steps: list[Any], windows: tuple[int, ...], lateness: int) -> dict[str, Any]:
    """Brute force of the documented semantics (docs/aggregation.md, "Idle close"):

    * the watermark after a message is max event time - lateness (never going back);
    * an idle close closes every window holding a sample and not closed yet; for each
      size, every window up to the one holding the greatest event time seen so far
      counts as closed from then on, and the watermark rises to the earliest of those
      windows' ends over the sizes;
    * a sample is late for a size if its window of that size counts as closed (ends by
      the watermark, or was closed by an idle close).
    """
    wm = max_ts = -math.inf
    idle_end: dict[int, float] = dict.fromkeys(windows, -math.inf)  # closed through, per size
    accepted: dict[Key, list[tuple[int, float]]] = defaultdict(list)
    published: dict[Key, int] = {}  # the step at which each window is published
    late: list[tuple[int, str, int, tuple[int, ...]]] = []
    marks: list[tuple[int, float]] = []  # (step, closed-through) after each close
    for step, msg in enumerate(steps):
        if msg == IDLE:
            open_ = [k for k in accepted if k not in published]
            if not open_:
                continue
            for key in open_:
                published[key] = step
            for w in windows:
                idle_end[w] = max(idle_end[w], max_ts - max_ts % w + w)
            wm = max(wm, min(idle_end.values()))
            marks.append((step, wm))
            continue
        for s in msg:
            sizes = []
            for w in windows:
                start = s.timestamp_ms - s.timestamp_ms % w
                if start + w <= max(wm, idle_end[w]):
                    sizes.append(w)
                else:
                    accepted[(s.series, w, start)].append((s.timestamp_ms, s.value))
            max_ts = max(max_ts, s.timestamp_ms)
            if sizes:
                late.append((step, s.series, s.timestamp_ms, tuple(sizes)))
        wm = max(wm, max_ts - lateness)
        due = [k for k in accepted if k not in published and k[2] + k[1] <= wm]
        for key in due:
            published[key] = step
        if due:
            marks.append((step, wm))
    return {"accepted": accepted, "published": published, "late": late, "marks": marks}


def run(agg: PartitionAggregator, steps: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """(step, aggregate) published, (step, late) samples, (step, watermark) after each
    close, as the agent marks it."""
    emitted: list[tuple[int, Aggregate]] = []
    late: list[tuple[int, Any]] = []
    marks: list[tuple[int, int]] = []
    for i, msg in enumerate(steps):
        if msg == IDLE:
            closed = agg.close_idle()
        else:
            res = agg.process(i, msg)
            closed = res.closed
            late += [(i, x) for x in res.late]
        emitted += [(i, a) for a in closed]
        if closed:
            marks.append((i, agg.watermark_ms))
    return emitted, late, marks


@settings(max_examples=examples(300), deadline=None)
@given(steps_st, windows_st, lateness_st, vector_min_st)
def test_idle_closes_anywhere_match_the_oracle(steps, windows, lateness, vector_min):
    expected = oracle(steps, windows, lateness)
    agg = PartitionAggregator(windows, lateness, 0.01, vector_min)
    emitted, late, marks = run(agg, steps)
    got = {(a.series, a.window_ms, a.window_start_ms): step for step, a in emitted}
    assert len(got) == len(emitted)  # each window published once
    assert got == expected["published"]
    assert [(i, x.sample.series, x.sample.timestamp_ms, x.window_sizes_ms) for i, x in late] == (
        expected["late"]
    )
    assert marks == expected["marks"]
    for _, a in emitted:
        points = expected["accepted"][(a.series, a.window_ms, a.window_start_ms)]
        assert a.count == len(points) and a.sum == sum(v for _, v in points)


@settings(max_examples=examples(300), deadline=None)
@given(steps_st, windows_st, lateness_st, vector_min_st)
def test_no_sample_newer_than_all_before_it_is_late_and_marks_hold(
    steps, windows, lateness, vector_min
):
    """What a reader relies on, whatever the oracle says: a sample is on time for a size
    when its window of that size starts after every sample before it (that window never
    opened, so nothing can have closed it); no window is published after a close mark at
    or past its end (the alert evaluator took that end as complete); every sample is in
    a published window or late, for each size."""
    agg = PartitionAggregator(windows, lateness, 0.01, vector_min)
    emitted, late, marks = run(agg, [*steps, IDLE])  # the rest flushed at the end
    late_sizes = {(i, x.sample.series, x.sample.timestamp_ms): x.window_sizes_ms for i, x in late}
    newest = -math.inf
    for i, msg in enumerate(steps):
        if msg == IDLE:
            continue
        for s in msg:
            ts = s.timestamp_ms
            for w in late_sizes.get((i, s.series, ts), ()):
                assert ts - ts % w <= newest, (i, s, w)
        newest = max([newest, *(s.timestamp_ms for s in msg)])
    for step, a in emitted:
        assert not [m for s, m in marks if s < step and m >= a.window_end_ms], (step, a)
    counted = sum(a.count for _, a in emitted) + sum(len(x.window_sizes_ms) for _, x in late)
    n = sum(len(m) for m in steps if m != IDLE)
    assert counted == n * len(windows)


def burst(windows: range, start: int) -> list[list[Sample]]:
    """The HA test's producer: three series, ten samples a second apart per 10 s window,
    one message per window."""
    return [[mk(r, start + w * 10_000 + i * 1_000, 50.0) for r in range(3) for i in range(10)]
            for w in windows]  # fmt: skip


def test_a_burst_after_an_idle_close_fills_every_10s_window() -> None:
    start = 1_800_000_000_000 - 1_800_000_000_000 % 60_000
    agg = PartitionAggregator((10_000, 60_000), 5_000)
    steps: list[Any] = [*burst(range(15), start), IDLE, *burst(range(15, 30), start)]
    emitted, late, marks = run(agg, steps)
    emitted += [(len(steps), a) for a in agg.close_idle()]
    ends = sorted({a.window_end_ms - start for _, a in emitted if a.window_ms == 10_000})
    assert ends == list(range(10_000, 300_001, 10_000))  # 160, 170 and 180 s were missing
    # the idle close marks 150 s, not the minute's end; the minute it closed (120-180 s)
    # is published once, and the burst's 150-179 s samples are late for that size only
    assert marks[14] == (15, start + 150_000)
    assert {(i, x.window_sizes_ms) for i, x in late} == {(16, (60_000,)), (17, (60_000,)),
                                                         (18, (60_000,))}  # fmt: skip
    assert len(late) == 90
    minute = [(a.count, a.closed_by) for _, a in emitted
              if a.window_ms == 60_000 and a.window_start_ms == start + 120_000]  # fmt: skip
    assert minute == [(30, "idle")] * 3  # 120-149 s of each series


def test_the_idle_close_survives_a_checkpoint() -> None:
    """A partition restored after an idle close treats the burst as the original does."""
    start = 1_800_000_000_000 - 1_800_000_000_000 % 60_000
    agg = PartitionAggregator((10_000, 60_000), 5_000)
    for i, msg in enumerate(burst(range(15), start)):
        agg.process(i, msg)
    agg.close_idle()
    cp = agg.checkpoint()
    meta = unpack_meta(pack_meta(cp.meta))
    assert meta["idle_event_ms"] == start + 149_000
    restored = PartitionAggregator((10_000, 60_000), 5_000)
    restored.restore(meta, [restore_record(k, _packed(v)) for k, v in cp.series if v])
    assert CHECKPOINT_KEY not in {k for k, _ in cp.series}
    for agg_ in (agg, restored):
        late = [agg_.process(15 + i, m).late for i, m in enumerate(burst(range(15, 18), start))]
        assert [{x.window_sizes_ms for x in lt} for lt in late] == [{(60_000,)}] * 3


def _packed(state: dict[str, Any]) -> bytes:
    from monitoring.metrics.checkpoint import pack_series

    return pack_series(state)


def test_a_partition_record_without_the_idle_time_reads_as_never_idle() -> None:
    meta = {"checkpoint_offset": 1, "max_event_ms": 2, "watermark_ms": 3}
    assert "idle_event_ms" not in unpack_meta(pack_meta(meta))
    agg = PartitionAggregator((10_000,), 0)
    agg.restore(unpack_meta(pack_meta(meta)), [])
    assert agg.checkpoint().meta["idle_event_ms"] == -(2**62)
