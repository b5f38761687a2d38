"""A sample stamped in the future must not blind its partition.

Through the worker's own path, in process: encoded messages with their Kafka record
timestamps -> ``SampleMessages`` (decode and check) -> ``PartitionAggregator``. A sample
more than ``max_record_skew`` ahead of its record's timestamp is rejected (alone, in a
batch); it neither lands in a window nor moves the watermark, so the on-time samples
around it are aggregated exactly and none is late.
"""

from __future__ import annotations

from typing import Any

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.agents.aggregation import SampleMessages
from monitoring.metrics.aggregator import Aggregate, PartitionAggregator
from monitoring.metrics.samples import Sample, SampleBatch, series_key
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
BATCH, SAMPLE = "monitoring.MetricBatch", "monitoring.MetricSample"
SKEW = 10_000
WINDOWS = (10_000, 60_000)
LATENESS = 5_000
BASE = 1_700_000_040_000 - 1_700_000_040_000 % 60_000
SERIES = [("temp", {"room": str(i)}) for i in range(6)]
KEYS = [series_key(n, lb) for n, lb in SERIES]


def batch(points: list[tuple[int, int, float]]) -> bytes:
    """A MetricBatch of (series number, timestamp, value)."""
    return CODEC.encode(
        BATCH,
        {
            "series": KEYS,
            "series_index": [i for i, _, _ in points],
            "timestamps_ms": [t for _, t, _ in points],
            "values": [v for _, _, v in points],
        },
    )


def single(i: int, ts: int, value: float) -> bytes:
    name, labels = SERIES[i]
    return CODEC.encode(
        SAMPLE, {"name": name, "value": value, "timestamp_ms": ts, "labels": labels}
    )


def sample(i: int, ts: int, value: float) -> Sample:
    name, labels = SERIES[i]
    return Sample(KEYS[i], name, labels, ts, value)


def through_the_worker(messages: list[tuple[bytes, int]]) -> dict[str, Any]:
    """Every message as the aggregation agent handles it; what came out."""
    reader = SampleMessages(CODEC, SKEW)
    agg = PartitionAggregator(WINDOWS, LATENESS)
    closed: list[Aggregate] = []
    late, rejected = [], []
    for offset, (value, record_ms) in enumerate(messages):
        d = reader.decode(value, record_ms)
        if d.error is not None:
            rejected.append((offset, None, d.error.reason))
        rejected += [(offset, i, e.reason) for i, e in d.rejected]
        res = agg.process(offset, d.samples)
        closed += res.closed
        late += res.late
        assert agg.watermark_ms <= record_ms + SKEW - LATENESS  # never ahead of the broker
    closed += agg.close_idle()
    return {"closed": closed, "late": late, "rejected": rejected}


def directly(messages: list[list[Sample]]) -> dict[str, Any]:
    agg = PartitionAggregator(WINDOWS, LATENESS)
    closed: list[Aggregate] = []
    late = []
    for offset, samples in enumerate(messages):
        res = agg.process(offset, SampleBatch.from_samples(samples) if samples else samples)
        closed += res.closed
        late += res.late
    return {"closed": closed + agg.close_idle(), "late": late}


def rows(closed: list[Aggregate]) -> list[tuple[Any, ...]]:
    return sorted(
        (a.series, a.window_ms, a.window_start_ms, a.count, a.sum, a.min, a.max, a.last)
        for a in closed
    )


def test_one_future_sample_among_on_time_ones_loses_nothing() -> None:
    messages: list[tuple[bytes, int]] = []
    clean: list[list[Sample]] = []
    for tick in range(120):
        t = BASE + tick * 1_000
        points = [(i, t + 10 * i, float(tick + i)) for i in range(len(SERIES))]
        ahead = []
        if tick == 40:  # 59 minutes ahead, in the middle of a batch
            ahead = [(2, t + 59 * 60_000, 1e6)]
        messages.append((batch(points[:3] + ahead + points[3:]), t + 300))
        clean.append([sample(*p) for p in points])
        if tick == 70:  # a single sample 30 minutes ahead: its whole message
            messages.append((single(0, t + 30 * 60_000, 1e6), t + 400))
            clean.append([])

    got = through_the_worker(messages)

    assert got["rejected"] == [(40, 3, "timestamp-in-future"), (71, None, "timestamp-in-future")]
    assert got["late"] == []
    assert rows(got["closed"]) == rows(directly(clean)["closed"])
    counts = {(a.window_ms, a.window_start_ms, a.series): a.count for a in got["closed"]}
    assert len(counts) == len(SERIES) * (12 + 2)  # every 10 s and 1 m window, every series
    assert all(n == (10 if w == 10_000 else 60) for (w, _, _), n in counts.items())


