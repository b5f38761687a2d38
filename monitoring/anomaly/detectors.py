"""Online anomaly detectors with River's ``score_one`` / ``learn_one`` interface.

A detector sees one series, one finite value at a time (the scorer filters NaN/inf
and clips huge values first), scores before it learns, and returns a score in
[0, 1]. ``score_one`` does not change what the detector has learned; ``signals()``
names the components of the last score, each normalised to [0, 1], and
``explain(alert_level)`` gives the expected value, the band of values the detector
would not have flagged, and the components that fired.

* :class:`RobustEnsemble` (the default, ``robust``). Three simple forecasters of the
  next value: the recent median (level), the previous value (persistence: the change)
  and the value seen at this time of day (a daily seasonal baseline, in 10-minute
  buckets, used only while it forecasts better than persistence). Each residual is a
  robust z-score against that forecaster's own recent residuals (median and IQR over
  a rolling window), so spikes, level shifts and slow drifts are measured in the
  series' own noise. A point is surprising when no forecaster explains it:
  ``min(max(level, change), seasonal)``. That raw surprise is scored by
  :class:`Likelihood` (Numenta's anomaly likelihood): its tail probability under the
  long-run distribution of the series' own surprises, on a log scale, so that one
  threshold means the same on every series. A surprise that is not new is damped,
  because production series repeat themselves: one no larger than the largest of the
  last 100 (a burst of events alerts once, on its first and largest points), one no
  larger than what the series did in the hour after this time of day yesterday (a
  daily job), or one seen around this time on each of the last two days (a daily job
  with jitter). A value outside the range seen so far (plus 10% of it) scores at least
  0.5: Numenta's "spatial anomaly", for level shifts to values never seen and for
  sensors stuck at a rail. The settings, the reason for each and their
  cross-validated score are in docs/anomaly.md.
* :class:`RollingZScore` (``zscore``): the calibration baseline, z-score over the
  previous 288 points.

Detectors built on River (HalfSpaceTrees, ADWIN/PageHinkley, HoltWinters, and a max
ensemble) are in :mod:`monitoring.anomaly.river_detectors`.
"""

from __future__ import annotations

import functools
import math
import sys
from array import array
from statistics import NormalDist
from typing import Any, ClassVar, NamedTuple, Protocol

from monitoring.anomaly.memory import deep_sizeof
from monitoring.anomaly.state import (
    StateError,
    number,
    pack_explicit,
    unpack_explicit,
    values_within,
    whole,
)
from monitoring.anomaly.windows import MAX_SIZE, FixedWindow, Ring, check_size

DAY_MS = 86_400_000
MAX_BUCKETS = 1440  # time-of-day buckets: one a minute at most
MAX_RECUR_DAYS = 31
VALUE_LIMIT = 1e100  # the scorer clips values to this (``scorer.CLIP``)
STATE_LIMIT = 1e300  # any other double of a state: finite, with room to spare
_SQRT2 = math.sqrt(2.0)
_NAN = math.nan


class Explanation(NamedTuple):
    """What the last scored point was judged against.

    ``expected`` and the band ``[lower, upper]`` are in the series' unit (``None`` when
    the detector has no forecast yet, or none at all); ``components`` names the parts
    whose own surprise reached the alert level.
    """

    expected: float | None
    lower: float | None
    upper: float | None
    components: tuple[str, ...]


NO_BAND = Explanation(None, None, None, ())


class Detector(Protocol):
    """What :class:`monitoring.anomaly.scorer.SeriesScorer` drives."""

    def score_one(self, x: float, t_ms: int) -> float: ...

    def learn_one(self, x: float, t_ms: int) -> None: ...

    def signals(self) -> dict[str, float]: ...

    def explain(self, alert_level: float) -> Explanation:
        """The band and components of the point last passed to ``score_one``."""
        ...

    def to_state(self) -> bytes: ...

    def nbytes(self) -> int: ...


