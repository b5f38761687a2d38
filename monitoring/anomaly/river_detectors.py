"""Detectors built on River models, each normalised into [0, 1].

Same interface as :mod:`monitoring.anomaly.detectors` (score before learn, ``score_one``
does not change what was learned). ``drift`` and ``forecast`` turn their River
model's output into a raw surprise and calibrate it with :class:`Calibrator`: a
robust z-score of the surprise against its own recent history, then
:class:`~monitoring.anomaly.detectors.Likelihood` (tail probability under the
long-run distribution of the series' own surprises), so that one ``alert_level``
means the same on every series.

* :class:`HalfSpaceTreesDetector` (``hst``): ``river.anomaly.HalfSpaceTrees`` (few,
  shallow trees) on three engineered features, each robustly scaled against its own
  rolling window and squashed into [0, 1]: the value, the change from the previous
  value, and the deviation from the mean of the last 16 values; the trees' own score.
* :class:`DriftDetector` (``drift``): ``river.drift.ADWIN`` keeps an adaptive window
  of the values (it drops the old part when the mean shifts); the surprise is the
  distance of a value from that window's mean, in that window's standard deviations.
  ``river.drift.PageHinkley`` on the robustly scaled values flags a level shift; the
  point after a flag scores at least ``drift_score``.
* :class:`ForecastResidual` (``forecast``): ``river.time_series.HoltWinters`` (level
  and trend); the surprise is the one-step-ahead forecast error.
* :class:`MaxEnsemble` (``ensemble``): the ``robust`` detector and ``forecast``, each
  already normalised, combined by ``max``.

NAB standard (41 files, threshold search): hst 37.3, drift 32.8, forecast 48.5,
ensemble 60.5, against robust 73.1 and zscore 35.9.

State: River objects have no public state API, so ``to_state`` pickles the whole
detector (:func:`~monitoring.anomaly.state.pack_pickle`: a kind byte and a version
byte first). That is for a worker's own private checkpoint only, read back by the
same code; it is not an exchange format. ``nbytes`` walks the object graph.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, ClassVar

from river import anomaly, drift, time_series

from monitoring.anomaly.detectors import (
    Explanation,
    Likelihood,
    RobustEnsemble,
    normalised,
)
from monitoring.anomaly.memory import deep_sizeof
from monitoring.anomaly.state import pack_pickle, unpack_pickle
from monitoring.anomaly.windows import IQR_TO_SIGMA, RollingWindow


def upper_z(w: RollingWindow, x: float, floor: float) -> float:
    """How far ``x`` lies above the window's median, in robust standard deviations."""
    srt = w.srt
    n = len(srt)
    scale = (srt[(3 * n) // 4] - srt[n // 4]) / IQR_TO_SIGMA
    d = x - srt[n // 2]
    return d / (scale if scale > floor else floor) if d > 0.0 else 0.0


class Calibrator:
    """Raw surprise into [0, 1], the way the default ``robust`` detector does it.

    A robust z-score of the surprise against the last ``window`` surprises (two-sided
    ``|raw - median| / IQR-sigma``, or only above the median with ``upper=True``),
    scored by :class:`Likelihood`; a z no larger than the largest of the previous
    ``record`` is halved (a burst fires once). ``floor`` keeps the scale of a run of
    identical surprises (IQR 0) positive, so that the first different one scores high.
    The score is 0 until ``2 * min_count`` surprises have been learned.

    >>> cal = Calibrator(window=50)
    >>> for i in range(60):
    ...     cal.learn(float(i % 3))
    >>> cal.score(1.0) < 0.1 < 0.9 < cal.score(40.0)
    True
    """

    __slots__ = ("floor", "lik", "min_count", "recent", "upper", "window")

    def __init__(
        self,
        window: int = 200,
        *,
        upper: bool = False,
        min_count: int = 20,
        floor: float = 1e-9,
        record: int = 100,
    ) -> None:
        self.window = RollingWindow(window)
        self.upper = upper
        self.min_count = min_count
        self.floor = floor
        self.lik = Likelihood(1 / 500)
        self.recent: deque[float] = deque(maxlen=record)

    def z(self, raw: float) -> float:
        w = self.window
        if len(w) < self.min_count:
            return 0.0
        floor = self.floor + 1e-3 * abs(w.median())
        return upper_z(w, raw, floor) if self.upper else w.robust_z(raw, floor)

    def score(self, raw: float) -> float:
        if self.lik.n < self.min_count:
            return 0.0
        z = self.z(raw)
        score = self.lik.score(z)
        return score * 0.5 if self.recent and z <= max(self.recent) else score

    def learn(self, raw: float) -> None:
        if len(self.window) >= self.min_count:
            z = self.z(raw)
            self.lik.learn(z)
            self.recent.append(z)
        self.window.push(raw)


def _trial(det: Any) -> None:
    """Score and learn one point (on a copy: ``unpack_pickle``'s trial)."""
    det.score_one(0.0, 0)
    det.signals()
    det.learn_one(0.0, 0)


class _Pickled:
    """``to_state``/``from_state``/``nbytes`` for detectors holding River objects."""

    kind: ClassVar[str]

    def signals(self) -> dict[str, float]:
        raise NotImplementedError

    def explain(self, alert_level: float) -> Explanation:
        """No band (River's models give no forecast interval); the signals at or above
        ``alert_level`` as the components."""
        fired = tuple(k for k, v in self.signals().items() if v >= alert_level)
        return Explanation(None, None, None, fired)

    def to_state(self) -> bytes:
        return pack_pickle(self)

    @classmethod
    def from_state(cls, data: bytes) -> Any:
        """The detector of ``to_state`` bytes; ``StateError`` for bytes that are not one,
        or that unpickle to a detector that does not run: a second copy scores and
        learns one point first."""
        return unpack_pickle(data, cls, _trial)

    def nbytes(self) -> int:
        return deep_sizeof(self)


class _Scaled:
    """A robust z-score (signed) of a feature against its own rolling window."""

    __slots__ = ("min_count", "window")

    def __init__(self, window: int, min_count: int = 20) -> None:
        self.window = RollingWindow(window)
        self.min_count = min_count

    def z(self, x: float) -> float:
        w = self.window
        if len(w) < self.min_count:
            return 0.0
        srt = w.srt
        n = len(srt)
        med = srt[n // 2]
        scale = (srt[(3 * n) // 4] - srt[n // 4]) / IQR_TO_SIGMA
        floor = 1e-3 * abs(med) + 1e-9
        return (x - med) / (scale if scale > floor else floor)


class HalfSpaceTreesDetector(_Pickled):
    """River's HalfSpaceTrees on robustly scaled value, change and short-term deviation.

    Each feature's robust z-score ``z`` becomes ``tanh(|z| / squash)`` (HalfSpaceTrees
    splits the unit cube; ordinary points sit near 0, a 10-sigma spike near 0.85) and
    HalfSpaceTrees' own score (``1 - mass``, already in [0, 1]) is the score; it is 0
    during the trees' first window. Not calibrated by :class:`Calibrator`: on a bounded,
    heavy-tailed score it separated a 10-sigma spike from noise worse than the raw
    score. Each tree node is a Python object of about 300 bytes, so ``n_trees=4,
    height=4`` (124 nodes) keeps the state near 45 KB (River's defaults, 10 trees of
    height 8: about 1.3 MB). NAB standard 37.3 (5.7 with Calibrator and 6 trees of
    height 3 on signed features).
    """

    kind: ClassVar[str] = "hst"

    def __init__(
        self,
        *,
        n_trees: int = 4,
        height: int = 4,
        window_size: int = 200,
        scale_window: int = 100,
        short: int = 16,
        squash: float = 8.0,
        seed: int = 0,
    ) -> None:
        self.hst = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self.squash = squash
        self.value = _Scaled(scale_window)
        self.change = _Scaled(scale_window)
        self.dev = _Scaled(scale_window)
        self.recent: deque[float] = deque(maxlen=short)
        self.prev = math.nan
        self.window_size = window_size
        self.n = 0
        self._last: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def _raw(self, x: float) -> tuple[dict[str, float], float, float, float]:
        d = x - self.prev if self.prev == self.prev else 0.0
        dev = x - sum(self.recent) / len(self.recent) if self.recent else 0.0
        zs = (self.value.z(x), self.change.z(d), self.dev.z(dev))
        feats = {
            name: math.tanh(abs(z) / self.squash)
            for name, z in zip(("value", "change", "dev"), zs, strict=True)
        }
        return feats, d, dev, float(self.hst.score_one(feats))

    def score_one(self, x: float, t_ms: int) -> float:
        feats, _, _, raw = self._raw(x)
        self._last = (raw, *feats.values())  # type: ignore[assignment]
        return raw if self.n >= self.window_size else 0.0

    def signals(self) -> dict[str, float]:
        raw, v, c, d = self._last
        return {"hst": min(1.0, max(0.0, raw)), "value": v, "change": c, "dev": d}

    def learn_one(self, x: float, t_ms: int) -> None:
        feats, d, dev, _ = self._raw(x)
        self.n += 1
        self.hst.learn_one(feats)
        self.value.window.push(x)
        if self.prev == self.prev:
            self.change.window.push(d)
        self.dev.window.push(dev)
        self.recent.append(x)
        self.prev = x


class DriftDetector(_Pickled):
    """Distance from ADWIN's adaptive-window mean, plus PageHinkley level-shift flags.

    ADWIN (``delta``) drops the older part of its window when the mean has shifted,
    so after a level shift the reference adapts within tens of points. The surprise
    ``|x - mean| / sd`` (sd of ADWIN's window, floored at ``1e-3 * |mean|``) is
    calibrated by :class:`Calibrator`. PageHinkley (``ph_threshold`` in robust
    standard deviations of the values) flags a sustained shift; a flag on the last
    learned point lifts the next score to at least ``drift_score``. NAB standard 32.8.
    """

    kind: ClassVar[str] = "drift"

    def __init__(
        self,
        *,
        delta: float = 0.002,
        ph_threshold: float = 100.0,
        drift_score: float = 0.5,
        scale_window: int = 300,
        seed: int = 0,
    ) -> None:
        del seed  # deterministic
        self.adwin = drift.ADWIN(delta=delta)
        self.ph = drift.PageHinkley(min_instances=30, delta=0.05, threshold=ph_threshold)
        self.scale = _Scaled(scale_window)
        self.drift_score = drift_score
        self.flag = False
        self.cal = Calibrator(upper=True)
        self._last = (0.0, 0.0)

    def _surprise(self, x: float) -> float:
        a = self.adwin
        if a.width < 2:
            return 0.0
        mean = a.estimation
        sd = math.sqrt(max(a.variance / a.width, 0.0))
        floor = 1e-3 * abs(mean) + 1e-9
        return abs(x - mean) / (sd if sd > floor else floor)

    def score_one(self, x: float, t_ms: int) -> float:
        raw = self._surprise(x)
        score = self.cal.score(raw)
        self._last = (raw, 1.0 if self.flag else 0.0)
        return max(score, self.drift_score) if self.flag else score

    def signals(self) -> dict[str, float]:
        raw, flag = self._last
        return {"adwin": normalised(raw), "pagehinkley": flag}

    def learn_one(self, x: float, t_ms: int) -> None:
        self.cal.learn(self._surprise(x))
        z = self.scale.z(x)
        self.scale.window.push(x)
        self.adwin.update(x)
        self.ph.update(max(-50.0, min(50.0, z)))
        self.flag = bool(self.ph.drift_detected)


class ForecastResidual(_Pickled):
    """One-step-ahead error of River's HoltWinters (level and trend), calibrated.

    The signed error is calibrated two-sided; until HoltWinters has its first two
    values the score is 0. NAB standard 48.5 (47.3 with the absolute error calibrated
    one-sided).
    """

    kind: ClassVar[str] = "forecast"

    def __init__(
        self, *, alpha: float = 0.5, beta: float = 0.01, window: int = 200, seed: int = 0
    ) -> None:
        del seed  # deterministic
        self.model = time_series.HoltWinters(alpha=alpha, beta=beta)
        self.cal = Calibrator(window)
        self._last = 0.0

    def _surprise(self, x: float) -> float:
        if not self.model._initialized:  # River keeps no public flag for this
            return math.nan
        return x - self.model.forecast(1)[0]

    def score_one(self, x: float, t_ms: int) -> float:
        r = self._surprise(x)
        score = self.cal.score(r) if r == r else 0.0
        self._last = score
        return score

    def signals(self) -> dict[str, float]:
        return {"forecast": self._last}

    def learn_one(self, x: float, t_ms: int) -> None:
        r = self._surprise(x)
        if r == r:
            self.cal.learn(r)
        self.model.learn_one(x)


class MaxEnsemble(_Pickled):
    """The ``robust`` detector (window 500) and :class:`ForecastResidual`, by max or mean.

    Measured on NAB (standard): 60.5 with max against 73.1 for ``robust`` alone; before
    the range novelty and daily margin of ``robust``, 56.8 with max and 58.2 with mean
    against 68.6. The forecast residual adds false positives, so this is not the
    default.
    """

    kind: ClassVar[str] = "ensemble"

    def __init__(self, *, how: str = "max", seed: int = 0) -> None:
        self.parts = (RobustEnsemble(window=500, seed=seed), ForecastResidual(window=50, seed=seed))
        self.how = how

    def score_one(self, x: float, t_ms: int) -> float:
        a, b = (p.score_one(x, t_ms) for p in self.parts)
        return max(a, b) if self.how == "max" else (a + b) / 2.0

    def signals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.parts:
            out.update(p.signals())
        return out

    def learn_one(self, x: float, t_ms: int) -> None:
        for p in self.parts:
            p.learn_one(x, t_ms)
