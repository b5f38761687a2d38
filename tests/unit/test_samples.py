"""Sample validation, series keys, the caching batch decoder, checkpoint records."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.metrics.checkpoint import (
    CheckpointError,
    pack_meta,
    pack_series,
    unpack_meta,
    unpack_series,
)
from monitoring.metrics.samples import (
    BATCH,
    SAMPLE,
    BatchResult,
    InvalidSample,
    Limits,
    Sample,
    SampleDecoder,
    check_point,
    check_series,
    parse_series_key,
    samples_from_record,
    series_key,
)

NOW = 1_800_000_000_000
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: not s.startswith("__")
)
labels_st = st.dictionaries(label_names, st.text(max_size=12), max_size=5)


@given(st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True), labels_st)
def test_series_key_parses_back(name: str, labels: dict[str, str]) -> None:
    assert parse_series_key(series_key(name, labels)) == (name, labels)


@pytest.mark.parametrize(
    "key", ['m{b="1",a="2"}', 'm{a="1"', "m{a=1}", 'm{a="1"}x', "m{}", 'm{a="1",}']
)
def test_non_canonical_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidSample) as e:
        parse_series_key(key)
    assert e.value.reason == "bad-series-key"


def sample(**over: object) -> dict[str, object]:
    rec: dict[str, object] = {"name": "up", "value": 1.0, "timestamp_ms": NOW,
                              "labels": {"job": "x"}, "kind": "GAUGE", "unit": ""}  # fmt: skip
    rec.update(over)
    return rec


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"value": math.nan}, "non-finite-value"),
        ({"value": math.inf}, "non-finite-value"),
        ({"timestamp_ms": 5}, "timestamp-too-old"),
        ({"timestamp_ms": NOW + 2 * 3_600_000}, "timestamp-in-future"),
        ({"name": "bad name"}, "bad-name"),
        ({"labels": {"__name__": "x"}}, "bad-label-name"),
        ({"labels": {f"l{i}": "v" for i in range(40)}}, "too-many-labels"),
        ({"labels": {"big": "x" * 5000}}, "label-too-long"),
    ],
)
def test_invalid_samples_name_the_reason(over: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidSample) as e:
        samples_from_record(SAMPLE, sample(**over), NOW)
    assert e.value.reason == reason


def batch(keys: list[str], index: list[int], values: list[float]) -> dict[str, object]:
    return {"source": "", "series": keys, "kinds": [], "units": [], "series_index": index,
            "timestamps_ms": [NOW] * len(index), "values": values}  # fmt: skip


def test_batch_keeps_good_samples_and_lists_bad_ones() -> None:
    rec = batch(['a{x="1"}', 'b{1x="2"}'], [0, 1, 0, 0], [1.0, 2.0, math.nan, 4.0])
    result = samples_from_record(BATCH, rec, NOW)
    assert [(s.series, s.name, dict(s.labels), s.value) for s in result.samples] == [
        ('a{x="1"}', "a", {"x": "1"}, 1.0),
        ('a{x="1"}', "a", {"x": "1"}, 4.0),
    ]
    assert [(i, e.reason) for i, e in result.rejected] == [
        (1, "bad-series-key"),
        (2, "non-finite-value"),
    ]


@pytest.mark.parametrize(
    ("rec", "reason"),
    [
        (batch(["a"], [0, 0], [1.0]), "batch-length-mismatch"),
        (batch(["a"], [1], [1.0]), "bad-series-index"),
        ({**batch(["a"], [0], [1.0]), "kinds": ["GAUGE", "GAUGE"]}, "batch-length-mismatch"),
    ],
)
def test_broken_batches_are_rejected_whole(rec: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidSample) as e:
        samples_from_record(BATCH, rec, NOW)
    assert e.value.reason == reason
    with pytest.raises(InvalidSample) as e:
        SampleDecoder().columns(BATCH, rec, NOW)
    assert e.value.reason == reason


def _batch_record(keys: list[str], points: list[tuple[int, int, float]]) -> dict[str, object]:
    return {"source": "", "series": keys, "kinds": [], "units": [],
            "series_index": [i % len(keys) for i, _, _ in points],
            "timestamps_ms": [t for _, t, _ in points],
            "values": [v for _, _, v in points]}  # fmt: skip


batch_st = st.builds(
    _batch_record,
    st.lists(st.sampled_from(['a{x="1"}', "b", 'b{1x="2"}', "9c", 'd{y="z"}']), min_size=1),
    st.lists(
        st.tuples(
            st.integers(0, 10),
            st.sampled_from([NOW, NOW - 5, 0, NOW + 10**9, Limits().min_timestamp_ms]),
            st.sampled_from([1.5, -0.0, math.nan, math.inf, -math.inf, 1e300]),
        ),
        max_size=40,
    ),
)


def one_at_a_time(rec: dict[str, Any]) -> tuple[list[Sample], list[tuple[int, str]]]:
    """The batch's samples and rejections, each sample checked on its own."""
    keys, stamps, values = rec["series"], rec["timestamps_ms"], rec["values"]
    good, bad = [], []
    for i, (si, ts, v) in enumerate(zip(rec["series_index"], stamps, values, strict=True)):
        try:
            name, labels = parse_series_key(keys[si])
            check_series(name, labels, Limits())
            check_point(ts, v, NOW, Limits())
        except InvalidSample as e:
            bad.append((i, str(e)))
            continue
        good.append(Sample(keys[si], name, labels, ts, v))
    return good, bad


