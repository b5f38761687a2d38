"""The hand-written Aggregate encoder writes exactly what fastavro writes."""

from __future__ import annotations

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.wire.aggregate_encoding import AGGREGATE, AggregateDecoder, AggregateEncoder
from monitoring.wire.codec import AvroCodec

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
    first=st.none() | doubles, increase=st.none() | doubles, resets=st.none() | longs,
))  # fmt: skip


@settings(max_examples=examples(300))
@given(st.lists(aggregates, min_size=1, max_size=5))
def test_matches_fastavro(batch: list[Aggregate]) -> None:
    enc = AggregateEncoder(CODEC, max_series=3)
    assert enc.fast
    for a in batch + batch:  # the second time through the cache
        data = enc.encode(a)
        assert data == CODEC.encode(AGGREGATE, a.to_record())
        assert CODEC.decode(data).record == a.to_record()
    expected = [CODEC.encode(AGGREGATE, a.to_record()) for a in batch + batch]
    assert AggregateEncoder(CODEC, max_series=3).encode_all(batch + batch) == expected


@settings(max_examples=examples(300))
@given(st.lists(aggregates, min_size=1, max_size=5))
def test_decoder_reads_what_fastavro_writes(batch: list[Aggregate]) -> None:
    dec = AggregateDecoder(CODEC, max_series=3)
    assert dec.fast
    for a in batch + batch:  # the second time through the cache
        assert dec.decode(CODEC.encode(AGGREGATE, a.to_record())) == a


def test_decoder_rejects_bad_bodies_and_other_records() -> None:
    import pytest

    from monitoring.wire.codec import DecodeError

    dec = AggregateDecoder(CODEC)
    a = Aggregate('m{a="1"}', "m", {"a": "1"}, 10_000, 0, 10_000, 1, *[1.0] * 8)
    data = CODEC.encode(AGGREGATE, a.to_record())
    assert dec.decode(data) == a
    with pytest.raises(DecodeError) as e:
        dec.decode(data[:-3])
    assert e.value.reason == "bad-body"
    with pytest.raises(DecodeError) as e:
        dec.decode(data + b"x")
    assert e.value.reason == "trailing-bytes"
    sample = {"name": "m", "value": 1.0, "timestamp_ms": 5}
    with pytest.raises(DecodeError) as e:
        dec.decode(CODEC.encode("monitoring.MetricSample", sample))
    assert e.value.reason == "wrong-record"
