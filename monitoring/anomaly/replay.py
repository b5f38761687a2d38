"""Back-testing: run :class:`SeriesScorer` (the agent's code path) over CSV files.

Input: a CSV with a header holding ``timestamp`` and ``value`` columns. Timestamps
are ISO-like (``2014-04-01 00:00:00``, naive means UTC) or epoch numbers (seconds
below 1e11, milliseconds above). Output: ``timestamp,value,anomaly_score``, one row
per input row, in order, timestamp and value echoed as given. An empty value cell is
NaN (score 0.0, see the scorer).

>>> parse_timestamp_ms("1970-01-01 00:00:01"), parse_timestamp_ms("2"), parse_timestamp_ms("2000")
(1000, 2000, 2000000)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from monitoring.anomaly.registry import DEFAULT_DETECTOR
from monitoring.anomaly.scorer import SeriesScorer

EPOCH_MS_FROM = 1e11  # numbers at least this large are epoch milliseconds


class ReplayError(ValueError):
    """An input file that cannot be replayed (the message names file and row)."""


def parse_timestamp_ms(text: str) -> int:
    """Epoch milliseconds of an ISO-like or epoch timestamp (module docstring)."""
    s = text.strip()
    try:
        num = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(num):
            raise ValueError(f"timestamp {text!r} is not finite")
        return round(num if abs(num) >= EPOCH_MS_FROM else num * 1000.0)
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def _parse_value(text: str) -> float:
    s = text.strip()
    return float(s) if s else math.nan


def replay_rows(
    rows: Iterator[tuple[str, str]], scorer: SeriesScorer, source: str = "<rows>"
) -> Iterator[tuple[str, str, float]]:
    """(timestamp, value, score) per (timestamp, value) text row."""
    for n, (ts, val) in enumerate(rows, start=2):
        try:
            t_ms = parse_timestamp_ms(ts)
        except ValueError:
            raise ReplayError(f"{source} row {n}: bad timestamp {ts!r}") from None
        try:
            v = _parse_value(val)
        except ValueError:
            raise ReplayError(f"{source} row {n}: bad value {val!r}") from None
        yield ts, val, scorer.update(t_ms, v).score


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