@given(batch_st)
def test_columns_accept_and_reject_what_samples_do(rec: dict[str, Any]) -> None:
    """The array checks of ``columns`` (which ``samples`` goes through for a batch) give
    the samples and rejections of checking each sample on its own."""
    good, bad = one_at_a_time(rec)
    for result in (
        SampleDecoder().samples(BATCH, rec, NOW),
        SampleDecoder().columns(BATCH, rec, NOW),
    ):
        got = result.samples if isinstance(result, BatchResult) else result.batch.samples()
        assert got == good
        assert [(i, str(e)) for i, e in result.rejected] == bad
    single = sample()
    assert SampleDecoder().columns(SAMPLE, single, NOW).batch.samples() == (
        SampleDecoder().samples(SAMPLE, single, NOW).samples
    )


def test_decoder_caches_parsed_series_within_its_bound() -> None:
    d = SampleDecoder(Limits(), max_series=2)
    for keys in (["a", "b"], ["a", "c"], ["d"]):
        d.samples(BATCH, batch(keys, [0], [1.0]), NOW)
    assert len(d._series) <= 2
    kinds = {**batch(["a", "b"], [0, 1], [1.0, 2.0]), "kinds": ["COUNTER", "GAUGE"]}
    assert [s.kind for s in d.samples(BATCH, kinds, NOW).samples] == ["COUNTER", "GAUGE"]


window_st = st.fixed_dictionaries(
    {
        "window_ms": st.integers(1, 10**9),
        "start_ms": st.integers(-(2**62), 2**62),
        "count": st.integers(0, 2**62),
        "sum": st.floats(allow_nan=False),
        "min": st.floats(allow_nan=False),
        "max": st.floats(allow_nan=False),
        "last": st.floats(allow_nan=False),
        "last_ts": st.integers(-(2**62), 2**62),
        "first": st.floats(allow_nan=False),
        "first_ts": st.integers(-(2**62), 2**62),
        "increase": st.floats(allow_nan=False),
        "resets": st.integers(0, 2**62),
    }
).flatmap(
    lambda w: st.one_of(
        st.lists(st.floats(allow_nan=False), max_size=20).map(
            lambda vs: {
                **w,
                "values": vs,
                "zero_count": 0,
                "pos_offset": 0,
                "pos_bins": [],
                "neg_offset": 0,
                "neg_bins": [],
            }
        ),
        st.tuples(
            st.integers(0, 10**6),
            st.integers(-(2**31), 2**31 - 1),
            st.lists(st.integers(0, 10**9), max_size=20),
            st.integers(-(2**31), 2**31 - 1),
            st.lists(st.integers(0, 10**9), max_size=20),
        ).map(
            lambda t: {
                **w,
                "values": None,
                "zero_count": t[0],
                "pos_offset": t[1],
                "pos_bins": t[2],
                "neg_offset": t[3],
                "neg_bins": t[4],
            }
        ),
    )
)


@given(
    st.integers(-1, 2**62),
    st.floats(allow_nan=False),
    st.integers(-(2**62), 2**62),
    st.lists(window_st, max_size=4),
)
def test_series_checkpoint_round_trip(
    offset: int, carry: float, carry_ts: int, windows: list[dict[str, object]]
) -> None:
    state = {"applied_offset": offset, "carry": carry, "carry_ts": carry_ts, "windows": windows}
    assert unpack_series(pack_series(state)) == state


def test_checkpoint_meta_round_trip_and_versions() -> None:
    meta = {"checkpoint_offset": 42, "max_event_ms": NOW, "watermark_ms": NOW - 5000}
    assert unpack_meta(pack_meta(meta)) == meta
    with pytest.raises(CheckpointError):
        unpack_meta(b"\x02" + pack_meta(meta)[1:])
    with pytest.raises(CheckpointError):
        unpack_series(
            pack_series({"applied_offset": 1, "carry": 0.0, "carry_ts": 0, "windows": []}) + b"x"
        )
    with pytest.raises(CheckpointError):
        unpack_series(b"\x03" + bytes(28))


def test_columns_give_each_batch_its_own_kind_and_unit() -> None:
    """The decoder caches a parsed series with the kind and unit it last saw; a batch
    that says otherwise gets its own."""
    d = SampleDecoder()
    plain = batch(["a", "b"], [0, 1], [1.0, 2.0])
    typed = {**plain, "kinds": ["COUNTER", "GAUGE"], "units": ["s", ""]}
    for rec, kinds, units in (
        (plain, ["GAUGE", "GAUGE"], ["", ""]),
        (typed, ["COUNTER", "GAUGE"], ["s", ""]),
        (plain, ["GAUGE", "GAUGE"], ["", ""]),
    ):
        got = d.columns(BATCH, rec, NOW).batch.samples()
        assert [(s.kind, s.unit) for s in got] == list(zip(kinds, units, strict=True))
