"""Window logic against a brute-force oracle (hypothesis), including late events,
idle closing, and crash/restore from checkpoints written part-way."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any

import pytest
from ddsketch import DDSketch
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics.aggregator import (
    CHECKPOINT_KEY,
    COUNTER_HORIZON_MS,
    Aggregate,
    PartitionAggregator,
)
from monitoring.metrics.checkpoint import (
    pack_meta,
    pack_series,
    restore_record,
    unpack_meta,
    unpack_series,
)
from monitoring.metrics.samples import Sample, series_key
from monitoring.metrics.windows import EXACT_LIMIT, WindowAccumulator

ACCURACY = 0.01
SERIES = [("cpu", {"host": "a"}), ("cpu", {"host": "b"}), ("mem", {}), ("rps", {"svc": "x"})]


def mk(series_idx: int, ts: int, value: float) -> Sample:
    name, labels = SERIES[series_idx]
    return Sample(series_key(name, labels), name, labels, ts, value)


sample_st = st.builds(
    mk,
    st.integers(0, len(SERIES) - 1),
    st.integers(1_000_000, 1_000_000 + 120_000),
    st.integers(-500, 5000).map(lambda v: v / 4),  # dyadic: sums are exact in any order
)
messages_st = st.lists(st.lists(sample_st, min_size=1, max_size=5), min_size=1, max_size=60)
# samples per message from which the aggregator takes its numpy path: always, mixed, never
vector_min_st = st.sampled_from([1, 3, 10**9])
windows_st = st.sampled_from([(10_000,), (10_000, 60_000), (5_000, 15_000), (7_000,)])
lateness_st = st.sampled_from([0, 1_000, 5_000, 30_000])
# how long a counter's previous value is kept behind the watermark (None: the default)
horizon_st = st.sampled_from([None, 0, 5_000, 20_000])


def oracle(messages: list[list[Sample]], windows: tuple[int, ...], lateness: int) -> dict[str, Any]:
    """Brute force: every accepted sample per window, the step each window closes at."""
    wm = -math.inf
    max_ts = -math.inf
    accepted: dict[tuple[str, int, int], list[tuple[int, float]]] = defaultdict(list)
    late: list[tuple[int, str, int, tuple[int, ...]]] = []
    closed_at: dict[tuple[str, int, int], int] = {}
    for step, msg in enumerate(messages):
        for s in msg:
            sizes = []
            for w in windows:
                start = s.timestamp_ms - s.timestamp_ms % w
                if start + w <= wm:
                    sizes.append(w)
                else:
                    accepted[(s.series, w, start)].append((s.timestamp_ms, s.value))
            max_ts = max(max_ts, s.timestamp_ms)
            if sizes:
                late.append((step, s.series, s.timestamp_ms, tuple(sizes)))
        wm = max(wm, max_ts - lateness)
        for key in accepted:
            if key not in closed_at and key[2] + key[1] <= wm:
                closed_at[key] = step
    return {"accepted": accepted, "late": late, "closed_at": closed_at}


def counter_oracle(
    messages: list[list[Sample]],
    windows: tuple[int, ...],
    lateness: int,
    horizon: int | None = None,
) -> dict[tuple[str, int, int], tuple[float, float, int]]:
    """Brute force of the counter fields, (first, increase, resets) per window holding a
    sample of its series' counter sequence (module doc of ``aggregator``): samples in
    arrival order less those older than the series' newest, each stepping from the one
    before (a drop counts from 0) unless that one is older than the watermark the
    message saw minus the horizon (by default 5 minutes or the largest window)."""
    wm = max_ts = -math.inf
    if horizon is None:
        horizon = max(COUNTER_HORIZON_MS, *windows)
    carry: dict[str, tuple[int, float]] = {}
    out: dict[tuple[str, int, int], list[Any]] = {}
    for msg in messages:
        for s in msg:
            ts, v = s.timestamp_ms, s.value
            max_ts = max(max_ts, ts)
            prev = carry.get(s.series)
            fresh = prev is not None and prev[0] >= wm - horizon
            if prev is not None and fresh and ts < prev[0]:
                continue  # out of order
            step, reset = 0.0, False
            if prev is not None and fresh:
                reset = v < prev[1]
                step = v if reset else v - prev[1]
            carry[s.series] = (ts, v)
            for w in windows:
                start = ts - ts % w
                if start + w > wm:
                    c = out.setdefault((s.series, w, start), [v, 0.0, 0])
                    c[1] += step
                    c[2] += reset
        wm = max(wm, max_ts - lateness)
    return {k: (c[0], c[1], c[2]) for k, c in out.items()}


def check_counter(a: Aggregate, expected: dict[tuple[str, int, int], tuple[float, float, int]]):
    want = expected.get((a.series, a.window_ms, a.window_start_ms), (None, None, None))
    assert (a.first, a.increase, a.resets) == want


def check_aggregate(a: Aggregate, points: list[tuple[int, float]]) -> None:
    values = [v for _, v in points]
    assert a.count == len(values)
    assert a.sum == sum(values)
    assert a.min == min(values) and a.max == max(values)
    assert a.mean == sum(values) / len(values)
    best_ts = max(t for t, _ in points)
    assert a.last == [v for t, v in points if t == best_ts][-1]
    ordered = sorted(values)
    for q, est in ((0.5, a.p50), (0.9, a.p90), (0.99, a.p99)):
        exact = ordered[math.floor(q * (len(ordered) - 1))]
        assert abs(est - exact) <= ACCURACY * abs(exact) + 1e-9, (q, est, exact)


def run(agg: PartitionAggregator, messages: list[list[Sample]], first_offset: int = 0):
    emitted: list[tuple[int, Aggregate]] = []
    late = []
    for i, msg in enumerate(messages):
        res = agg.process(first_offset + i, msg)
        emitted += [(i, a) for a in res.closed]
        late += [(i, x) for x in res.late]
    return emitted, late


@settings(max_examples=examples(300), deadline=None)
@given(messages_st, windows_st, lateness_st, vector_min_st, horizon_st)
def test_windows_match_oracle(messages, windows, lateness, vector_min, horizon):
    expected = oracle(messages, windows, lateness)
    agg = PartitionAggregator(windows, lateness, ACCURACY, vector_min, counter_horizon_ms=horizon)
    emitted, late = run(agg, messages)
    # windows close at the step where the watermark passes their end, once each
    got_closed = {(a.series, a.window_ms, a.window_start_ms): step for step, a in emitted}
    assert len(got_closed) == len(emitted)
    assert got_closed == expected["closed_at"]
    # late samples: which, when, for which sizes
    assert [(i, x.sample.series, x.sample.timestamp_ms, x.window_sizes_ms) for i, x in late] == (
        expected["late"]
    )
    assert agg.late_count == len(expected["late"])
    # idle close flushes the rest; every window's statistics are exact
    rest = agg.close_idle()
    assert all(a.closed_by == "idle" for a in rest)
    everything = [a for _, a in emitted] + rest
    assert {(a.series, a.window_ms, a.window_start_ms) for a in everything} == set(
        expected["accepted"]
    )
    counters = counter_oracle(messages, windows, lateness, horizon)
    for a in everything:
        assert a.window_end_ms == a.window_start_ms + a.window_ms
        check_aggregate(a, expected["accepted"][(a.series, a.window_ms, a.window_start_ms)])
        check_counter(a, counters)
    assert agg.open_windows == 0


def test_idle_close_makes_later_samples_late():
    agg = PartitionAggregator((10_000,), 5_000)
    agg.process(0, [mk(0, 1_000_003, 1.0)])
    [a] = agg.close_idle()
    assert (a.window_start_ms, a.count, a.closed_by) == (1_000_000, 1, "idle")
    res = agg.process(1, [mk(0, 1_000_004, 2.0), mk(1, 1_010_001, 3.0)])
    assert [x.sample.value for x in res.late] == [2.0]
    assert agg.open_windows == 1


@pytest.mark.parametrize("n", [5, EXACT_LIMIT, EXACT_LIMIT + 1, 1000])
def test_window_accumulator_state_round_trip(n):
    w = WindowAccumulator(ACCURACY)
    for i in range(n):
        w.add(i, (i % 37) * 1.5 - 10)
    counter = {"first": 0.0, "first_ts": 0, "increase": 0.0, "resets": 0}
    window = {**w.to_state(), **counter, "window_ms": 10, "start_ms": 0}
    state = {"applied_offset": 3, "carry": 1.0, "carry_ts": 1, "windows": [window]}
    [packed] = unpack_series(pack_series(state))["windows"]
    r = WindowAccumulator.from_state(packed, ACCURACY)
    for i in range(50):
        w.add(2000 + i, i * 100.0)
        r.add(2000 + i, i * 100.0)
    qs = (0.0, 0.1, 0.5, 0.9, 0.99, 1.0)
    assert r.quantiles(qs) == w.quantiles(qs)
    assert (r.count, r.sum, r.min, r.max, r.last) == (w.count, w.sum, w.min, w.max, w.last)


def test_large_windows_use_the_sketch_within_its_accuracy():
    agg = PartitionAggregator((60_000,), 0, ACCURACY)
    samples = [mk(0, 1_020_000 + i * 10, float((i * 7919) % 1000 - 300)) for i in range(3000)]
    agg.process(0, samples)
    [a] = agg.close_idle()
    check_aggregate(a, [(s.timestamp_ms, s.value) for s in samples])


def test_chunked_sketch_adds_match_one_at_a_time_adds():
    """Values past EXACT_LIMIT enter the sketch in numpy chunks: every bucket, the zero
    count, the totals and so every quantile equal ddsketch's own one-by-one adds."""
    rng = random.Random(5)
    values = [0.0, 1e-300, -1e-300, 1.0, -1.0, 2.0**40]
    values += [rng.choice((-1, 1)) * rng.lognormvariate(0, 6) for _ in range(5000)]
    values += [float(rng.randint(-50, 50)) for _ in range(2000)]
    w = WindowAccumulator(ACCURACY)
    one = DDSketch(ACCURACY)
    for i, v in enumerate(values):
        w.add(i, v)
        one.add(v)
    qs = (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0)
    assert w.quantiles(qs) == tuple(one.get_quantile_value(q) for q in qs)
    s = w.sketch
    for mine, theirs in ((s._store, one._store), (s._negative_store, one._negative_store)):
        assert (mine.min_key, mine.max_key, mine.count) == (
            theirs.min_key,
            theirs.max_key,
            theirs.count,
        )
        lo, hi = mine.min_key - mine.offset, mine.max_key - mine.offset
        tlo, thi = theirs.min_key - theirs.offset, theirs.max_key - theirs.offset
        assert mine.bins[lo : hi + 1] == theirs.bins[tlo : thi + 1]
    assert (s._zero_count, s._count) == (one._zero_count, one._count)


