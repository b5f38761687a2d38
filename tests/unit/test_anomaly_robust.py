"""The default detector's damping rules, each against the same detector without it.

Damping changes only the score, never what the detector learns, so two detectors fed
the same points differ exactly by the damping factor on the points it applies to.
"""

from __future__ import annotations

from array import array

from monitoring.anomaly.detectors import RobustEnsemble
from monitoring.anomaly.state import pack_explicit, unpack_explicit
from monitoring.anomaly.synthetic import generate
from monitoring.anomaly.windows import Ring

PER_DAY = 288  # 5-minute points; the synthetic series starts at midnight UTC


def run_pair(
    values: list[float], ts: list[int], plain: RobustEnsemble, at: list[int]
) -> list[tuple[float, float]]:
    """(default score, plain score) at the indices ``at``."""
    default = RobustEnsemble()
    out = []
    for i, (t, x) in enumerate(zip(ts, values, strict=True)):
        a, b = default.score_one(x, t), plain.score_one(x, t)
        if i in at:
            out.append((a, b))
        default.learn_one(x, t)
        plain.learn_one(x, t)
    return out


def test_a_surprise_recurring_at_this_time_on_two_previous_days_is_damped() -> None:
    s = generate(4 * PER_DAY, seed=3)
    values = list(s.values)
    # a +10 sigma spike around 03:00 on days 1-3 (jittered by 10-20 minutes), and one
    # at 15:00 on day 3
    daily = [PER_DAY + 36, 2 * PER_DAY + 38, 3 * PER_DAY + 34]
    other = 3 * PER_DAY + 180
    for i in [*daily, other]:
        values[i] += 10.0
    got = run_pair(values, s.timestamps_ms, RobustEnsemble(recur_days=0), [*daily[1:], other])
    (day2, plain2), (day3, plain3), (at15, plain15) = got
    assert day2 == plain2 > 0.1  # seen on one previous day only
    assert day3 == 0.3 * plain3 and plain3 > 0.1  # seen on both previous days
    assert at15 == plain15 > 0.1  # a different time of day


def test_a_surprise_within_two_percent_of_the_recent_largest_is_not_a_new_record() -> None:
    det = RobustEnsemble(range_score=0.0)  # no floor for a value outside the range seen
    s = generate(400, seed=4)
    for t, x in zip(s.timestamps_ms, s.values, strict=True):
        det.learn_one(x, t)
    t = s.timestamps_ms[-1] + 300_000
    raw = det._compute(110.0, t)[6]  # the raw surprise of a +10 sigma point

    def score(recent_largest: float, margin: float) -> float:
        d = RobustEnsemble.from_state(det.to_state())
        d.record_margin = margin
        d.recent = Ring(100, array("d", [0.0] * 99 + [recent_largest]))
        return d.score_one(110.0, t)

    undamped = score(0.0, 1.02)
    assert raw > 3.0 and undamped > 0.1
    assert score(raw / 1.01, 1.02) == 0.5 * undamped  # within 2% of the record: damped
    assert score(raw / 1.01, 1.0) == undamped  # (the rule before the margin)
    assert score(raw / 1.03, 1.02) == undamped  # 3% above it: a new record


def test_checkpoint_from_before_margin_and_recurrence_restores_without_them() -> None:
    det = RobustEnsemble()
    s = generate(400, seed=5)
    for t, x in zip(s.timestamps_ms, s.values, strict=True):
        det.learn_one(x, t)
    scalars, arrays = unpack_explicit(det.to_state())
    for key in ("record_margin", "recur_days", "recur_tol", "recur_damp"):
        del scalars[key]
    del arrays["hist"], arrays["hist_day"]
    old = RobustEnsemble.from_state(pack_explicit(scalars, arrays))
    assert (old.record_margin, old.recur_days, old.recur_damp) == (1.0, 0, 1.0)
    new = RobustEnsemble.from_state(det.to_state())
    assert new.to_state() == det.to_state()
    t = s.timestamps_ms[-1] + 300_000
    assert new.score_one(100.0, t) == det.score_one(100.0, t)
