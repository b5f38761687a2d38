"""The hand-written Aggregate encoder writes exactly what fastavro writes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.streams.aggregate_encoding import AGGREGATE, AggregateEncoder
from monitoring.streams.codec import AvroCodec

CODEC = AvroCodec.from_directory()
longs = st.integers(-(2**63), 2**63 - 1)
doubles = st.floats(allow_nan=False)
series = st.tuples(
    st.text(max_size=20), st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
)
aggregates = series.flatmap(lambda s: st.builds(
    Aggregate,
    series=st.just(series_key(*s)),  # the cache is keyed by series: it fixes name and labels
    name=st.just(s[0]),
    labels=st.just(s[1]),
    window_ms=longs, window_start_ms=longs, window_end_ms=longs, count=longs,
    sum=doubles, min=doubles, max=doubles, mean=doubles, last=doubles,
    p50=doubles, p90=doubles, p99=doubles,
    closed_by=st.sampled_from(["watermark", "idle", "other"]),
))  # fmt: skip


@settings(max_examples=300)
@given(st.lists(aggregates, min_size=1, max_size=5))
def test_matches_fastavro(batch: list[Aggregate]) -> None:
    enc = AggregateEncoder(CODEC, max_series=3)
    assert enc.fast
    for a in batch + batch:  # the second time through the cache
        data = enc.encode(a)
        assert data == CODEC.encode(AGGREGATE, a.to_record())
        assert CODEC.decode(data).record == a.to_record()
