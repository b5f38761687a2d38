"""Prometheus' staleness marker through the pipeline: the samples contract takes that
one NaN (no other), the SDK and the wire keep its bits, aggregation does not count it as
a value, and PromQL's instant selector stops at it."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest

from monitoring.metrics.aggregator import PartitionAggregator
from monitoring.metrics.samples import (
    BATCH,
    STALE_NAN,
    InvalidSample,
    Limits,
    Sample,
    SampleBatch,
    SampleDecoder,
    check_point,
    is_stale,
    stale_mask,
    without_stale,
)
from monitoring.promql import Engine
from monitoring.sdk.producer import SeriesHandle, make_series
from monitoring.wire.codec import AvroCodec
from monitoring.wire.metric_batch import MetricBatchDecoder
from monitoring.wire.metric_sample import MetricSampleDecoder
from monitoring.wire.sample_encoding import BatchEncoder, SampleEncoder

NOW = int(time.time() * 1000) // 60_000 * 60_000
OTHER_NANS = [float("nan"), -float("nan"), float("inf"), -float("inf")]


def test_the_contract_takes_the_marker_and_no_other_non_finite_value() -> None:
    assert math.isnan(STALE_NAN) and is_stale(STALE_NAN)
    assert np.array([STALE_NAN]).view(np.uint64)[0] == 0x7FF0000000000002
    check_point(NOW, STALE_NAN, NOW, Limits())
    for v in OTHER_NANS:
        assert not is_stale(v)
        with pytest.raises(InvalidSample, match="non-finite-value"):
            check_point(NOW, v, NOW, Limits())
    rec = {
        "series": ["up", "x"], "kinds": [], "units": [], "series_index": [0, 1, 1, 0],
        "timestamps_ms": [NOW] * 4, "values": [STALE_NAN, 1.0, float("nan"), 2.0],
    }  # fmt: skip
    result = SampleDecoder().columns(BATCH, rec, NOW)
    assert [i for i, _ in result.rejected] == [2]  # the other NaN, only
    assert stale_mask(result.batch.values).tolist() == [True, False, False]


def test_the_sdk_and_the_wire_keep_the_markers_bits() -> None:
    codec = AvroCodec.from_directory()
    got: list[tuple[Any, int, float]] = []

    def append(s: Any, ts: int, v: float) -> bool:
        got.append((s, ts, v))
        return True

    up = SeriesHandle(make_series("up", {"job": "a"}), append)
    up.record(STALE_NAN, NOW)
    for v in OTHER_NANS:
        with pytest.raises(InvalidSample):
            up.record(v, NOW)
    x = make_series("x", {"job": "a"})
    batch = BatchEncoder(codec).encode([*got, (x, NOW, 1.0)], "t")
    cols = MetricBatchDecoder(codec).decode(batch)
    samples = SampleDecoder().columns(BATCH, cols._asdict(), NOW).batch.samples()
    assert [is_stale(s.value) for s in samples] == [True, False]
    single = SampleEncoder(codec, "t").encode(got[0][0], NOW, STALE_NAN)
    assert is_stale(MetricSampleDecoder(codec, Limits()).decode(single, NOW).value)


def _samples(with_markers: bool) -> list[Sample]:
    out = []
    for i in range(40):
        ts = NOW + i * 1000
        out.append(Sample("g", "g", {}, ts, float(i)))
        out.append(Sample("c_total", "c_total", {}, ts, float(i * 2), "COUNTER"))
        if with_markers and i % 7 == 3:
            out.append(Sample("g", "g", {}, ts + 1, STALE_NAN))
            out.append(Sample("c_total", "c_total", {}, ts + 1, STALE_NAN, "COUNTER"))
            out.append(Sample("gone", "gone", {}, ts + 1, STALE_NAN))  # a marker alone
    return out


def _aggregates(samples: list[Sample], vector: bool) -> list[str]:
    agg = PartitionAggregator([10_000], 0, vector_min=1 if vector else 10**9, max_series=2)
    out: list[str] = []
    for offset, start in enumerate(range(0, len(samples), 9)):
        chunk = samples[start : start + 9]
        kept, refused = agg.admit(SampleBatch.from_samples(chunk) if vector else chunk)
        assert not refused  # a series named by markers alone takes no place
        out += [repr(a.to_record()) for a in agg.process(offset, kept).closed]
    assert agg.series_count == 2
    return out


@pytest.mark.parametrize("vector", [False, True])
def test_aggregation_does_not_count_markers_as_values(vector: bool) -> None:
    expected = _aggregates(_samples(False), vector)
    assert expected and _aggregates(_samples(True), vector) == expected
    assert "nan" not in " ".join(expected)


def test_without_stale_drops_markers_and_series_only_they_named() -> None:
    b = SampleBatch.from_samples(
        [Sample("a", "a", {}, NOW, STALE_NAN), Sample("b", "b", {}, NOW, 1.0)]
    )
    kept = without_stale(b)
    assert isinstance(kept, SampleBatch)
    assert kept.values.tolist() == [1.0] and kept.series[0] is None
    plain = SampleBatch.from_samples([Sample("b", "b", {}, NOW, 1.0)])
    assert without_stale(plain) is plain


class _Source:
    def __init__(self, points: list[tuple[int, float]]) -> None:
        from monitoring.promql import SeriesData

        self.data = [
            SeriesData(
                {"__name__": "up", "job": "a"},
                np.array([t for t, _ in points], np.int64),
                np.array([v for _, v in points], np.float64),
            )
        ]

    def select(self, matchers: Any, start_ms: int, end_ms: int) -> list[Any]:
        return self.data


def test_an_instant_query_stops_at_the_marker() -> None:
    source = _Source([(NOW, 1.0), (NOW + 15_000, 1.0), (NOW + 30_000, STALE_NAN)])
    engine = Engine()
    assert len(engine.instant(source, "up", NOW + 29_000).series) == 1
    assert not engine.instant(source, "up", NOW + 30_000).series  # at once, not after 5m
    (counted,) = engine.instant(source, "count_over_time(up[1m])", NOW + 31_000).series
    assert counted[2].tolist() == [2.0]  # the marker is no sample of a range either
