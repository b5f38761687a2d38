"""The anomaly event (schemas/anomaly.v3.avsc) and the band it carries.

Every event says what the detector expected and the band it judged against; an event
written with the previous schema (v2, checked in as bytes) still decodes, with no band,
and lands in the store's row layout.
"""

from __future__ import annotations

import pytest

from monitoring.anomaly import SeriesScorer, detector_names, get_spec
from monitoring.anomaly.synthetic import generate
from monitoring.sinks.clickhouse.rows import ANOMALY_COLUMNS, Columns, add_anomaly
from monitoring.wire.codec import AvroCodec

ANOMALY = "monitoring.Anomaly"
# codec.encode(ANOMALY, record, version=2) of the record below, by the v2 schema
V2_EVENT = bytes.fromhex(
    "c30158cde96431be75001a6370757b686f73743d2261227d066370750208686f737402610080a0abfef9"
    "620000000000608940666666666666ee3f0c726f62757374a09c01086d65616ecdccccccccccec3f020a"
    "6c6576656cae47e17a14aeef3f00"
)
V2_RECORD = {
    "series": 'cpu{host="a"}', "name": "cpu", "labels": {"host": "a"},
    "timestamp_ms": 1_700_000_000_000, "value": 812.0, "score": 0.95, "detector": "robust",
    "window_ms": 10_000, "field": "mean", "threshold": 0.9, "signals": {"level": 0.99},
}  # fmt: skip


def test_a_v2_event_decodes_with_no_band_and_is_stored() -> None:
    codec = AvroCodec.from_directory()
    assert codec.latest(ANOMALY).version == 3
    dec = codec.decode(V2_EVENT)
    assert dec.version == 2
    assert dec.record == {
        **V2_RECORD, "expected": None, "lower": None, "upper": None, "components": []
    }  # fmt: skip
    cols = Columns(ANOMALY_COLUMNS)
    add_anomaly(dec.record, lambda key: 7, cols)
    row = dict(zip(ANOMALY_COLUMNS, [c[0] for c in cols.data], strict=True))
    assert (row["expected"], row["lower"], row["upper"], row["components"]) == (
        None,
        None,
        None,
        [],
    )
    assert row["value"] == 812.0 and row["series_id"] == 7


def test_a_v3_event_round_trips_with_its_band() -> None:
    codec = AvroCodec.from_directory()
    rec = {**V2_RECORD, "expected": 215.0, "lower": 120.0, "upper": 310.0,
           "components": ["level", "range"]}  # fmt: skip
    assert codec.decode(codec.encode(ANOMALY, rec)).record == rec


@pytest.mark.parametrize("name", detector_names())
def test_every_detector_explains_its_points(name: str) -> None:
    s = generate(1200, seed=3, daily_amplitude=5.0, spike_at=1000, spike=15.0)
    sc = SeriesScorer(name, warmup=100)
    for t, v in zip(s.timestamps_ms, s.values, strict=True):
        r = sc.update(t, v)
        band = (r.expected, r.lower, r.upper)
        assert all(b is None for b in band) or all(b is not None for b in band)
        if r.lower is not None and r.upper is not None and r.expected is not None:
            assert r.lower <= r.expected <= r.upper
        assert set(r.components) <= {*r.signals, "level", "change", "seasonal", "range"}


@pytest.mark.parametrize("name", ["robust", "zscore"])
def test_the_band_is_what_the_score_was_judged_against(name: str) -> None:
    """Inside the band the detector's own surprise is below its alert level; outside
    it, a component fired. (``robust``'s range novelty may still lift a value inside
    the band: it is then named among the components.)"""
    level = get_spec(name).alert_level
    s = generate(2500, seed=4, daily_amplitude=8.0, spike_at=2000, spike=40.0,
                 shift_at=2200, shift=6.0)  # fmt: skip
    sc = SeriesScorer(name, warmup=300)
    inside = outside = 0
    for t, v in zip(s.timestamps_ms, s.values, strict=True):
        r = sc.update(t, v)
        if not r.warm or r.lower is None or r.upper is None:
            continue
        if r.lower < v < r.upper:
            inside += 1
            if "range" not in r.components and sc.cool == 0:
                assert r.score < level
        elif not (r.lower <= v <= r.upper):
            outside += 1
            assert r.components
    assert inside > 2000 and outside >= 1


def test_the_spike_is_outside_the_band_and_names_its_components() -> None:
    s = generate(1500, seed=1, daily_amplitude=10.0, spike_at=1200, spike=15.0)
    sc = SeriesScorer()
    out = [sc.update(t, v) for t, v in zip(s.timestamps_ms, s.values, strict=True)]
    r = out[1200]
    assert r.score >= get_spec("robust").alert_level
    assert r.upper is not None and r.expected is not None and r.value > r.upper
    assert abs(r.expected - (r.value - 15.0)) < 5.0  # about the value without the spike
    assert "seasonal" in r.components or "change" in r.components
