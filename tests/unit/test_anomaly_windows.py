"""The detectors' fixed-size windows: the same statistics as the growing ones, and the
same memory from the first value on."""

from __future__ import annotations

import random
from array import array

import pytest

from monitoring.anomaly.detectors import RobustEnsemble
from monitoring.anomaly.synthetic import generate
from monitoring.anomaly.windows import FixedWindow, Ring, RollingWindow


@pytest.mark.parametrize("size", [1, 2, 7, 50])
def test_fixed_window_matches_the_rolling_window_value_for_value(size: int) -> None:
    rng = random.Random(size)
    fixed, rolling = FixedWindow(size), RollingWindow(size)
    pool = [0.0, -0.0, 1.0, -1.0, 1e100, -1e100, 5e-324]  # ties, signed zeros, extremes
    for _ in range(400):
        x = rng.choice(pool) if rng.random() < 0.3 else rng.gauss(0.0, 10.0)
        fixed.push(x)
        rolling.push(x)
        assert len(fixed) == len(rolling)
        assert fixed.chronological().tobytes() == rolling.chronological().tobytes()
        assert fixed.srt[: len(fixed)].tobytes() == rolling.srt.tobytes()
        assert fixed.median() == rolling.median()
        assert fixed.scale(1e-9) == rolling.scale(1e-9)
        assert fixed.robust_z(3.0, 1e-9) == rolling.robust_z(3.0, 1e-9)


def test_fixed_window_restores_from_its_chronological_values() -> None:
    w = FixedWindow(5)
    for x in range(8):
        w.push(float(x))
    again = FixedWindow(5, w.chronological())
    assert list(again.chronological()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert again.srt.tobytes() == w.srt.tobytes() and again.head == 0


def test_buffers_are_allocated_whole_and_never_move() -> None:
    w, r = FixedWindow(64), Ring(16)
    before = (w.nbytes(), w.ring.buffer_info(), w.srt.buffer_info(), r.buf.buffer_info())
    for x in range(200):
        w.push(float(x % 13))
        r.push(float(x))
    after = (w.nbytes(), w.ring.buffer_info(), w.srt.buffer_info(), r.buf.buffer_info())
    assert before == after


def test_ring_keeps_the_last_values_and_their_max() -> None:
    r = Ring(3)
    assert len(r) == 0 and r.max() == float("-inf") and list(r.chronological()) == []
    for x in [4.0, 9.0, 1.0, 2.0]:
        r.push(x)
    assert list(r.chronological()) == [9.0, 1.0, 2.0] and r.max() == 9.0
    assert list(Ring(0, array("d", [1.0])).chronological()) == []


def test_a_robust_detector_is_as_large_after_its_first_point_as_when_full() -> None:
    det = RobustEnsemble()
    s = generate(det.window + det.record + 50, seed=3)
    pairs = list(zip(s.timestamps_ms, s.values, strict=True))
    det.learn_one(pairs[0][1], pairs[0][0])
    first = det.nbytes()
    for t, x in pairs[1:]:
        det.score_one(x, t)
        det.learn_one(x, t)
    # the same buffers; only scalars differ (the int 0 is a smaller object than 600)
    assert abs(det.nbytes() - first) <= 512
    # a checkpoint carries the filled part only: a new detector's is small
    fresh = RobustEnsemble()
    fresh.learn_one(pairs[0][1], pairs[0][0])
    assert len(fresh.to_state()) < len(det.to_state()) - 3 * 8 * (det.window - 1)
