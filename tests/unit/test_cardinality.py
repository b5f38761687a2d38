"""Series limits of the aggregation (``PartitionAggregator.admit``): whatever the
messages, no more than the bounds hold a slot, the admitted series aggregate exactly as
an unbounded aggregator fed only their samples, and a series closed by a checkpoint
makes room. Batches (columns) and single samples alike."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics.aggregator import PartitionAggregator
from monitoring.metrics.samples import Sample, SampleBatch, SeriesInfo, series_key

W = 10_000


def sample(metric: int, ident: int, ts: int, value: float) -> Sample:
    name, labels = f"m{metric}", {"id": str(ident)}
    return Sample(series_key(name, labels), name, labels, ts, value)


message_st = st.lists(
    st.builds(sample, st.integers(0, 2), st.integers(0, 12),
              st.integers(1_000_000, 1_060_000), st.integers(-100, 100).map(float)),
    min_size=1, max_size=8,
)  # fmt: skip


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(message_st, min_size=1, max_size=40),
    st.integers(1, 10),
    st.integers(1, 5),
    st.booleans(),
    st.integers(1, 10),
)
def test_bounds_hold_and_admitted_series_are_exact(
    messages: list[list[Sample]], max_series: int, per_metric: int, columns: bool, every: int
) -> None:
    bounded = PartitionAggregator([W], 0, max_series=max_series, max_series_per_metric=per_metric)
    plain = PartitionAggregator([W], 0)
    out_b, out_p = [], []
    for offset, msg in enumerate(messages):
        batch = SampleBatch.from_samples(msg) if columns else msg
        kept, refused = bounded.admit(batch)
        kept_samples = kept.samples() if isinstance(kept, SampleBatch) else list(kept)
        assert {s.series for s in kept_samples}.isdisjoint(refused)
        assert {s.series for s in msg} == {s.series for s in kept_samples} | set(refused)
        out_b += bounded.process(offset, kept).closed
        out_p += plain.process(offset, kept_samples).closed
        assert bounded.series_count <= max_series
        names = [bounded._names[slot] for slot in bounded._slot_of.values()]
        assert all(names.count(n) <= per_metric for n in set(names))
        if offset % every == 0:
            bounded.checkpoint()
            plain.checkpoint()
    out_b += bounded.close_idle()
    out_p += plain.close_idle()
    assert sorted(map(repr, out_b)) == sorted(map(repr, out_p))


def test_a_checkpoint_frees_closed_series_for_new_ones() -> None:
    # a counter's previous value is kept a horizon past its windows: one window here
    agg = PartitionAggregator([W], 0, max_series=2, counter_horizon_ms=W)
    kept, refused = agg.admit([sample(0, i, 1_000_000, 1.0) for i in range(3)])
    assert len(kept) == 2 and refused == [series_key("m0", {"id": "2"})]
    agg.process(0, kept)
    agg.process(1, [sample(0, 0, 1_020_000, 1.0)])  # closes the first window
    agg.checkpoint()  # the id 1 series has no open window left: tombstoned, slot freed
    agg.checkpoint()
    assert agg.series_count == 1
    kept, refused = agg.admit([sample(0, 2, 1_020_000, 1.0)])
    assert refused == [] and len(kept) == 1


def distinct_series(m: int, size: int) -> SampleBatch:
    """Message ``m``: ``size`` samples of as many new series (``m0{id="..."}``), built as
    columns (a million ``Sample`` values under tracemalloc cost most of the test)."""
    ids = [str(m * size + i) for i in range(size)]
    return SampleBatch(
        [SeriesInfo(f'm0{{id="{i}"}}', "m0", {"id": i}) for i in ids],
        np.arange(size, dtype=np.int64),
        np.full(size, 1_000_000 + m, np.int64),
        np.ones(size),
    )


def test_distinct_series_are_the_samples_they_stand_for() -> None:
    msg = [sample(0, 3 * 50 + i, 1_000_003, 1.0) for i in range(50)]
    got, want = distinct_series(3, 50), SampleBatch.from_samples(msg)
    assert got.series == want.series
    for column in ("series_index", "timestamps_ms", "values"):
        assert np.array_equal(getattr(got, column), getattr(want, column))
        assert getattr(got, column).dtype == getattr(want, column).dtype


@pytest.mark.parametrize("n", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_a_million_series_cost_the_bound_not_the_million(n: int) -> None:
    """``n`` distinct series in batches of 2,000 samples: at most 10,000 hold a slot,
    the rest are refused and counted, and memory follows the bound (the fast lane
    runs a tenth of the million, ``make test`` the million)."""
    agg = PartitionAggregator([W, 60_000], 5_000, max_series=10_000,
                              max_series_per_metric=10_000)  # fmt: skip
    tracemalloc.start()
    refused_total = 0
    for m in range(n // 2_000):
        kept, refused = agg.admit(distinct_series(m, 2_000))
        refused_total += len(refused)
        agg.process(m, kept)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert agg.series_count == 10_000 and refused_total == n - 10_000
    assert agg.refused_count == n - 10_000
    print(f"peak traced memory with 10,000 of {n:,} series: {peak / 2**20:.1f} MiB")
    assert peak < 64 * 2**20
    kept, refused = agg.admit(SampleBatch.from_samples([sample(0, 5, 1_000_600, 2.0)]))
    assert not refused and isinstance(kept, SampleBatch)
    assert np.array_equal(kept.values, [2.0])


def test_series_caches_are_bounded_in_bytes() -> None:
    """Keys near the label-length limit: the caches empty themselves at their budget."""
    from monitoring.metrics.samples import BATCH, SampleDecoder
    from monitoring.sinks.clickhouse.rows import SeriesIds

    d = SampleDecoder(max_cache_bytes=1 << 20)
    ids = SeriesIds(max_bytes=1 << 20)
    for m in range(50):
        keys = [series_key("m", {"id": f"{m}-{i}", "pad": "x" * 4_000}) for i in range(10)]
        rec = {"series": keys, "kinds": [], "units": [], "series_index": list(range(10)),
               "timestamps_ms": [1_700_000_000_000] * 10, "values": [1.0] * 10}  # fmt: skip
        assert len(d.columns(BATCH, rec, 1_700_000_000_000).batch.series) == 10
        ids.many(keys)
        assert d._cache_bytes <= d.max_cache_bytes and ids._bytes <= ids.max_bytes
    assert 0 < len(d._series) < 500 and 0 < len(ids._ids) < 500


def test_the_refused_counters_name_carries_no_other_series_past_the_bounds() -> None:
    # only the shape the aggregators publish passes: one series per samples partition
    agg = PartitionAggregator([W], 0, max_series=10, max_series_per_metric=10)
    name = "monitoring_series_refused_total"
    own = [Sample(series_key(name, {"partition": str(p)}), name, {"partition": str(p)},
                  1_000_000, 1.0) for p in range(12)]  # fmt: skip
    forged = [Sample(series_key(name, {"req": str(i)}), name, {"req": str(i)}, 1_000_000, 1.0)
              for i in range(5_000)]  # fmt: skip
    kept, refused = agg.admit([*own, *forged])
    assert len(kept) == 12 + 10 and len(refused) == 5_000 - 10  # the bound takes 10 of them
