"""The River-based detectors' own pieces: pickled checkpoints, memory walk, calibration."""

from __future__ import annotations

import pickle
import sys

import pytest

from monitoring.anomaly import SeriesScorer
from monitoring.anomaly.memory import deep_sizeof
from monitoring.anomaly.river_detectors import (
    Calibrator,
    DriftDetector,
    ForecastResidual,
    HalfSpaceTreesDetector,
)
from monitoring.anomaly.state import (
    KIND_PICKLE,
    PICKLE_VERSION,
    StateError,
    pack_pickle,
    unpack_pickle,
)
from monitoring.anomaly.synthetic import generate


def test_pickled_state_has_kind_and_version_bytes() -> None:
    blob = pack_pickle({"a": 1})
    assert blob[:2] == bytes([KIND_PICKLE, PICKLE_VERSION])
    assert unpack_pickle(blob, dict) == {"a": 1}


def test_pickled_state_errors_are_clear() -> None:
    blob = pack_pickle(ForecastResidual())
    with pytest.raises(StateError, match="not a pickled detector state"):
        unpack_pickle(b"\x01" + blob[1:], ForecastResidual)
    with pytest.raises(StateError, match="version 9, expected 1"):
        unpack_pickle(blob[:1] + b"\x09" + blob[2:], ForecastResidual)
    with pytest.raises(StateError, match="holds a ForecastResidual, not DriftDetector"):
        unpack_pickle(blob, DriftDetector)
    with pytest.raises(StateError, match="corrupt pickled detector state"):
        unpack_pickle(blob[:-5], ForecastResidual)


def test_pickle_state_is_a_fixed_point_after_restore() -> None:
    s = generate(700, seed=6, daily_amplitude=8.0)
    det = HalfSpaceTreesDetector(seed=3)
    for t, x in zip(s.timestamps_ms, s.values, strict=True):
        det.learn_one(x, t)
    blob = det.to_state()
    assert HalfSpaceTreesDetector.from_state(blob).to_state() == blob


def test_deep_sizeof_counts_shared_objects_once() -> None:
    inner = [1.5] * 100  # one float object referenced 100 times
    outer = [inner, inner]
    expected = sys.getsizeof(outer) + sys.getsizeof(inner) + sys.getsizeof(1.5)
    assert deep_sizeof(outer) == expected


def test_calibrator_scores_zero_until_it_has_learned_enough() -> None:
    cal = Calibrator(window=50, min_count=20)
    for i in range(39):
        cal.learn(float(i % 3))
        assert cal.score(100.0) == 0.0
    cal.learn(0.0)
    assert cal.score(100.0) > 0.9


def test_calibrator_halves_a_surprise_no_larger_than_a_recent_one() -> None:
    cal = Calibrator(window=50)
    for i in range(60):
        cal.learn(float(i % 3))
    assert cal.score(40.0) == cal.lik.score(cal.z(40.0))  # a record: not halved
    cal.learn(40.0)
    assert cal.score(40.0) == 0.5 * cal.lik.score(cal.z(40.0))
    assert cal.score(39.0) == 0.5 * cal.lik.score(cal.z(39.0))
    assert cal.score(80.0) == cal.lik.score(cal.z(80.0))


@pytest.mark.parametrize("name", ["hst", "drift", "forecast", "ensemble"])
def test_river_detector_checkpoints_are_pickles_within_budget(name: str) -> None:
    s = generate(1500, seed=2, daily_amplitude=5.0)
    sc = SeriesScorer(name)
    for t, v in zip(s.timestamps_ms, s.values, strict=True):
        sc.update(t, v)
    state = sc.detector.to_state()
    assert state[0] == KIND_PICKLE
    assert type(pickle.loads(state[2:])) is type(sc.detector)
    assert sc.nbytes() <= 50_000
