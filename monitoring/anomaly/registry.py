"""Detectors by name: what config and the CLI select, with the scorer's policy for each.

>>> DEFAULT_DETECTOR in detector_names()
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from monitoring.anomaly.detectors import Detector, RobustEnsemble, RollingZScore
from monitoring.anomaly.river_detectors import (
    DriftDetector,
    ForecastResidual,
    HalfSpaceTreesDetector,
    MaxEnsemble,
)


@dataclass(frozen=True)
class DetectorSpec:
    """A named detector: how to build and restore it, and the scorer's policy.

    ``alert_level`` is the score from which a point counts as detected: the scorer
    then reports 0 for the next ``suppress`` points (one detection per incident), and
    does not let up to ``protect`` consecutive detected points teach the detector.
    """

    name: str
    build: Callable[..., Detector]  # (seed, **options) -> detector
    restore: Callable[[bytes], Detector]
    alert_level: float
    suppress: int
    protect: int
    description: str


_SPECS: dict[str, DetectorSpec] = {
    s.name: s
    for s in [
        DetectorSpec(
            "robust",
            lambda seed, **o: RobustEnsemble(seed=seed, **o),
            RobustEnsemble.from_state,
            alert_level=0.36,  # a tail probability of 10^-3.6, chosen by the CV (docs/anomaly.md)
            suppress=20,
            protect=0,  # median/IQR windows already resist outliers
            description="level/change/seasonal robust residuals, anomaly likelihood",
        ),
        DetectorSpec(
            "zscore",
            lambda seed, **o: RollingZScore(seed=seed, **o),
            RollingZScore.from_state,
            alert_level=0.5,  # z >= 4
            suppress=0,
            protect=0,
            description="z-score over the previous 288 points (baseline)",
        ),
        DetectorSpec(
            "hst",
            lambda seed, **o: HalfSpaceTreesDetector(seed=seed, **o),
            HalfSpaceTreesDetector.from_state,
            alert_level=0.78,
            suppress=20,
            protect=0,
            description="River HalfSpaceTrees on scaled value/change/deviation, calibrated",
        ),
        DetectorSpec(
            "drift",
            lambda seed, **o: DriftDetector(seed=seed, **o),
            DriftDetector.from_state,
            alert_level=0.45,
            suppress=20,
            protect=0,
            description="River ADWIN window distance plus PageHinkley level shifts",
        ),
        DetectorSpec(
            "forecast",
            lambda seed, **o: ForecastResidual(seed=seed, **o),
            ForecastResidual.from_state,
            alert_level=0.4,
            suppress=20,
            protect=0,
            description="River HoltWinters one-step forecast residual, calibrated",
        ),
        DetectorSpec(
            "ensemble",
            lambda seed, **o: MaxEnsemble(seed=seed, **o),
            MaxEnsemble.from_state,
            alert_level=0.4,
            suppress=20,
            protect=0,
            description="max of robust and forecast",
        ),
    ]
}

DEFAULT_DETECTOR = "robust"


def detector_names() -> list[str]:
    """Registered detector names, default first."""
    return [DEFAULT_DETECTOR, *sorted(n for n in _SPECS if n != DEFAULT_DETECTOR)]


def get_spec(name: str) -> DetectorSpec:
    """The spec of ``name``; a clear error for an unknown name."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown anomaly detector {name!r}; known: {', '.join(detector_names())}"
        ) from None
