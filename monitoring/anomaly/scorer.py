"""Per-series scoring: the one code path of the anomaly agent and the replay CLI.

:class:`SeriesScorer` wraps a registered detector with the policy around it:

* **warm-up**: the first ``warmup`` finite points are learned but score 0.0 and are
  reported with ``warm=False`` (no alerts);
* **score, then learn**; a point scoring at least the detector's ``alert_level`` is a
  detection: the next ``suppress`` points score 0.0 (one detection per incident), and
  up to ``protect`` consecutive detected points are not learned (confirmed anomalies
  do not teach the model that they are normal; River's ``protect_anomaly_detector``);
* **bad input**: a NaN or infinite value scores 0.0 with no signals and is neither
  learned nor counted; values beyond ±1e100 are clipped to it so that differences
  and squares stay finite. Gaps in time need nothing special.

``to_bytes``/``from_bytes`` checkpoint everything, so a restored scorer continues
exactly as one that never stopped. Layout: ``u8 version=1, u8 len, detector name,
i64 seen, i64 seed, u32 warmup, u32 cool, u32 protected``, then the detector's state
(:mod:`monitoring.anomaly.state`).

>>> sc = SeriesScorer("robust", warmup=3)
>>> [sc.update(60_000 * i, v).score for i, v in enumerate([1.0, 1.0, 1.0])]
[0.0, 0.0, 0.0]
>>> SeriesScorer.from_bytes(sc.to_bytes()).to_bytes() == sc.to_bytes()
True
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from monitoring.anomaly.registry import DEFAULT_DETECTOR, get_spec
from monitoring.anomaly.state import StateError

VERSION = 1
CLIP = 1e100
DEFAULT_WARMUP = 150
_HEAD = struct.Struct("<qqIII")


@dataclass(frozen=True)
class Scored:
    """The score of one point."""

    timestamp_ms: int
    value: float
    score: float  # in [0, 1]; 0.0 during warm-up
    signals: dict[str, float]  # contributing signals (component -> its normalised score)
    warm: bool  # False while in warm-up (no alerts)
    expected: float | None = None  # what the detector expected (None: no forecast)
    lower: float | None = None  # the band of values it would not have flagged
    upper: float | None = None
    components: tuple[str, ...] = ()  # the parts whose surprise reached the alert level


class SeriesScorer:
    """One series' detector with warm-up, suppression and protection (module docstring)."""

    def __init__(
        self,
        detector: str = DEFAULT_DETECTOR,
        *,
        warmup: int = DEFAULT_WARMUP,
        seed: int = 0,
        options: Mapping[str, Any] | None = None,
        alert_level: float | None = None,
    ) -> None:
        """``options``: keyword arguments of the detector's constructor (its settings;
        a checkpoint keeps them). ``alert_level``: where detections and suppression
        start instead of the detector's registered level (evaluation: the
        cross-validation replays at each candidate threshold; not checkpointed, a
        restored scorer uses the registered level)."""
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.spec = get_spec(detector)
        if alert_level is not None:
            self.spec = replace(self.spec, alert_level=alert_level)
        self.detector = self.spec.build(seed, **(options or {}))
        self.warmup = warmup
        self.seed = seed
        self.seen = 0
        self.cool = 0
        self.protected = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def update(self, timestamp_ms: int, value: float) -> Scored:
        """Score ``value`` at ``timestamp_ms``, then learn it (see the module docstring)."""
        warm = self.seen >= self.warmup
        if not math.isfinite(value):
            return Scored(timestamp_ms, value, 0.0, {}, warm)
        x = value if -CLIP <= value <= CLIP else math.copysign(CLIP, value)
        det = self.detector
        raw = det.score_one(x, timestamp_ms)
        signals = det.signals()
        expl = det.explain(self.spec.alert_level)
        score = raw if warm else 0.0
        spec = self.spec
        if self.cool > 0:
            self.cool -= 1
            score = 0.0
        elif score >= spec.alert_level:
            self.cool = spec.suppress
        if warm and raw >= spec.alert_level and self.protected < spec.protect:
            self.protected += 1
        else:
            det.learn_one(x, timestamp_ms)
            self.protected = 0
        self.seen += 1
        return Scored(timestamp_ms, value, score, signals, warm, *expl)

    def to_bytes(self) -> bytes:
        """Checkpoint of the whole scorer."""
        name = self.spec.name.encode()
        head = _HEAD.pack(self.seen, self.seed, self.warmup, self.cool, self.protected)
        return bytes([VERSION, len(name)]) + name + head + self.detector.to_state()

    @classmethod
    def from_bytes(cls, data: bytes) -> SeriesScorer:
        """Inverse of :meth:`to_bytes`; ``StateError`` with the reason for bytes that are
        not a checkpoint (the detector's sizes are bounded before anything is allocated:
        :mod:`monitoring.anomaly.state`)."""
        if len(data) < 2 or data[0] != VERSION:
            raise StateError(f"not a version-{VERSION} scorer checkpoint")
        pos = 2 + data[1]
        if len(data) < pos + _HEAD.size:
            raise StateError(f"scorer checkpoint truncated ({len(data)} bytes)")
        seen, seed, warmup, cool, protected = _HEAD.unpack_from(data, pos)
        sc = cls.__new__(cls)
        try:
            sc.spec = get_spec(data[2:pos].decode())
            sc.detector = sc.spec.restore(data[pos + _HEAD.size :])
        except StateError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
            raise StateError(f"scorer checkpoint: {e!r}"[:300]) from None
        sc.warmup, sc.seed, sc.seen, sc.cool, sc.protected = warmup, seed, seen, cool, protected
        return sc

    def nbytes(self) -> int:
        """Approximate memory of this scorer's state (the detector's plus ~100 bytes)."""
        return self.detector.nbytes() + 100
