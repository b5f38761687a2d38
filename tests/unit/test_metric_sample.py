"""``MetricSampleDecoder`` against the codec followed by ``SampleDecoder``: the same
samples, the same rejections, whatever the bytes and whatever it has cached."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics.samples import SAMPLE, InvalidSample, Limits, Sample, SampleDecoder
from monitoring.wire.codec import HEADER_LEN, AvroCodec, DecodeError
from monitoring.wire.metric_sample import MetricSampleDecoder
from monitoring.wire.sample_encoding import KINDS, SampleEncoder, make_series, sample_record

CODEC = AvroCodec.from_directory()
NOW = 1_700_000_000_000
LIMITS = Limits(max_future_skew_ms=60_000)

names = st.sampled_from(["up", "http_requests_total", "bad name", "", "x" * 300])
labels = st.dictionaries(
    st.sampled_from(["job", "instance", "le", "__bad", "1x", "code"]),
    st.text(max_size=8),
    max_size=3,
)
stamps = st.one_of(
    st.integers(NOW - 10**7, NOW + 10**5),
    st.integers(-(2**63), 2**63 - 1),
)
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5).map(float))
records = st.builds(
    lambda n, lab, ts, v, kind, unit, source: {
        "name": n, "labels": lab, "timestamp_ms": ts, "value": v,
        "kind": kind, "unit": unit, "source": source,
    },
    names, labels, stamps, values, st.sampled_from(sorted(KINDS)),
    st.sampled_from(["", "s", "bytes"]), st.sampled_from(["", "sdk"]),
)  # fmt: skip


def slow(data: bytes) -> Sample | str:
    """What the worker did before: the codec, then ``SampleDecoder``."""
    try:
        decoded = CODEC.decode(data)
        result = SampleDecoder(LIMITS).samples(decoded.name, decoded.record, NOW)
        return result.samples[0]
    except (DecodeError, InvalidSample) as e:
        return e.reason


def fast(decoder: MetricSampleDecoder, data: bytes) -> Sample | str:
    try:
        return decoder.decode(data, NOW)
    except (DecodeError, InvalidSample) as e:
        return e.reason


def same(a: Sample | str, b: Sample | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    nan = math.isnan(a.value) and math.isnan(b.value)
    return a._replace(value=0.0) == b._replace(value=0.0) and (nan or a.value == b.value)


def test_the_current_schema_takes_the_hand_written_path() -> None:
    decoder = MetricSampleDecoder(CODEC)
    data = CODEC.encode(SAMPLE, sample_record(make_series("up", {}), NOW, 1.0))
    assert decoder.header is not None and decoder.accepts(data)
    other = data[: HEADER_LEN - 1] + bytes([data[HEADER_LEN - 1] ^ 1]) + data[HEADER_LEN:]
    assert not decoder.accepts(None) and not decoder.accepts(other)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(records, min_size=1, max_size=12), st.data())
def test_same_samples_and_rejections_as_the_codec(recs: list[dict[str, Any]], data: Any) -> None:
    """A series' first message fills the cache, later ones take the fast path: each
    gives what the codec and ``SampleDecoder`` give, including after a bad series."""
    decoder = MetricSampleDecoder(CODEC, LIMITS)
    encoded = [CODEC.encode(SAMPLE, r) for r in recs]
    # the same series again with other points, to read through the cache
    encoded += [
        CODEC.encode(SAMPLE, {**r, "timestamp_ms": data.draw(stamps), "value": data.draw(values)})
        for r in recs
    ]
    for body in encoded:
        assert same(fast(decoder, body), slow(body))


@settings(max_examples=examples(300), deadline=None)
@given(records, st.data())
def test_corrupt_bytes_after_the_cache_is_filled(rec: dict[str, Any], data: Any) -> None:
    """Truncated, extended or flipped bytes of a cached series: the codec's verdict."""
    decoder = MetricSampleDecoder(CODEC, LIMITS)
    body = CODEC.encode(SAMPLE, {**rec, "timestamp_ms": NOW, "value": 1.0})
    fast(decoder, body)  # cached (valid or not)
    cut = data.draw(st.integers(HEADER_LEN, len(body)))
    mutated = [body[:cut], body + data.draw(st.binary(min_size=1, max_size=3))]
    i = data.draw(st.integers(HEADER_LEN, len(body) - 1))
    mutated.append(body[:i] + bytes([body[i] ^ data.draw(st.integers(1, 255))]) + body[i + 1 :])
    for m in mutated:
        assert same(fast(decoder, m), slow(m))


def test_what_the_sdk_writes_decodes_from_the_cache() -> None:
    encoder = SampleEncoder(CODEC, source="sdk")
    series = [make_series("cpu", {"core": str(i)}, "GAUGE", "ratio") for i in range(3)]
    decoder = MetricSampleDecoder(CODEC, LIMITS)
    for tick in range(4):
        for s in series:
            got = decoder.decode(encoder.encode(s, NOW + tick, tick / 4), NOW)
            assert got == Sample(s.key, s.name, s.labels, NOW + tick, tick / 4, "GAUGE", "ratio")
    assert len(decoder._series) == 3


def test_the_cache_is_bounded() -> None:
    decoder = MetricSampleDecoder(CODEC, LIMITS, max_series=4)
    encoder = SampleEncoder(CODEC)
    for i in range(10):
        decoder.decode(encoder.encode(make_series("up", {"i": str(i)}), NOW, 1.0), NOW)
        assert len(decoder._series) <= 4


def test_an_invalid_series_is_rejected_every_time() -> None:
    decoder = MetricSampleDecoder(CODEC, LIMITS)
    body = CODEC.encode(SAMPLE, sample_record(make_series("up", {}), NOW, 1.0))
    bad = body.replace(b"\x04up", b"\x04u-")  # the name, now invalid
    for _ in range(2):
        with pytest.raises(InvalidSample) as e:
            decoder.decode(bad, NOW)
        assert e.value.reason == "bad-name"
