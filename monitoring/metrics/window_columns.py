"""One tumbling window (a size and a start) of every series of a partition, as columns.

``WindowColumns`` is ``WindowAccumulator`` turned sideways: instead of one object per
series and window, one object per window holds numpy arrays indexed by the series'
slot (count, sum, min, max, last, the event time of last, and the counter columns
first, its event time, increase and resets) and the window's values as chunks of
(slot, value) arrays. A batch of samples updates it with a handful of numpy
calls (``add``), whatever the number of series; ``add_one`` is the scalar form for
messages of a few samples. The results equal ``WindowAccumulator``'s exactly:

* sums add in arrival order (``np.add.at`` applies repeated indexes in order);
* ``last`` follows the greatest event time, ties going to the later sample;
* quantile ``q`` is the value at rank ``floor(q * (count - 1))`` while a series has at
  most ``EXACT_LIMIT`` values in the window; past that its values go into a DDSketch
  (``compact``, ``windows.add_many``), whose buckets do not depend on the order of adds;
* the counter columns take what the caller (``PartitionAggregator``, which holds each
  series' previous value) computed per sample: its ``step`` (the increase since the
  series' previous sample) and whether it was a reset are added up; ``first`` is the
  value of the first sample of the counter sequence (``in_order``) the window gets.
  A window with no such sample, or restored without counter state (``increase`` NaN),
  closes with the three as None.

>>> w = WindowColumns(10_000, 0, capacity=4, accuracy=0.01)
>>> w.add(np.array([0, 2, 0]), np.array([5, 6, 7]), np.array([3.0, 1.0, 2.0]),
...       np.array([0.0, 0.0, 2.0]), np.array([False, False, True]))
>>> w.add_one(2, 8, 9.0, 8.0, False)
>>> c = w.close()
>>> (c.slots, c.n, c.sum, c.last, c.first, c.increase, c.resets)
([0, 2], [2, 2], [5.0, 10.0], [2.0, 9.0], [3.0, 1.0], [2.0, 8.0], [1, 0])
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from ddsketch import DDSketch

from monitoring.metrics.windows import (
    EXACT_LIMIT,
    QUANTILES,
    WindowAccumulator,
    add_many,
    store_bins,
    store_offset,
)

NO_TS = -(2**62)
_EMPTY_SLOTS, _EMPTY_VALUES = np.zeros(0, np.int64), np.zeros(0)
COMPACT_MIN = 1 << 18  # buffered values before a window first moves big series to sketches


class Closed(NamedTuple):
    """A closed window's statistics, one list entry per present series (by slot);
    quantiles in ``QUANTILES`` order."""

    slots: list[int]
    n: list[int]
    sum: list[float]
    mean: list[float]
    last: list[float]
    min: list[float]
    max: list[float]
    p50: list[float]
    p90: list[float]
    p99: list[float]
    first: list[float | None]
    increase: list[float | None]
    resets: list[int | None]


# the per-slot columns: name, value of an empty slot, dtype
_COLUMNS = (
    ("count", 0, np.int64), ("sum", 0.0, np.float64), ("min", math.inf, np.float64),
    ("max", -math.inf, np.float64), ("last", math.nan, np.float64), ("last_ts", NO_TS, np.int64),
    ("first", math.nan, np.float64), ("first_ts", NO_TS, np.int64),
    ("increase", 0.0, np.float64), ("resets", 0, np.int64),
)  # fmt: skip


class WindowColumns:
    """Window ``[start, start + size)`` of every series slot of one partition."""

    count: np.ndarray
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray
    last: np.ndarray
    last_ts: np.ndarray
    first: np.ndarray
    first_ts: np.ndarray
    increase: np.ndarray
    resets: np.ndarray

    __slots__ = (
        "_compact_at", "accuracy", "buffered", "chunks", "count", "end", "few_slots",
        "few_values", "first", "first_ts", "increase", "last", "last_ts", "max", "min",
        "resets", "size", "sketches", "start", "sum",
    )  # fmt: skip

    def __init__(self, size: int, start: int, capacity: int, accuracy: float) -> None:
        self.size, self.start, self.end = size, start, start + size
        self.accuracy = accuracy  # the sketches' relative accuracy
        for name, fill, dtype in _COLUMNS:
            setattr(self, name, np.full(capacity, fill, dtype))
        self.chunks: list[tuple[np.ndarray, np.ndarray]] = []  # (slots, values) of batches
        self.few_slots: list[int] = []  # add_one's values, until the next consolidation
        self.few_values: list[float] = []
        self.buffered = 0
        self.sketches: dict[int, DDSketch] = {}  # slots past EXACT_LIMIT values
        self._compact_at = COMPACT_MIN

    def grow(self, capacity: int) -> None:
        """Make room for slots below ``capacity``."""
        extra = capacity - len(self.count)
        if extra <= 0:
            return
        for name, fill, dtype in _COLUMNS:
            setattr(self, name, np.concatenate([getattr(self, name), np.full(extra, fill, dtype)]))

    def add(
        self,
        slots: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        steps: np.ndarray,
        resets: np.ndarray,
        in_order: np.ndarray | None = None,
    ) -> None:
        """Add samples (parallel int64 slots, int64 event times, float64 values), in
        order, with their counter steps, reset flags and which samples are in the
        counter sequence (None: all)."""
        np.add.at(self.count, slots, 1)
        np.add.at(self.sum, slots, values)
        np.minimum.at(self.min, slots, values)
        np.maximum.at(self.max, slots, values)
        last_ts = self.last_ts
        np.maximum.at(last_ts, slots, ts)
        newest = ts == last_ts[slots]
        # repeated slots: numpy assigns in order, so the later of equal times wins
        self.last[slots[newest]] = values[newest]
        np.add.at(self.increase, slots, steps)
        if resets.any():
            np.add.at(self.resets, slots[resets], 1)
        new = self.first_ts[slots] == NO_TS
        if in_order is not None:
            new &= in_order
        if new.any():  # reversed: of repeated slots, the earliest sample is assigned last
            firsts = slots[new][::-1]
            self.first[firsts] = values[new][::-1]
            self.first_ts[firsts] = ts[new][::-1]
        self.chunks.append((slots, values))
        self.buffered += len(slots)
        if self.buffered > self._compact_at:
            self.compact()

    def add_one(
        self, slot: int, ts: int, value: float, step: float, reset: bool, in_order: bool = True
    ) -> None:
        """Add one sample: ``add`` for a single value, without numpy's per-call cost."""
        self.count[slot] += 1
        self.sum[slot] += value
        if value < self.min[slot]:
            self.min[slot] = value
        if value > self.max[slot]:
            self.max[slot] = value
        if ts >= self.last_ts[slot]:
            self.last_ts[slot] = ts
            self.last[slot] = value
        if in_order:
            self.increase[slot] += step
            if reset:
                self.resets[slot] += 1
            if self.first_ts[slot] == NO_TS:
                self.first_ts[slot] = ts
                self.first[slot] = value
        self.few_slots.append(slot)
        self.few_values.append(value)
        self.buffered += 1
        if self.buffered > self._compact_at:
            self.compact()

    def present(self) -> np.ndarray:
        """Slots with at least one value, ascending."""
        return np.flatnonzero(self.count)

    def _consolidated(self) -> tuple[np.ndarray, np.ndarray]:
        """The buffered (slots, values) as one pair, grouped by slot in arrival order."""
        chunks = self.chunks
        if self.few_slots:
            chunks.append((np.array(self.few_slots, np.int64), np.array(self.few_values)))
            self.few_slots, self.few_values = [], []
        if not chunks:
            return _EMPTY_SLOTS, _EMPTY_VALUES
        if len(chunks) == 1:
            slots, values = chunks[0]
            if not len(slots) or (slots[1:] >= slots[:-1]).all():
                return slots, values  # grouped already (by the last consolidation)
        else:
            slots = np.concatenate([c[0] for c in chunks])
            values = np.concatenate([c[1] for c in chunks])
        # a stable sort of 16-bit keys is a radix sort: five times faster
        keys = slots.astype(np.uint16) if len(self.count) <= 1 << 16 else slots
        order = np.argsort(keys, kind="stable")
        slots, values = slots[order], values[order]
        self.chunks = [(slots, values)]
        return slots, values

    def compact(self) -> None:
        """Move the values of series past ``EXACT_LIMIT`` into their sketches."""
        slots, values = self._consolidated()
        big = np.flatnonzero(self.count > EXACT_LIMIT)
        if len(big):
            lo = np.searchsorted(slots, big, "left")
            hi = np.searchsorted(slots, big, "right")
            keep = np.ones(len(slots), bool)
            for slot, a, b in zip(big.tolist(), lo.tolist(), hi.tolist(), strict=True):
                if a == b:
                    continue
                sketch = self.sketches.get(slot)
                if sketch is None:
                    sketch = self.sketches[slot] = DDSketch(self.accuracy)
                add_many(sketch, values[a:b])
                keep[a:b] = False
            slots, values = slots[keep], values[keep]
            self.chunks = [(slots, values)]
        self.buffered = len(slots)
        self._compact_at = max(COMPACT_MIN, 2 * self.buffered)

    def close(self) -> Closed:
        """Every present series' statistics (the window is spent afterwards)."""
        self.compact()  # a series past EXACT_LIMIT now has every value in its sketch
        present = self.present()
        slots, values = self.chunks[0] if self.chunks else (_EMPTY_SLOTS, _EMPTY_VALUES)
        lo = np.searchsorted(slots, present, "left")
        n_buffered = np.searchsorted(slots, present, "right") - lo
        counts = self.count[present]
        sums = self.sum[present]
        quantiles = _group_quantiles(values, lo, n_buffered, counts <= EXACT_LIMIT).tolist()
        for j in np.flatnonzero(counts > EXACT_LIMIT).tolist():
            sketch = self.sketches.pop(int(present[j]))
            for q, column in zip(QUANTILES, quantiles, strict=True):
                column[j] = _quantile(sketch, q)
        increase = self.increase[present]
        counter: list[list[Any]] = [
            self.first[present].tolist(),
            increase.tolist(),
            self.resets[present].tolist(),
        ]
        # not finite (NaN: no counter state; ±Inf: steps that overflowed): unknown
        unknown = (self.first_ts[present] == NO_TS) | ~np.isfinite(increase)
        for j in np.flatnonzero(unknown).tolist():
            for column in counter:
                column[j] = None
        return Closed(
            present.tolist(), counts.tolist(), sums.tolist(), (sums / counts).tolist(),
            self.last[present].tolist(), self.min[present].tolist(), self.max[present].tolist(),
            *quantiles, *counter,
        )  # fmt: skip

    # -- checkpoints ------------------------------------------------------------------
    def states(self, slots: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        """(slot, ``WindowAccumulator.to_state`` dict with window identity) of ``slots``
        present here. Series past ``EXACT_LIMIT`` move into their sketches first."""
        self.compact()
        mine = slots[self.count[slots] > 0]
        if not len(mine):
            return
        buf_slots, buf_values = self.chunks[0] if self.chunks else (_EMPTY_SLOTS, _EMPTY_VALUES)
        lo = np.searchsorted(buf_slots, mine, "left").tolist()
        hi = np.searchsorted(buf_slots, mine, "right").tolist()
        rows = zip(
            mine.tolist(),
            self.count[mine].tolist(),
            self.sum[mine].tolist(),
            self.min[mine].tolist(),
            self.max[mine].tolist(),
            self.last[mine].tolist(),
            self.last_ts[mine].tolist(),
            lo,
            hi,
            zip(
                self.first[mine].tolist(),
                self.first_ts[mine].tolist(),
                self.increase[mine].tolist(),
                self.resets[mine].tolist(),
                strict=True,
            ),
            strict=True,
        )
        for slot, count, total, lo_v, hi_v, last, last_ts, a, b, counter in rows:
            d: dict[str, Any] = {
                "window_ms": self.size, "start_ms": self.start, "count": count, "sum": total,
                "min": lo_v, "max": hi_v, "last": last, "last_ts": last_ts, "first": counter[0],
                "first_ts": counter[1], "increase": counter[2], "resets": counter[3],
                "values": None, "zero_count": 0, "pos_offset": 0, "pos_bins": [], "neg_offset": 0,
                "neg_bins": [],
            }  # fmt: skip
            sketch = self.sketches.get(slot)
            if sketch is None:
                d["values"] = buf_values[a:b].tolist()
            else:
                d["zero_count"] = int(sketch._zero_count)
                d["pos_offset"] = store_offset(sketch._store)
                d["pos_bins"] = store_bins(sketch._store)
                d["neg_offset"] = store_offset(sketch._negative_store)
                d["neg_bins"] = store_bins(sketch._negative_store)
            yield slot, d

    def restore(self, slot: int, state: dict[str, Any]) -> None:
        """Load one series' window from a ``states`` dict (slot must be empty here)."""
        self.count[slot] = state["count"]
        self.sum[slot] = state["sum"]
        self.min[slot] = state["min"]
        self.max[slot] = state["max"]
        self.last[slot] = state["last"]
        self.last_ts[slot] = state["last_ts"]
        if "increase" in state:
            self.first[slot] = state["first"]
            self.first_ts[slot] = state["first_ts"]
            self.increase[slot] = state["increase"]
            self.resets[slot] = state["resets"]
        else:  # a state from before counter columns: unknown, closed as None
            self.first_ts[slot] = state["last_ts"]
            self.increase[slot] = math.nan
        values = state["values"]
        if values is None:
            sketch = WindowAccumulator.from_state(state, self.accuracy).sketch
            assert sketch is not None
            self.sketches[slot] = sketch
        elif values:
            self.chunks.append((np.full(len(values), slot, np.int64), np.array(values, float)))
            self.buffered += len(values)


_Q = np.array(QUANTILES)[:, None]
_DENSE_FACTOR, _DENSE_SLACK = 4, 1024  # the padded matrix's size limit


def _group_quantiles(
    values: np.ndarray, lo: np.ndarray, sizes: np.ndarray, exact: np.ndarray
) -> np.ndarray:
    """Quantiles (rows: ``QUANTILES``) of the groups ``values[lo[g]:lo[g] + sizes[g]]``
    whose ``exact`` is true: the value at rank ``floor(q * (size - 1))`` of each. The
    other groups' entries are meaningless (their quantiles come from sketches).

    When the groups are of similar sizes they are scattered into the rows of a matrix
    padded with +inf and sorted row-wise (a few tiny sorts), else sorted by (group,
    value) with ``np.lexsort``.
    """
    n_groups = len(sizes)
    ranks = np.floor(_Q * np.maximum(sizes - 1, 0)).astype(np.int64)
    if not n_groups or not len(values):
        return np.full((len(QUANTILES), n_groups), math.nan)
    width = int(sizes[exact].max()) if exact.any() else 1
    if n_groups * width <= _DENSE_FACTOR * len(values) + _DENSE_SLACK:
        row = np.repeat(np.arange(n_groups), sizes)
        col = np.arange(len(values)) - np.repeat(lo, sizes)
        keep = exact[row]
        matrix = np.full((n_groups, width), math.inf)
        matrix[row[keep], col[keep]] = values[keep]
        matrix.sort(axis=1)
        return matrix[np.arange(n_groups), np.minimum(ranks, width - 1)]
    group = np.repeat(np.arange(n_groups), sizes)
    ordered = values[np.lexsort((values, group))]
    return ordered[np.minimum(lo + ranks, len(values) - 1)]


def _quantile(sketch: DDSketch, q: float) -> float:
    v = sketch.get_quantile_value(q)
    return math.nan if v is None else float(v)
