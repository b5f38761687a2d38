"""``monitoring anomaly replay``'s file side: CSV files in, scored CSV files out.

Input: a CSV with a header holding ``timestamp`` and ``value`` columns (the forms
:func:`monitoring.anomaly.replay.parse_timestamp_ms` reads). Output:
``timestamp,value,anomaly_score``, one row per input row, in order, timestamp and
value echoed as given. An empty value cell is NaN (score 0.0, see the scorer).
"""

from __future__ import annotations

import csv
from pathlib import Path

from monitoring.anomaly.registry import DEFAULT_DETECTOR
from monitoring.anomaly.replay import ReplayError, replay_rows
from monitoring.anomaly.scorer import SeriesScorer


def replay_file(src: Path, dst: Path, detector: str = DEFAULT_DETECTOR) -> int:
    """Score ``src`` into ``dst`` with a fresh scorer; returns the number of rows."""
    with open(src, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("timestamp", "value") if c not in header]
        if missing:
            raise ReplayError(f"{src}: no {' or '.join(missing)} column in header {header}")
        ti, vi = header.index("timestamp"), header.index("value")
        rows = ((r[ti], r[vi]) for r in reader if r)
        dst.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with open(dst, "w", newline="", encoding="utf-8") as out:
            w = csv.writer(out)
            w.writerow(["timestamp", "value", "anomaly_score"])
            for ts, val, score in replay_rows(rows, SeriesScorer(detector), str(src)):
                w.writerow([ts, val, repr(score)])
                n += 1
    return n


def replay_tree(src_dir: Path, dst_dir: Path, detector: str = DEFAULT_DETECTOR) -> list[Path]:
    """Replay every ``*.csv`` under ``src_dir`` into the same relative path under
    ``dst_dir`` (NAB's results layout when ``src_dir`` is NAB's ``data/``)."""
    done = []
    for src in sorted(src_dir.rglob("*.csv")):
        dst = dst_dir / src.relative_to(src_dir)
        replay_file(src, dst, detector)
        done.append(dst)
    if not done:
        raise ReplayError(f"no *.csv files under {src_dir}")
    return done
