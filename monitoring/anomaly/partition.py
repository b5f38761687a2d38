"""The detectors of one source partition: one ``SeriesScorer`` per series.

Pure (no I/O, no clock). The anomaly agent feeds it the scored value of each closed
window in offset order; ``process`` returns the ``Scored`` point, or ``None`` when the
message was already applied before the last checkpoint (a replay after a restart).

Checkpoint records are keyed by series key; the value is the series' applied offset
and its last event time (two little-endian i64) followed by the scorer's own bytes
(``SeriesScorer.to_bytes``).
A series whose last point is older, in event time, than the newest point of the
partition minus ``idle_ms`` is evicted at the next checkpoint (a tombstone), so memory
is bounded by the series active in the eviction horizon, and by ``max_series``: a new
series beyond it is refused (:meth:`PartitionScorers.admits` says so before any state
is made), so a producer that puts a request id in a label cannot grow the detectors.
A ``budget`` (``metrics.budget.SeriesBudget``, ``anomaly.max_series_per_worker``)
bounds the detectors of every partition a worker holds the same way; series restored
with a partition are kept whatever it says, and count.
A checkpoint record that does not decode (a detector library changed its format, or a
corrupt or crafted record: its sizes are bounded before anything is allocated) is
dropped at restore, counted in ``undecodable`` with the first few reasons in
``refused``, and that series starts afresh.

>>> from monitoring.anomaly.scorer import SeriesScorer
>>> part = PartitionScorers(lambda name: SeriesScorer(), idle_ms=60_000)
>>> part.process(0, 'cpu{host="a"}', "cpu", 1_000, 1.0).score
0.0
>>> part.process(0, 'cpu{host="a"}', "cpu", 1_000, 1.0) is None  # replayed offset
True
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from monitoring.anomaly.scorer import Scored, SeriesScorer
from monitoring.anomaly.state import StateError
from monitoring.metrics.budget import SeriesBudget

_HEAD = struct.Struct("<qq")  # applied offset, last event time (ms)
MAX_REFUSALS = 10  # the reasons kept of the records refused at a restore


@dataclass
class _Series:
    scorer: SeriesScorer
    applied_offset: int
    last_ts_ms: int


class PartitionScorers:
    """Scorers of the series of one partition, with changelog checkpoints."""

    def __init__(
        self,
        make: Callable[[str], SeriesScorer],
        idle_ms: int,
        max_series: int = 0,
        budget: SeriesBudget | None = None,
    ) -> None:
        self._make = make
        self.idle_ms = idle_ms
        self.max_series = max_series
        self.budget = budget  # the worker's bound, shared with its other partitions
        self._series: dict[str, _Series] = {}
        self._dirty: set[str] = set()
        self.max_ts_ms = 0
        self.undecodable = 0
        self.refused: list[tuple[str, str]] = []  # (series, why): the first few refused

    def __len__(self) -> int:
        return len(self._series)

    @property
    def series_count(self) -> int:
        """Series with a detector."""
        return len(self._series)

    def admits(self, series: str) -> bool:
        """Whether ``series`` has, or may get, a detector (``max_series``, 0: no bound;
        and the ``budget``'s room, a refusal by it counted there).

        >>> part = PartitionScorers(lambda name: SeriesScorer(), idle_ms=60_000, max_series=1)
        >>> _ = part.process(0, "a", "a", 1_000, 1.0)
        >>> part.admits("a"), part.admits("b")
        (True, False)
        """
        if series in self._series:
            return True
        if self.max_series and len(self._series) >= self.max_series:
            return False
        if self.budget is not None and self.budget.room() <= 0:
            self.budget.refused += 1
            return False
        return True

    def process(
        self, offset: int, series: str, name: str, timestamp_ms: int, value: float
    ) -> Scored | None:
        """Score then learn ``value`` of ``series``; ``None`` if ``offset`` was applied."""
        st = self._series.get(series)
        if st is None:
            st = self._series[series] = _Series(self._make(name), -1, timestamp_ms)
        elif offset <= st.applied_offset:
            return None
        st.applied_offset = offset
        st.last_ts_ms = max(st.last_ts_ms, timestamp_ms)
        self.max_ts_ms = max(self.max_ts_ms, timestamp_ms)
        self._dirty.add(series)
        return st.scorer.update(timestamp_ms, value)

    @property
    def has_changes(self) -> bool:
        return bool(self._dirty)

    def checkpoint(self) -> list[tuple[str, bytes | None]]:
        """Changed series' records, then tombstones of evicted series."""
        records: list[tuple[str, bytes | None]] = []
        for key in sorted(self._dirty):
            st = self._series[key]
            records.append(
                (key, _HEAD.pack(st.applied_offset, st.last_ts_ms) + st.scorer.to_bytes())
            )
        self._dirty.clear()
        horizon = self.max_ts_ms - self.idle_ms
        for key, st in list(self._series.items()):
            if st.last_ts_ms < horizon:
                del self._series[key]
                records.append((key, None))
        return records

    def restore(self, table: Mapping[str, bytes]) -> None:
        """Load the latest changelog records (tombstoned keys already removed). A
        detector whose sizes exceed the configured detector's is refused: a record of a
        few hundred bytes may declare windows thousands of times larger (bounded, but
        times every series of the partition)."""
        configured: dict[str, tuple[int, ...]] = {}
        for key, raw in table.items():
            try:
                offset, last_ts = _HEAD.unpack_from(raw)
                scorer = SeriesScorer.from_bytes(raw[_HEAD.size :])
                shape = _shape(scorer)
                if shape is not None:
                    name = scorer.spec.name
                    if name not in configured:
                        made = self._make(key)  # the configured detector, else its defaults
                        if made.spec.name != name:
                            made = SeriesScorer(name)
                        configured[name] = _shape(made) or shape
                    most = configured[name]
                    if any(a > b for a, b in zip(shape, most, strict=True)):
                        raise StateError(
                            f"detector sizes {shape} over the configured detector's {most}"
                        )
            except Exception as e:  # a foreign, truncated or crafted record: start afresh
                self.undecodable += 1
                if len(self.refused) < MAX_REFUSALS:
                    self.refused.append((key, str(e)[:300]))
                continue
            if self.max_series and len(self._series) >= self.max_series:
                break
            self._series[key] = _Series(scorer, offset, last_ts)
            self.max_ts_ms = max(self.max_ts_ms, last_ts)

    def nbytes(self, sample: int = 32) -> int:
        """Approximate memory of every scorer of the partition: the deep size of up to
        ``sample`` of them, scaled to the count (a deep walk of every detector, tens of
        kilobytes each, cost the worker seconds per checkpoint with thousands of series).
        """
        n = len(self._series)
        if n <= sample:
            return sum(st.scorer.nbytes() for st in self._series.values())
        step = n // sample
        measured = [st.scorer.nbytes() for st in list(self._series.values())[::step][:sample]]
        return round(sum(measured) / len(measured) * n)


_SIZES = ("window", "buckets", "record", "recur_days")  # what a detector preallocates by


def _shape(scorer: SeriesScorer) -> tuple[int, ...] | None:
    """The sizes a detector preallocates by (None for one without them)."""
    det = scorer.detector
    if not all(isinstance(getattr(det, n, None), int) for n in _SIZES):
        return None
    return tuple(getattr(det, n) for n in _SIZES)