def _apply(changelog: dict[str, bytes], records: list[tuple[str, Any]]) -> None:
    """Write records as the agent does: packed bytes, None deletes (compaction)."""
    for key, value in records:
        if value is None:
            changelog.pop(key, None)
        else:
            changelog[key] = pack_series(value)


def _restored(
    changelog: dict[str, bytes], windows, lateness, vector_min, horizon=None
) -> PartitionAggregator:
    agg = PartitionAggregator(windows, lateness, ACCURACY, vector_min, counter_horizon_ms=horizon)
    meta = changelog.get(CHECKPOINT_KEY)
    records = [restore_record(k, v) for k, v in changelog.items() if k != CHECKPOINT_KEY]
    agg.restore(unpack_meta(meta) if meta else None, records)
    return agg


@settings(max_examples=examples(300), deadline=None)
@given(
    messages_st,
    windows_st,
    lateness_st,
    vector_min_st,
    horizon_st,
    st.data(),
)
def test_crash_and_restore_gives_the_same_windows(
    messages, windows, lateness, vector_min, horizon, data
):
    reference = PartitionAggregator(windows, lateness, ACCURACY, counter_horizon_ms=horizon)
    ref_emitted, _ = run(reference, messages)
    ref_all = {(a.series, a.window_ms, a.window_start_ms): a for _, a in ref_emitted}
    ref_all.update({(a.series, a.window_ms, a.window_start_ms): a for a in reference.close_idle()})

    n = len(messages)
    changelog: dict[str, bytes] = {}
    committed = 0  # next offset the consumer resumes from
    versions: dict[tuple[str, int, int], list[Aggregate]] = defaultdict(list)
    agg = PartitionAggregator(windows, lateness, ACCURACY, vector_min, counter_horizon_ms=horizon)
    offset = 0
    crashes = data.draw(st.integers(0, 3))
    for _ in range(crashes + 1):
        stop = data.draw(st.integers(offset, n))
        while offset < stop:
            for a in agg.process(offset, messages[offset]).closed:
                versions[(a.series, a.window_ms, a.window_start_ms)].append(a)
            offset += 1
            if data.draw(st.booleans()):
                cp = agg.checkpoint()
                # a crash may cut the checkpoint short: a prefix of the series records
                if data.draw(st.integers(0, 9)) == 0:
                    cut = data.draw(st.integers(0, len(cp.series)))
                    _apply(changelog, cp.series[:cut])
                    break
                _apply(changelog, cp.series)
                changelog[CHECKPOINT_KEY] = pack_meta(cp.meta)
                # offsets are committed some time after the checkpoint, maybe never
                if data.draw(st.booleans()):
                    committed = data.draw(st.integers(committed, cp.offset + 1))
        # crash: in-memory state is lost; restart from the changelog and the commit
        agg = _restored(changelog, windows, lateness, vector_min, horizon)
        offset = committed
    while offset < n:
        for a in agg.process(offset, messages[offset]).closed:
            versions[(a.series, a.window_ms, a.window_start_ms)].append(a)
        offset += 1
    for a in agg.close_idle():
        versions[(a.series, a.window_ms, a.window_start_ms)].append(a)

    assert set(versions) == set(ref_all)
    for key, vs in versions.items():
        expected = ref_all[key]
        for v in vs:  # re-emitted after a crash: identical, so the store keeps one row
            assert (v.first, v.increase, v.resets) == (
                expected.first,
                expected.increase,
                expected.resets,
            )
            assert (v.count, v.sum, v.min, v.max, v.last, v.p50, v.p90, v.p99) == (
                expected.count,
                expected.sum,
                expected.min,
                expected.max,
                expected.last,
                expected.p50,
                expected.p90,
                expected.p99,
            )


