"""Checked-in detector checkpoints restore: the persisted format does not drift.

``data/robust_scorer_state_v1.bin``: ``SeriesScorer.to_bytes()`` (scorer checkpoint
version 1, ``robust`` detector state in the explicit layout) of a small detector
(``window=40, buckets=24, record=10``, and ``recur_damp=0.5``, the default then; warm-up
50) after 300 points of
``generate(300, seed=21, daily_amplitude=5.0)``. If the format changes, bump the
version, keep this file and add one for the new version. (The River-based detectors'
pickled checkpoints are private to one installed River version and have no golden file.)
"""

from __future__ import annotations

from pathlib import Path

from monitoring.anomaly import SeriesScorer
from monitoring.anomaly.detectors import RobustEnsemble
from monitoring.anomaly.synthetic import generate

DATA = Path(__file__).parent / "data"


def test_robust_v1_checkpoint_restores_and_continues_like_the_original() -> None:
    blob = (DATA / "robust_scorer_state_v1.bin").read_bytes()
    restored = SeriesScorer.from_bytes(blob)
    assert restored.to_bytes() == blob  # every field read back, nothing dropped
    assert (restored.name, restored.seen, restored.warmup) == ("robust", 300, 50)
    det = restored.detector
    assert isinstance(det, RobustEnsemble)
    assert (det.window, det.buckets, det.record, len(det.values)) == (40, 24, 10, 40)
    # the same detector rebuilt from the same points continues identically
    s = generate(400, seed=21, daily_amplitude=5.0)
    opts = {"window": 40, "buckets": 24, "record": 10, "recur_damp": 0.5}  # v1 default 0.5
    fresh = SeriesScorer("robust", warmup=50, options=opts)
    for t, v in zip(s.timestamps_ms[:300], s.values[:300], strict=True):
        fresh.update(t, v)
    assert fresh.to_bytes() == blob
    rest = list(zip(s.timestamps_ms[300:], s.values[300:], strict=True))
    assert [restored.update(t, v) for t, v in rest] == [fresh.update(t, v) for t, v in rest]


def test_zscore_v1_checkpoint_restores_and_continues_like_the_original() -> None:
    """``data/zscore_scorer_state_v1.bin``: ``zscore`` (``window=30``, warm-up 50) after
    ``generate(300, seed=22)``."""
    blob = (DATA / "zscore_scorer_state_v1.bin").read_bytes()
    restored = SeriesScorer.from_bytes(blob)
    assert restored.to_bytes() == blob
    assert (restored.name, restored.seen) == ("zscore", 300)
    s = generate(350, seed=22)
    fresh = SeriesScorer("zscore", warmup=50, options={"window": 30})
    for t, v in zip(s.timestamps_ms[:300], s.values[:300], strict=True):
        fresh.update(t, v)
    assert fresh.to_bytes() == blob
    rest = list(zip(s.timestamps_ms[300:], s.values[300:], strict=True))
    assert [restored.update(t, v) for t, v in rest] == [fresh.update(t, v) for t, v in rest]