def normalised(z: float) -> float:
    """A non-negative z-score as the probability mass within ±z of a normal: [0, 1).

    >>> normalised(0.0), round(normalised(1.96), 3)
    (0.0, 0.95)
    """
    return math.erf(z / _SQRT2) if z < 40.0 else 1.0


_STD_NORMAL = NormalDist()


@functools.lru_cache(maxsize=64)
def _score_z(score: float) -> float:
    """The z whose upper normal tail probability scores ``score`` (``tail = 10^-10s``)."""
    tail = 10.0 ** (-10.0 * min(score, 1.0))
    return _STD_NORMAL.inv_cdf(1.0 - tail) if tail < 1.0 else -math.inf


class Likelihood:
    """Numenta-style anomaly likelihood of a raw surprise ``raw >= 0``.

    Keeps exponentially weighted mean and variance of ``log1p(raw)`` (weight
    ``max(alpha, 1/n)``) and returns ``min(1, -log10(tail) / 10)``, where ``tail`` is
    the upper normal tail probability of the current value: 0.03 for an ordinary
    point, 1.0 for a one-in-10^10 surprise.

    >>> lk = Likelihood()
    >>> for raw in [1.0, 2.0, 1.0, 2.0]:
    ...     lk.learn(raw)
    >>> lk.score(1.5) < 0.1 < lk.score(50.0)
    True
    """

    __slots__ = ("alpha", "m", "n", "sd_floor", "v")

    def __init__(self, alpha: float = 1 / 2000, sd_floor: float = 0.1) -> None:
        self.alpha = alpha
        self.sd_floor = sd_floor
        self.n = 0
        self.m = 0.0
        self.v = 1.0

    def score(self, raw: float) -> float:
        sd = math.sqrt(self.v)
        z = (math.log1p(raw) - self.m) / (sd if sd > self.sd_floor else self.sd_floor)
        if z <= 0.0:
            return -math.log10(0.5) / 10.0
        tail = 0.5 * math.erfc(z / _SQRT2)
        return min(1.0, -math.log10(tail if tail > 1e-300 else 1e-300) / 10.0)

    def raw_at(self, score: float) -> float:
        """The raw surprise that scores ``score`` (the inverse of :meth:`score`).

        >>> lk = Likelihood()
        >>> for raw in [1.0, 2.0, 1.0, 2.0]:
        ...     lk.learn(raw)
        >>> round(lk.score(lk.raw_at(0.4)), 6)
        0.4
        """
        z = _score_z(score)
        sd = math.sqrt(self.v)
        r = self.m + z * (sd if sd > self.sd_floor else self.sd_floor)
        return math.expm1(r) if r > 0.0 else 0.0

    def learn(self, raw: float) -> None:
        r = math.log1p(raw)
        self.n += 1
        a = self.alpha if self.alpha * self.n > 1.0 else 1.0 / self.n
        dm = r - self.m
        self.m += a * dm
        self.v = (1.0 - a) * (self.v + a * dm * dm)

    def state(self) -> dict[str, float]:
        return {
            "alpha": self.alpha,
            "sd_floor": self.sd_floor,
            "n": self.n,
            "m": self.m,
            "v": self.v,
        }

    @classmethod
    def from_state(cls, s: Any) -> Likelihood:
        if not isinstance(s, dict):
            raise StateError(f"likelihood state {s!r} is not a mapping"[:300])
        lk = cls(number(s, "alpha", lo=0.0, hi=1.0), number(s, "sd_floor", lo=1e-12, hi=1e12))
        lk.n, lk.m = whole(s, "n", 0, 2**62), number(s, "m", lo=-1e300, hi=1e300)
        lk.v = number(s, "v", lo=0.0, hi=1e300)
        return lk