def test_rejects_bad_window_sizes():
    with pytest.raises(ValueError):
        PartitionAggregator((), 0)
    with pytest.raises(ValueError):
        PartitionAggregator((0,), 0)


@pytest.mark.parametrize("compact_min", [64, 1 << 18])
@pytest.mark.parametrize("vector_min", [1, 10**9])
def test_busy_series_through_sketches_compaction_and_restore(monkeypatch, compact_min, vector_min):
    """Series past EXACT_LIMIT values per window move into DDSketches (when a window's
    buffer passes its compaction point, and at checkpoints); a checkpoint taken half-way
    and restored gives the windows an uninterrupted run gives, quantiles included."""
    monkeypatch.setattr("monitoring.metrics.window_columns.COMPACT_MIN", compact_min)
    rng = random.Random(11)
    messages = [
        [mk(rng.randrange(3), 1_020_000 + m * 300 + j, rng.lognormvariate(0, 2) - 1.0)
         for j in range(40)]
        for m in range(300)
    ]  # fmt: skip
    reference = PartitionAggregator((60_000,), 1_000, ACCURACY, vector_min)
    ref, _ = run(reference, messages)
    ref_all = {(a.series, a.window_start_ms): a for _, a in ref} | {
        (a.series, a.window_start_ms): a for a in reference.close_idle()
    }
    agg = PartitionAggregator((60_000,), 1_000, ACCURACY, vector_min)
    got, _ = run(agg, messages[:150])
    changelog: dict[str, bytes] = {}
    cp = agg.checkpoint()
    _apply(changelog, cp.series)
    changelog[CHECKPOINT_KEY] = pack_meta(cp.meta)
    assert any(unpack_series(v)["windows"][0]["values"] is None for v in changelog.values()
               if len(v) > 30)  # fmt: skip
    restored = _restored(changelog, (60_000,), 1_000, vector_min)
    more, _ = run(restored, messages[150:], first_offset=150)
    got_all = {(a.series, a.window_start_ms): a for _, a in got + more} | {
        (a.series, a.window_start_ms): a for a in restored.close_idle()
    }
    assert set(got_all) == set(ref_all) and len(ref_all) == 3 * 2
    points = defaultdict(list)
    for s in (s for msg in messages for s in msg):
        points[(s.series, s.timestamp_ms - s.timestamp_ms % 60_000)].append(
            (s.timestamp_ms, s.value)
        )
    for key, a in got_all.items():
        r = ref_all[key]
        assert (a.count, a.min, a.max, a.last, a.p50, a.p90, a.p99) == (
            r.count, r.min, r.max, r.last, r.p50, r.p90, r.p99,
        )  # fmt: skip
        assert a.sum == pytest.approx(r.sum, rel=1e-12)
        assert a.count > EXACT_LIMIT
        check_aggregate_approx(a, points[key])


