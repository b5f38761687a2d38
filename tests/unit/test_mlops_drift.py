"""Drift detectors of the model monitor: a mean shift is found within a stated delay,
a stationary stream raises no alarm (seeded), and the state survives pickling."""

from __future__ import annotations

import pickle
import random

import pytest

from monitoring.mlops.drift import DRIFT_DETECTORS, make_detector


def first_alarm(name: str, values: list[float]) -> int | None:
    d = make_detector(name)
    for i, x in enumerate(values):
        d.update(x)
        if d.drift_detected:
            return i
    return None


@pytest.mark.parametrize("name", sorted(DRIFT_DETECTORS))
@pytest.mark.parametrize("seed", range(5))
def test_a_one_sigma_mean_shift_is_found_within_150_values(name: str, seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.gauss(0, 1) for _ in range(500)] + [rng.gauss(1, 1) for _ in range(500)]
    alarm = first_alarm(name, values)
    assert alarm is not None and 500 <= alarm < 650, f"{name}: first alarm at {alarm}"


@pytest.mark.parametrize("seed", range(5))
def test_adwin_stays_quiet_on_a_stationary_stream(seed: int) -> None:
    rng = random.Random(100 + seed)
    assert first_alarm("adwin", [rng.gauss(5, 2) for _ in range(10_000)]) is None


def test_a_uniform_sixth_of_the_stream_still_shows_the_shift() -> None:
    """What one partition's detector sees: a uniform random subset of the predictions."""
    rng = random.Random(9)
    stream = [rng.gauss(0, 1) for _ in range(6_000)] + [rng.gauss(1, 1) for _ in range(3_000)]
    mine = [i for i in range(len(stream)) if rng.randrange(6) == 0]
    alarm = first_alarm("adwin", [stream[i] for i in mine])
    assert alarm is not None
    assert 6_000 <= mine[alarm] < 6_000 + 6 * 100  # about 6 x the delay of the whole stream


@pytest.mark.parametrize("name", sorted(DRIFT_DETECTORS))
def test_state_survives_pickling(name: str) -> None:
    rng = random.Random(1)
    a = make_detector(name)
    for _ in range(300):
        a.update(rng.gauss(0, 1))
    b = pickle.loads(pickle.dumps(a))
    tail = [rng.gauss(2, 1) for _ in range(300)]
    alarms_a, alarms_b = [], []
    for x in tail:
        a.update(x)
        b.update(x)
        alarms_a.append(a.drift_detected)
        alarms_b.append(b.drift_detected)
    assert alarms_a == alarms_b and any(alarms_a)


def test_unknown_detector_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="known: adwin, page_hinkley"):
        make_detector("kswin")
