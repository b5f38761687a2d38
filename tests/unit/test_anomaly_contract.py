"""Contract of every registered detector, driven through SeriesScorer (the agent's path)."""

from __future__ import annotations

import math

import pytest

from monitoring.anomaly import DEFAULT_DETECTOR, SeriesScorer, detector_names, get_spec
from monitoring.anomaly.state import StateError
from monitoring.anomaly.synthetic import generate

NAMES = detector_names()
STEP = 300_000


def scores(sc: SeriesScorer, ts: list[int], vs: list[float]) -> list[float]:
    return [sc.update(t, v).score for t, v in zip(ts, vs, strict=True)]


def test_registry_names_default_first_and_unknown_is_clear() -> None:
    assert NAMES[0] == DEFAULT_DETECTOR
    assert len(NAMES) == len(set(NAMES)) >= 2
    with pytest.raises(ValueError, match="unknown anomaly detector 'nope'; known: robust"):
        SeriesScorer("nope")


@pytest.mark.parametrize("name", NAMES)
def test_scores_in_unit_interval_and_zero_during_warmup(name: str) -> None:
    s = generate(1200, seed=1, daily_amplitude=5.0, spike_at=900, spike=15.0)
    sc = SeriesScorer(name, warmup=100)
    out = [sc.update(t, v) for t, v in zip(s.timestamps_ms, s.values, strict=True)]
    assert all(0.0 <= o.score <= 1.0 for o in out)
    assert all(0.0 <= x <= 1.0 for o in out for x in o.signals.values())
    assert [o.warm for o in out] == [False] * 100 + [True] * 1100
    assert all(o.score == 0.0 for o in out[:100])
    assert max(o.score for o in out[100:]) > 0.0


@pytest.mark.parametrize("name", NAMES)
def test_constant_series(name: str) -> None:
    sc = SeriesScorer(name, warmup=10)
    out = scores(sc, [i * STEP for i in range(600)], [42.0] * 600)
    assert all(0.0 <= x <= 1.0 for x in out)
    assert max(out) < get_spec(name).alert_level
    # the first change after a long constant run is a detection
    assert sc.update(600 * STEP, 43.0).score >= get_spec(name).alert_level


@pytest.mark.parametrize("name", NAMES)
def test_nan_and_inf_score_zero_and_do_not_touch_state(name: str) -> None:
    s = generate(400, seed=2)
    sc = SeriesScorer(name, warmup=50)
    scores(sc, s.timestamps_ms, s.values)
    before = sc.to_bytes()
    for bad in (math.nan, math.inf, -math.inf):
        r = sc.update(400 * STEP, bad)
        assert (r.score, r.signals, r.warm) == (0.0, {}, True)
        assert r.value != r.value or r.value == bad
    assert sc.to_bytes() == before
    assert 0.0 <= sc.update(401 * STEP, 100.0).score <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_huge_values_and_time_gaps(name: str) -> None:
    s = generate(500, seed=3)
    sc = SeriesScorer(name, warmup=50)
    scores(sc, s.timestamps_ms, s.values)
    t = s.timestamps_ms[-1]
    odd = [1e308, -1e308, 1e300, 5e-324, -1e308, 100.0, 100.5]
    gaps = [t + k * 86_400_000 * 3 + 1 for k in range(1, len(odd) + 1)]  # 3-day gaps
    out = scores(sc, gaps, odd)
    assert all(0.0 <= x <= 1.0 for x in out)
    after = generate(300, seed=4, start_ms=gaps[-1] + STEP)
    out = scores(sc, after.timestamps_ms, after.values)
    assert all(0.0 <= x <= 1.0 for x in out)
    # timestamps going backwards are accepted too
    assert 0.0 <= sc.update(0, 100.0).score <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name: str) -> None:
    s = generate(800, seed=5, spike_at=600, spike=10.0)
    a = scores(SeriesScorer(name, seed=7), s.timestamps_ms, s.values)
    b = scores(SeriesScorer(name, seed=7), s.timestamps_ms, s.values)
    assert a == b


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cut", [0, 30, 700])
def test_state_round_trip_continues_identically(name: str, cut: int) -> None:
    s = generate(1400, seed=6, daily_amplitude=8.0, shift_at=1000, shift=6.0)
    ts, vs = s.timestamps_ms, s.values
    straight = SeriesScorer(name, warmup=100, seed=3)
    ref = [straight.update(t, v) for t, v in zip(ts, vs, strict=True)]
    first = SeriesScorer(name, warmup=100, seed=3)
    for t, v in zip(ts[:cut], vs[:cut], strict=True):
        first.update(t, v)
    blob = first.to_bytes()
    restored = SeriesScorer.from_bytes(blob)
    assert restored.to_bytes() == blob
    rest = [restored.update(t, v) for t, v in zip(ts[cut:], vs[cut:], strict=True)]
    assert rest == ref[cut:]  # scores, signals and warm flags, exactly


@pytest.mark.parametrize("name", NAMES)
def test_memory_per_series_is_bounded(name: str) -> None:
    s = generate(3000, seed=8, daily_amplitude=5.0)
    sc = SeriesScorer(name)
    scores(sc, s.timestamps_ms, s.values)
    assert 0 < sc.nbytes() <= 50_000
    assert len(sc.to_bytes()) <= 50_000


def test_corrupt_checkpoint_is_a_clear_error() -> None:
    blob = SeriesScorer().to_bytes()
    with pytest.raises(StateError, match="not a version-1 scorer checkpoint"):
        SeriesScorer.from_bytes(b"\x09" + blob[1:])
    with pytest.raises(StateError, match="truncated"):
        SeriesScorer.from_bytes(blob[:-8])
    with pytest.raises(StateError, match=r"scorer checkpoint truncated \(12 bytes\)"):
        SeriesScorer.from_bytes(blob[:12])