def check_aggregate_approx(a: Aggregate, points: list[tuple[int, float]]) -> None:
    """``check_aggregate`` for values whose float sum depends on the order of adds."""
    values = [v for _, v in points]
    assert (a.count, a.min, a.max) == (len(values), min(values), max(values))
    assert a.sum == pytest.approx(math.fsum(values), rel=1e-9)
    ordered = sorted(values)
    for q, est in ((0.5, a.p50), (0.9, a.p90), (0.99, a.p99)):
        exact = ordered[math.floor(q * (len(ordered) - 1))]
        assert abs(est - exact) <= ACCURACY * abs(exact) + 1e-9, (q, est, exact)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.lists(st.integers(-20, 20).map(lambda v: v / 2), min_size=0, max_size=30),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
)
def test_group_quantiles_padded_matrix_and_sort_agree_with_sorted(groups, dense):
    """Both ways of ``window_columns._group_quantiles`` give each group's exact ranks."""
    import numpy as np

    from monitoring.metrics import window_columns as wc

    sizes = np.array([len(g) for g in groups], np.int64)
    lo = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    values = np.array([v for g in groups for v in g], float)
    exact = sizes <= 25
    saved = wc._DENSE_FACTOR, wc._DENSE_SLACK
    wc._DENSE_FACTOR, wc._DENSE_SLACK = (10**6, 10**6) if dense else (0, -1)
    try:
        got = wc._group_quantiles(values, lo, sizes, exact)
    finally:
        wc._DENSE_FACTOR, wc._DENSE_SLACK = saved
    for g, (group, is_exact) in enumerate(zip(groups, exact.tolist(), strict=True)):
        if not is_exact or not group:
            continue
        ordered = sorted(group)
        for row, q in enumerate((0.5, 0.9, 0.99)):
            assert got[row, g] == ordered[math.floor(q * (len(group) - 1))]


