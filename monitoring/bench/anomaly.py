"""``monitoring bench anomaly``: speed and memory of a detector, and its NAB score.

* points/s per core: ``SeriesScorer.update`` over synthetic series (daily cycle,
  noise, a spike and a level shift), single process, CPU time
  (``time.process_time``);
* bytes per series: ``SeriesScorer.nbytes()`` (approximate memory of the state) and
  ``len(to_bytes())`` (checkpoint size), after the series has filled its windows;
* with a NAB-layout directory: every data file replayed through the replay code path
  into a temporary results tree, scored by that directory's ``score.py`` at the
  detector's registered alert level (``--threshold``: where the scorer's detections,
  its suppression and the agent's events start, so the number is that of what ships;
  in-sample: the settings were chosen on those files. ``--cv`` gives the
  cross-validated figure).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from monitoring.anomaly.registry import get_spec
from monitoring.anomaly.scorer import SeriesScorer
from monitoring.anomaly.synthetic import generate
from monitoring.bench.replay_files import replay_tree

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


@dataclass
class AnomalyBench:
    detector: str
    points: int
    points_per_s: float
    nbytes: int
    checkpoint_bytes: int
    nab: dict[str, float] = field(default_factory=dict)  # profile -> normalised score
    nab_report: str = ""

    def summary_line(self) -> str:
        std = self.nab.get("standard")
        nab = f"{std:.2f}" if std is not None else "na"
        return (
            f"points_per_s={self.points_per_s:.0f} bytes_per_series={self.nbytes} "
            f"nab_standard={nab}"
        )


def measure_speed(detector: str, series: int = 10, points: int = 5000) -> tuple[float, int, int]:
    """(points per CPU-second, nbytes, checkpoint bytes) over ``series`` series."""
    data = [
        generate(
            points, seed=s, daily_amplitude=10.0, spike_at=points // 2, spike=12.0,
            shift_at=3 * points // 4, shift=6.0,
        )
        for s in range(series)
    ]  # fmt: skip
    scorers = []
    t0 = time.process_time()
    for d in data:
        sc = SeriesScorer(detector)
        update = sc.update
        for t, v in zip(d.timestamps_ms, d.values, strict=True):
            update(t, v)
        scorers.append(sc)
    cpu = time.process_time() - t0
    nbytes = max(sc.nbytes() for sc in scorers)
    ckpt = max(len(sc.to_bytes()) for sc in scorers)
    return series * points / cpu, nbytes, ckpt


def score_nab(nab_dir: Path, detector: str) -> tuple[dict[str, float], str]:
    """(profile -> score, the scorer's report) for ``detector`` over ``nab_dir``."""
    script = nab_dir / "score.py"
    if not (nab_dir / "data").is_dir() or not script.is_file():
        raise FileNotFoundError(f"{nab_dir} has no data/ directory or score.py")
    with tempfile.TemporaryDirectory(prefix="nab-results-") as tmp:
        out = Path(tmp) / "results"
        replay_tree(nab_dir / "data", out, detector)
        summary = Path(tmp) / "summary.json"
        proc = subprocess.run(
            [sys.executable, str(script), "--nab", str(nab_dir), "--results", str(out),
             "--threshold", repr(get_spec(detector).alert_level), "--by-category",
             "--json", str(summary)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"score.py failed: {proc.stderr.strip()}")
        res = json.loads(summary.read_text())
    scores = {p: float(res["profiles"][p]["score"]) for p in PROFILES if p in res["profiles"]}
    return scores, proc.stdout


def run(detector: str, nab_dir: Path | None = None) -> AnomalyBench:
    pps, nbytes, ckpt = measure_speed(detector)
    res = AnomalyBench(detector, 50_000, pps, nbytes, ckpt)
    if nab_dir is not None:
        res.nab, res.nab_report = score_nab(nab_dir, detector)
    return res