def test_a_sample_within_the_skew_is_kept() -> None:
    t = BASE
    d = SampleMessages(CODEC, SKEW).decode(batch([(0, t + SKEW, 1.0), (1, t + SKEW + 1, 2.0)]), t)
    assert [s.timestamp_ms for s in d.samples.samples()] == [t + SKEW]  # type: ignore[union-attr]
    ((i, e),) = d.rejected
    assert i == 1 and f"is {SKEW + 1} ms ahead of its record's timestamp" in str(e)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[tuple[bytes, int]], list[list[Sample]]]:
    """On-time messages (samples at most SKEW ahead of their record, or behind it), with
    future samples (further ahead) slipped into some of them."""
    messages, clean = [], []
    record_ms = BASE
    for _ in range(draw(st.integers(1, 25))):
        record_ms += draw(st.integers(0, 8_000))
        on_time = draw(
            st.lists(
                st.tuples(
                    st.integers(0, len(SERIES) - 1),
                    st.integers(record_ms - 20_000, record_ms + SKEW),
                    st.integers(-100, 100).map(float),
                ),
                max_size=6,
            )
        )
        future = draw(
            st.lists(
                st.tuples(
                    st.integers(0, len(SERIES) - 1),
                    st.integers(record_ms + SKEW + 1, record_ms + 2 * 3_600_000),
                    st.just(1e9),
                ),
                max_size=2,
            )
        )
        points = list(on_time)
        for f in future:
            points.insert(draw(st.integers(0, len(points))), f)
        if len(points) == 1 and future:
            messages.append((single(*points[0]), record_ms))
        else:
            messages.append((batch(points), record_ms))
        clean.append([sample(*p) for p in on_time])
    return messages, clean


@settings(max_examples=examples(150), deadline=None)
@given(streams())
def test_future_samples_change_nothing_but_the_dead_letters(
    stream: tuple[list[tuple[bytes, int]], list[list[Sample]]],
) -> None:
    messages, clean = stream
    got, want = through_the_worker(messages), directly(clean)
    assert rows(got["closed"]) == rows(want["closed"])
    assert [(x.sample, x.window_sizes_ms) for x in got["late"]] == [
        (x.sample, x.window_sizes_ms) for x in want["late"]
    ]
    assert all(reason == "timestamp-in-future" for _, _, reason in got["rejected"])


def test_a_checkpoint_written_with_a_future_watermark_is_pulled_back() -> None:
    """State from before the bound: a sample an hour ahead was taken and checkpointed.
    Restored and pulled back to the clock, the partition aggregates on-time samples
    again, exactly as if that sample had never come."""
    ticks = [[sample(i, BASE + t * 1_000 + 10 * i, float(t)) for i in range(3)] for t in range(40)]
    poisoned = PartitionAggregator(WINDOWS, LATENESS)
    for offset, msg in enumerate(ticks[:20]):
        poisoned.process(offset, msg)
    poisoned.process(20, [sample(1, BASE + 3_600_000, 1e9)])
    cp = poisoned.checkpoint()
    restored = PartitionAggregator(WINDOWS, LATENESS)
    series = [
        {"series": k, "name": "temp", "labels": {"room": k[11:-2]}, **v}
        for k, v in cp.series
        if v is not None
    ]
    restored.restore(cp.meta, series)
    assert restored.watermark_ms > BASE + 3_000_000  # blind: everything on time is late

    assert restored.pull_back(BASE + 20_000) == 2  # the future 10 s and 1 m windows
    assert restored.watermark_ms <= BASE + 20_000 - LATENESS
    closed, late = [], []
    for offset, msg in enumerate(ticks[20:], start=21):
        res = restored.process(offset, msg)
        closed += res.closed
        late += res.late
    closed += restored.close_idle()
    assert late == []
    # the windows the future watermark had closed early stay closed (that output is
    # gone); every window after it is exact
    clean = directly([*ticks[:20], [], *ticks[20:]])
    after = lambda aggs: [a for a in aggs if a.window_start_ms >= BASE + 20_000]  # noqa: E731
    assert rows(after(closed)) == rows(after(clean["closed"]))
    assert len(after(closed)) == 3 * 2  # two 10 s windows of every series
    assert {a.window_end_ms for a in closed} >= {BASE + 40_000, BASE + 60_000}
    assert restored.pull_back(BASE + 20_000) == 0  # nothing ahead any more