@settings(max_examples=examples(40), deadline=None)
@given(st.integers(0, 2**32), vector_min_st)
def test_many_series_grow_the_slots_and_reuse_freed_ones(seed, vector_min):
    """Hundreds of series that come and go: the per-slot arrays grow while windows are
    open, checkpoints tombstone series without windows and free their slots, and new
    series reuse them; every window still equals the oracle."""
    rng = random.Random(seed)
    names = [("up", {"job": f"j{i}"}) for i in range(400)]
    messages = []
    for m in range(120):  # each series lives for a stretch of event time, then stops
        t = 1_000_000 + m * 2_000
        live = [i for i in range(400) if (i * 7) % 400 <= m * 4 < (i * 7) % 400 + 120]
        picked = rng.sample(live, min(len(live), rng.randint(1, 60))) if live else []
        messages.append(
            [Sample(series_key(*names[i]), *names[i], t + rng.randrange(2_000), float(i))
             for i in picked]
        )  # fmt: skip
    messages = [msg for msg in messages if msg]
    windows, lateness = (10_000, 60_000), 1_000
    expected = oracle(messages, windows, lateness)
    # a horizon shorter than the series' lifetimes: past it they free their slots
    agg = PartitionAggregator(windows, lateness, ACCURACY, vector_min, counter_horizon_ms=60_000)
    emitted = []
    for i, msg in enumerate(messages):
        emitted += agg.process(i, msg).closed
        if i % 5 == 4:
            agg.checkpoint()
    emitted += agg.close_idle()
    got = {(a.series, a.window_ms, a.window_start_ms): a for a in emitted}
    assert len(got) == len(emitted)
    assert set(got) == set(expected["accepted"])
    counters = counter_oracle(messages, windows, lateness, 60_000)
    for key, a in got.items():
        check_aggregate(a, expected["accepted"][key])
        check_counter(a, counters)
    distinct = len({s.series for msg in messages for s in msg})
    assert agg._cap > 64  # grew while windows were open
    assert len(agg._keys) < distinct  # freed slots were reused
