"""Each registered detector on seeded synthetic series with known anomalies.

Series: 2000 points 5 min apart, level 100, Gaussian noise sigma 1; anomalies at
index 1500 (after a 150-point warm-up and long enough to learn the noise). Stated
numbers, the same for every detector, each with its own ``alert_level`` as the
detection threshold (robust 0.36, zscore 0.5, hst 0.78, drift 0.45, forecast and
ensemble 0.4; hst's clean-noise maximum is 0.66-0.76 on these seeds, so its margin
is the thinnest):

* a +10 sigma one-point spike is detected at the spike itself (delay 0);
* a +6 sigma level shift is detected within 4 points of the step;
* clean noise never reaches the alert level (seeds 1-3: no detection in 2000 points).

The default detector also handles a daily cycle of amplitude 20 sigma (where a plain
z-score misses the spike): same delays, and quiet on the clean cyclic series.
"""

from __future__ import annotations

import dataclasses

import pytest

from monitoring.anomaly import DEFAULT_DETECTOR, SeriesScorer, detector_names, get_spec
from monitoring.anomaly.synthetic import generate

AT = 1500


def first_detection(name: str, **kw: float) -> tuple[float, int | None]:
    """(max score before AT, delay of the first detection at or after AT)."""
    s = generate(2000, **kw)  # type: ignore[arg-type]
    sc = SeriesScorer(name)
    scores = [sc.update(t, v).score for t, v in zip(s.timestamps_ms, s.values, strict=True)]
    level = get_spec(name).alert_level
    hits = [i - AT for i in range(AT, len(scores)) if scores[i] >= level]
    return max(scores[:AT]), (hits[0] if hits else None)


@pytest.mark.parametrize("name", detector_names())
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_spike_found_at_once(name: str, seed: int) -> None:
    quiet_before, delay = first_detection(name, seed=seed, spike_at=AT, spike=10.0)
    assert quiet_before < get_spec(name).alert_level
    assert delay == 0


@pytest.mark.parametrize("name", detector_names())
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_level_shift_found_within_4_points(name: str, seed: int) -> None:
    _, delay = first_detection(name, seed=seed, shift_at=AT, shift=6.0)
    assert delay is not None and 0 <= delay <= 4


@pytest.mark.parametrize("name", detector_names())
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quiet_on_clean_noise(name: str, seed: int) -> None:
    before, delay = first_detection(name, seed=seed)
    assert before < get_spec(name).alert_level and delay is None


@pytest.mark.parametrize("seed", [1, 2])
def test_default_handles_a_daily_cycle(seed: int) -> None:
    cyc = {"seed": seed, "daily_amplitude": 20.0}
    assert first_detection(DEFAULT_DETECTOR, **cyc)[1] is None
    assert first_detection(DEFAULT_DETECTOR, **cyc, spike_at=AT, spike=10.0)[1] == 0
    assert first_detection(DEFAULT_DETECTOR, **cyc, shift_at=AT, shift=6.0)[1] == 0
    # the baseline z-score does not see that spike under the cycle
    assert first_detection("zscore", **cyc, spike_at=AT, spike=10.0)[1] is None


def test_detections_are_suppressed_then_resume() -> None:
    """After a detection the default reports 0.0 for ``suppress`` points, then scores again."""
    spec = get_spec(DEFAULT_DETECTOR)
    s = generate(2000, seed=1, spike_at=AT, spike=10.0)
    sc = SeriesScorer(DEFAULT_DETECTOR)
    out = [sc.update(t, v) for t, v in zip(s.timestamps_ms, s.values, strict=True)]
    assert out[AT].score >= spec.alert_level
    assert all(o.score == 0.0 for o in out[AT + 1 : AT + 1 + spec.suppress])
    assert out[AT + 1 + spec.suppress].score > 0.0
    assert out[AT].signals["level"] > 0.999 and out[AT].signals["change"] > 0.999


def test_protection_keeps_detected_points_out_of_the_model() -> None:
    """With ``protect=1`` a detected spike does not enter the z-score's window.

    (No registered detector protects by default: it measured worse on NAB.)
    """
    s = generate(400, seed=1)
    sc = SeriesScorer("zscore")
    sc.spec = dataclasses.replace(sc.spec, protect=1)
    for t, v in zip(s.timestamps_ms, s.values, strict=True):
        sc.update(t, v)
    before = sc.detector.to_state()
    r = sc.update(s.timestamps_ms[-1] + 300_000, 1000.0)
    assert r.score >= get_spec("zscore").alert_level
    assert sc.detector.to_state() == before  # not learned
    sc.update(s.timestamps_ms[-1] + 600_000, 100.0)
    assert sc.detector.to_state() != before  # ordinary points are learned again


def test_default_flags_a_value_outside_the_range_seen_so_far() -> None:
    """A new extreme (beyond the range seen, widened by 10%) scores at least 0.5."""
    s = generate(400, seed=1)
    sc = SeriesScorer(DEFAULT_DETECTOR)
    for t, v in zip(s.timestamps_ms, s.values, strict=True):
        sc.update(t, v)
    lo, hi = min(s.values), max(s.values)
    t = s.timestamps_ms[-1]
    inside = sc.update(t + 300_000, (lo + hi) / 2)
    assert inside.signals["range"] == 0.0
    outside = sc.update(t + 600_000, hi + 0.3 * (hi - lo))
    assert outside.signals["range"] == 1.0 and outside.score >= 0.5
