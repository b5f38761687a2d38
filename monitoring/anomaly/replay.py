"""Back-testing: run :class:`SeriesScorer` (the agent's code path) over rows of text.

Pure: the rows come from a CSV with ``timestamp`` and ``value`` columns, read by
:mod:`monitoring.bench.replay_files` (the ``monitoring anomaly replay`` command).
Timestamps are ISO-like (``2014-04-01 00:00:00``, naive means UTC) or epoch numbers
(seconds below 1e11, milliseconds above); an empty value is NaN (score 0.0, see the
scorer).

>>> parse_timestamp_ms("1970-01-01 00:00:01"), parse_timestamp_ms("2"), parse_timestamp_ms("2000")
(1000, 2000, 2000000)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime

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