class RobustEnsemble:
    """Level, change and seasonal residuals, robustly scaled, combined, likelihood-scored.

    Per point: robust z-scores of the value (against the window's median), of the
    change from the previous value, and of the difference from the time-of-day
    profile (the last value seen in the same ``86400 / buckets`` s bucket); each
    scaled by the IQR of its own window, floored at half the mean absolute change (so
    that a series that is mostly one value, IQR 0, still has a meaningful scale). The
    raw surprise ``min(max(level, change), seasonal)`` goes through
    :class:`Likelihood`; a surprise not larger than the largest of the previous
    ``record`` points (times ``record_margin``) is halved (a burst fires once, on its
    largest point so far); the daily damping and the recurrence over ``recur_days``
    days are described in the module docstring.

    State: three rolling windows of ``window`` doubles (16 bytes per slot each), the
    profile (``buckets`` doubles), the last ``record`` raw surprises, the largest raw
    surprise per bucket for the last day and for ``recur_days + 1`` calendar days
    (``buckets`` doubles each) and a few scalars. The timestamp is used only for the
    time-of-day bucket and the calendar day, so gaps and irregular sampling are fine.
    """

    kind: ClassVar[str] = "robust"

    def __init__(
        self,
        *,
        window: int = 600,
        buckets: int = 144,
        min_count: int = 20,
        rel_floor: float = 1e-3,
        mae_alpha: float = 1 / 500,
        mae_floor: float = 0.5,
        likelihood_alpha: float = 1 / 1000,
        record: int = 100,
        record_damp: float = 0.5,
        record_margin: float = 1.02,
        recur_days: int = 2,
        recur_tol: int = 6,
        recur_damp: float = 0.3,
        daily_tol: int = 6,
        daily_damp: float = 0.6,
        daily_margin: float = 1.4,
        range_tol: float = 0.1,
        range_score: float = 0.5,
        range_min_count: int = 300,
        range_decay: float = 1e-4,
        seed: int = 0,
    ) -> None:
        del seed  # deterministic: nothing random
        check_size(window)  # the sizes first: nothing is allocated for a bad one
        check_size(record, least=0)
        if not (isinstance(buckets, int) and 1 <= buckets <= MAX_BUCKETS):
            raise ValueError(f"buckets must be a whole number in [1, {MAX_BUCKETS}]")
        if not (isinstance(recur_days, int) and 0 <= recur_days <= MAX_RECUR_DAYS):
            raise ValueError(f"recur_days must be a whole number in [0, {MAX_RECUR_DAYS}]")
        self.window, self.buckets, self.min_count = window, buckets, min_count
        self.rel_floor, self.mae_alpha, self.mae_floor = rel_floor, mae_alpha, mae_floor
        self.record, self.record_damp = record, record_damp
        self.record_margin = record_margin
        self.recur_days, self.recur_tol, self.recur_damp = recur_days, recur_tol, recur_damp
        self.hist = array("d", [0.0]) * (buckets * (recur_days + 1))
        self.hist_day = array("d", [-1.0]) * (recur_days + 1)
        self.daily_tol, self.daily_damp, self.daily_margin = daily_tol, daily_damp, daily_margin
        self.range_tol, self.range_score = range_tol, range_score
        self.range_min_count, self.range_decay = range_min_count, range_decay
        self.lo, self.hi, self.n = math.inf, -math.inf, 0  # range seen, points learned
        self._outside = False
        self.values = FixedWindow(window)
        self.changes = FixedWindow(window)
        self.seasonal = FixedWindow(window)
        self.profile = array("d", [_NAN]) * buckets
        self.recent = Ring(record)  # the last `record` raw surprises
        self.day_raw = array("d", [0.0]) * buckets  # largest raw surprise per bucket...
        self.day_index = array("d", [-1.0]) * buckets  # ...on this day (days since epoch)
        self.prev = _NAN
        self.mae_change = 0.0
        self.mae_seasonal = 0.0
        self.lik = Likelihood(likelihood_alpha)
        self._key: tuple[float, int] | None = None
        self._parts: tuple[int, float, float, float, float, float, float] = (0,) + (0.0,) * 6

    def _compute(self, x: float, t_ms: int) -> tuple[int, float, float, float, float, float, float]:
        if self._key == (x, t_ms):
            return self._parts
        b = (t_ms % DAY_MS) * self.buckets // DAY_MS
        d = x - self.prev  # NaN before the first value
        e = x - self.profile[b]  # NaN for a bucket never seen
        level = change = 0.0
        seasonal = math.inf
        if len(self.values) >= self.min_count:
            floor = self._floor()
            level = self.values.robust_z(x, floor)
            if d == d and len(self.changes) >= self.min_count:
                change = self.changes.robust_z(d, floor)
            if (
                e == e
                and d == d
                and len(self.seasonal) >= self.min_count
                and self.mae_seasonal < self.mae_change
            ):
                seasonal = self.seasonal.robust_z(e, floor)
        raw = min(max(level, change), seasonal)
        self._key = (x, t_ms)
        self._parts = (b, d, e, level, change, seasonal, raw)
        return self._parts

    def _floor(self) -> float:
        """The least scale of a residual (the class docstring); values not empty."""
        return (
            max(self.rel_floor * abs(self.values.median()), self.mae_floor * self.mae_change) + 1e-9
        )

    def explain(self, alert_level: float) -> Explanation:
        """The band of values no model finds surprising at ``alert_level`` (before the
        damping of recurring surprises), around the best forecast.

        Each residual model accepts ``forecast ± r * scale``, ``r`` the raw surprise that
        the likelihood scores ``alert_level``; level and change must both accept a value
        (their intersection; the change's band alone when they do not overlap), the
        seasonal model alone suffices (the hull of the two bands). The expected value is
        the seasonal forecast when that model is in use, else the band's middle.
        """
        b, d, _, level, change, seasonal, _ = self._parts
        fired: tuple[str, ...] = ("range",) if self._outside else ()
        if len(self.values) < self.min_count:
            return Explanation(None, None, None, fired)
        r = self.lik.raw_at(alert_level)
        floor = self._floor()
        vals = self.values
        sl = r * vals.scale(floor)
        lo, hi = vals.median() - sl, vals.median() + sl
        if d == d and len(self.changes) >= self.min_count:
            cc = self.prev + self.changes.median()
            sc = r * self.changes.scale(floor)
            lo2, hi2 = max(lo, cc - sc), min(hi, cc + sc)
            lo, hi = (lo2, hi2) if lo2 <= hi2 else (cc - sc, cc + sc)
        expected = 0.5 * (lo + hi)
        if seasonal != math.inf:
            expected = self.profile[b] + self.seasonal.median()
            ss = r * self.seasonal.scale(floor)
            lo, hi = min(lo, expected - ss), max(hi, expected + ss)
        parts = (("level", level), ("change", change), ("seasonal", seasonal))
        fired = tuple(n for n, z in parts if r <= z < math.inf) + fired
        return Explanation(expected, lo, hi, fired)

    def score_one(self, x: float, t_ms: int) -> float:
        raw = self._compute(x, t_ms)[6]
        score = self.lik.score(raw)
        if self.recent and raw <= self.record_margin * self.recent.max():
            score *= self.record_damp
        earlier = (
            self._earlier_days_max(self._parts[0], t_ms // DAY_MS) if self.daily_tol >= 0 else -1.0
        )
        if raw <= self.daily_margin * earlier:
            score *= self.daily_damp
        # (checked only where it can matter: a score of 0.1 is far below any alert level)
        if self.recur_days and score > 0.1 and self._recurs(raw, self._parts[0], t_ms // DAY_MS):
            score *= self.recur_damp
        self._outside = self.n >= self.range_min_count and not (
            self.lo - self.range_tol * (self.hi - self.lo)
            <= x
            <= self.hi + self.range_tol * (self.hi - self.lo)
        )
        return max(score, self.range_score) if self._outside else score

    def _recurs(self, raw: float, b: int, today: int) -> bool:
        """Whether a surprise as large as ``raw`` (within ``daily_margin``) was seen
        within ``recur_tol`` buckets of this time of day on each of the previous
        ``recur_days`` days: a daily job, not an incident. Looks both ways in time,
        across midnight, on the stored days only."""
        nb, hist, hist_day, slots = self.buckets, self.hist, self.hist_day, self.recur_days + 1
        for j in range(1, slots):
            m = 0.0
            for g in range(
                (today - j) * nb + b - self.recur_tol, (today - j) * nb + b + self.recur_tol + 1
            ):
                day, k = divmod(g, nb)
                slot = day % slots
                if day < today and hist_day[slot] == day and hist[slot * nb + k] > m:
                    m = hist[slot * nb + k]
            if raw > self.daily_margin * m:
                return False
        return True

    def _earlier_days_max(self, b: int, today: int) -> float:
        """Largest raw surprise within ``daily_tol`` buckets of ``b`` whose last update
        was on an earlier calendar day. Each bucket keeps only its last day, so in a
        regular series this is the previous day from this time to ``daily_tol``
        buckets later (the buckets before ``b`` already hold today's points)."""
        nb, idx, raws = self.buckets, self.day_index, self.day_raw
        m = 0.0
        for k in range(b - self.daily_tol, b + self.daily_tol + 1):
            k %= nb
            if 0.0 <= idx[k] < today and raws[k] > m:
                m = raws[k]
        return m

    def signals(self) -> dict[str, float]:
        _, _, _, level, change, seasonal, _ = self._parts
        out = {
            "level": normalised(level),
            "change": normalised(change),
            "range": 1.0 if self._outside else 0.0,
        }
        if seasonal != math.inf:
            out["seasonal"] = normalised(seasonal)
        return out

    def learn_one(self, x: float, t_ms: int) -> None:
        b, d, e, _, _, _, raw = self._compute(x, t_ms)
        self.values.push(x)
        if d == d:
            self.changes.push(d)
            self.mae_change += (abs(d) - self.mae_change) * self.mae_alpha
        if e == e:
            self.seasonal.push(e)
            self.mae_seasonal += (abs(e) - self.mae_seasonal) * self.mae_alpha
        self.profile[b] = x
        today = float(t_ms // DAY_MS)
        if self.day_index[b] != today:
            self.day_index[b], self.day_raw[b] = today, raw
        elif raw > self.day_raw[b]:
            self.day_raw[b] = raw
        self.prev = x
        self.n += 1
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x
        self.hi -= self.range_decay * (self.hi - x)
        self.lo += self.range_decay * (x - self.lo)
        self.lik.learn(raw)
        if self.recur_days:
            slot = int(today) % (self.recur_days + 1)
            base = slot * self.buckets
            if self.hist_day[slot] != today:
                self.hist_day[slot] = today
                for k in range(base, base + self.buckets):
                    self.hist[k] = 0.0
            if raw > self.hist[base + b]:
                self.hist[base + b] = raw
        self.recent.push(raw)
        self._key = None

    def to_state(self) -> bytes:
        scalars = {
            "window": self.window,
            "buckets": self.buckets,
            "min_count": self.min_count,
            "rel_floor": self.rel_floor,
            "mae_alpha": self.mae_alpha,
            "mae_floor": self.mae_floor,
            "record": self.record,
            "record_damp": self.record_damp,
            "record_margin": self.record_margin,
            "recur_days": self.recur_days,
            "recur_tol": self.recur_tol,
            "recur_damp": self.recur_damp,
            "daily_tol": self.daily_tol,
            "daily_damp": self.daily_damp,
            "daily_margin": self.daily_margin,
            "range_tol": self.range_tol,
            "range_score": self.range_score,
            "range_min_count": self.range_min_count,
            "range_decay": self.range_decay,
            "lo": self.lo,
            "hi": self.hi,
            "n": self.n,
            "prev": self.prev,
            "mae_change": self.mae_change,
            "mae_seasonal": self.mae_seasonal,
            "lik": self.lik.state(),
        }
        arrays = {
            "values": self.values.chronological(),
            "changes": self.changes.chronological(),
            "seasonal": self.seasonal.chronological(),
            "profile": self.profile,
            "recent": self.recent.chronological(),
            "day_raw": self.day_raw,
            "day_index": self.day_index,
            "hist": self.hist,
            "hist_day": self.hist_day,
        }
        return pack_explicit(scalars, arrays)

    @classmethod
    def from_state(cls, data: bytes) -> RobustEnsemble:
        """Inverse of ``to_state``; ``StateError`` (with the reason) for a state that is
        not one: every size is checked against its bound before anything is allocated,
        every buffer's length against the sizes, every scalar's type."""
        s, a = unpack_explicit(data)
        big = 2**62
        window = whole(s, "window", 1, MAX_SIZE)
        buckets = whole(s, "buckets", 1, MAX_BUCKETS)
        record = whole(s, "record", 0, MAX_SIZE)
        recur_days = whole(s, "recur_days", 0, MAX_RECUR_DAYS, 0)  # older checkpoints: none
        det = cls(
            window=window,
            buckets=buckets,
            min_count=whole(s, "min_count", 0, big),
            rel_floor=number(s, "rel_floor", lo=0.0, hi=1e300),
            mae_alpha=number(s, "mae_alpha", lo=0.0, hi=1.0),
            mae_floor=number(s, "mae_floor", lo=0.0, hi=1e300),
            record=record,
            record_damp=number(s, "record_damp", lo=0.0, hi=1.0),
            record_margin=number(
                s, "record_margin", 1.0, 0.0, 1e300
            ),  # checkpoints from before the margin
            recur_days=recur_days,  # and before the recurrence damping
            recur_tol=whole(s, "recur_tol", -1, MAX_BUCKETS, 6),  # loops over as many buckets
            recur_damp=number(s, "recur_damp", 1.0, 0.0, 1.0),
            daily_tol=whole(s, "daily_tol", -1, MAX_BUCKETS, -1),  # from before daily damping
            daily_damp=number(s, "daily_damp", 1.0, 0.0, 1.0),
            daily_margin=number(s, "daily_margin", 1.0, 0.0, 1e300),
            range_score=number(s, "range_score", 0.0, 0.0, 1.0),  # and before the range novelty
            range_tol=number(s, "range_tol", 0.1, 0.0, 1e300),
            range_min_count=whole(s, "range_min_count", -big, big, 300),
            range_decay=number(s, "range_decay", 1e-4, 0.0, 1.0),
        )
        det.lo, det.hi = number(s, "lo", math.inf), number(s, "hi", -math.inf)
        det.n = whole(s, "n", 0, big, 0)
        sizes = {"values": window, "changes": window, "seasonal": window, "recent": record}
        exact = {"profile": buckets, "day_raw": buckets, "day_index": buckets,
                 "hist": buckets * (recur_days + 1), "hist_day": recur_days + 1}  # fmt: skip
        for name, most in sizes.items():
            if name not in a or len(a[name]) > most:
                raise StateError(f"detector state: {name} missing or over {most} values")
        for name, n in exact.items():
            if name in a and len(a[name]) != n:
                raise StateError(f"detector state: {name} has {len(a[name])} values, not {n}")
        if "profile" not in a:
            raise StateError("detector state: profile missing")
        # values as the scorer feeds them (within ±1e100), their differences, surprises
        det.values = FixedWindow(window, values_within(a["values"], "values", VALUE_LIMIT))
        det.changes = FixedWindow(window, values_within(a["changes"], "changes", 2 * VALUE_LIMIT))
        seasonal = values_within(a["seasonal"], "seasonal", 2 * VALUE_LIMIT)
        det.seasonal = FixedWindow(window, seasonal)
        det.profile = values_within(a["profile"], "profile", VALUE_LIMIT, nan=True)
        det.recent = Ring(record, values_within(a["recent"], "recent", STATE_LIMIT))
        if "day_raw" in a and "day_index" in a:
            det.day_raw = values_within(a["day_raw"], "day_raw", STATE_LIMIT)
            det.day_index = values_within(a["day_index"], "day_index", STATE_LIMIT)
        if "hist" in a and "hist_day" in a:
            det.hist = values_within(a["hist"], "hist", STATE_LIMIT)
            det.hist_day = values_within(a["hist_day"], "hist_day", STATE_LIMIT)
        det.prev = number(s, "prev")
        det.mae_change = number(s, "mae_change", lo=0.0, hi=1e300)
        det.mae_seasonal = number(s, "mae_seasonal", lo=0.0, hi=1e300)
        det.lik = Likelihood.from_state(s.get("lik"))
        return det

    def nbytes(self) -> int:
        """Bytes of the whole object graph (arrays with their spare capacity)."""
        return deep_sizeof(self)


class RollingZScore:
    """``|x - mean| / std`` over the previous ``window`` points, as ``z / (z + 4)``.

    Mean and standard deviation are recomputed from the window with ``math.fsum`` at
    every point (running sums lose all precision on values around 1e8). A window
    whose spread is below ``1e-6`` of its mean (or of 1) counts as constant, and a
    value off that constant scores ``1.0``.
    """

    kind: ClassVar[str] = "zscore"

    def __init__(self, *, window: int = 288, seed: int = 0) -> None:
        del seed
        check_size(window)
        self.window = window
        self.ring = array("d")
        self.head = 0
        self._z = 0.0

    def score_one(self, x: float, t_ms: int) -> float:
        ring = self.ring
        n = len(ring)
        z = 0.0
        if n >= 2:
            mean = math.fsum(ring) / n
            sd = math.sqrt(math.fsum((v - mean) ** 2 for v in ring) / n)
            if sd > 1e-6 * (abs(mean) + 1.0):
                z = abs(x - mean) / sd
            elif abs(x - mean) > 1e-6 * (abs(mean) + 1.0):
                z = math.inf
        self._z = z
        return 1.0 if z == math.inf else z / (z + 4.0)

    def signals(self) -> dict[str, float]:
        return {"zscore": normalised(self._z)}

    def explain(self, alert_level: float) -> Explanation:
        """``mean ± z * sd`` of the window, ``z`` the z-score that scores ``alert_level``."""
        ring = self.ring
        n = len(ring)
        z_alert = 4.0 * alert_level / (1.0 - alert_level) if alert_level < 1.0 else math.inf
        fired = ("zscore",) if self._z >= z_alert else ()
        if n < 2:
            return Explanation(None, None, None, fired)
        mean = math.fsum(ring) / n
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in ring) / n)
        return Explanation(mean, mean - z_alert * sd, mean + z_alert * sd, fired)

    def learn_one(self, x: float, t_ms: int) -> None:
        if len(self.ring) < self.window:
            self.ring.append(x)
        else:
            self.ring[self.head] = x
            self.head = (self.head + 1) % self.window

    def to_state(self) -> bytes:
        return pack_explicit({"window": self.window}, {"ring": self.chronological()})

    def chronological(self) -> array:
        return self.ring[self.head :] + self.ring[: self.head]

    @classmethod
    def from_state(cls, data: bytes) -> RollingZScore:
        s, a = unpack_explicit(data)
        det = cls(window=whole(s, "window", 1, MAX_SIZE))
        if "ring" not in a or len(a["ring"]) > det.window:
            raise StateError(f"detector state: ring missing or over {det.window} values")
        det.ring = values_within(a["ring"], "ring", VALUE_LIMIT)
        return det

    def nbytes(self) -> int:
        return sys.getsizeof(self.ring) + 300
