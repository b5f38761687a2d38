"""One event-time tumbling window of one series: count, sum, min, max, last, quantiles.

Quantile ``q`` is the value at rank ``floor(q * (count - 1))`` of the window's values.
Up to ``EXACT_LIMIT`` values the window keeps them (a compact ``array('d')``) and the
quantiles are exact; past that it moves them into a DDSketch (Datadog's mergeable
sketch, package ``ddsketch``), whose quantiles lie within ``relative_accuracy`` of the
exact value. Most windows of scraped metrics hold a handful of values, where a
sketch costs far more than the values (a new sketch is 5 µs, an add 1.3 µs, a
quantile up to 20 µs, against 0.05 µs for an append).

>>> w = WindowAccumulator(0.01)
>>> for t, v in [(1, 3.0), (2, 1.0), (3, 2.0)]:
...     w.add(t, v)
>>> (w.count, w.sum, w.min, w.max, w.last)
(3, 6.0, 1.0, 3.0, 2.0)
"""

from __future__ import annotations

import math
from array import array
from typing import Any

from ddsketch import DDSketch
from ddsketch.store import DenseStore

QUANTILES = (0.5, 0.9, 0.99)
EXACT_LIMIT = 256


def window_start(timestamp_ms: int, window_ms: int) -> int:
    """Start of the tumbling window of size ``window_ms`` holding ``timestamp_ms``.

    >>> window_start(12_345, 10_000)
    10000
    """
    return timestamp_ms - timestamp_ms % window_ms


class WindowAccumulator:
    """Running statistics of one window; ``to_state``/``from_state`` for checkpoints."""

    __slots__ = ("accuracy", "count", "last", "last_ts", "max", "min", "sketch", "sum", "values")

    def __init__(self, relative_accuracy: float) -> None:
        self.accuracy = relative_accuracy
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.last = math.nan
        self.last_ts = -(2**62)
        self.values: array[float] | None = array("d")
        self.sketch: DDSketch | None = None

    def add(self, timestamp_ms: int, value: float) -> None:
        """Add one sample; ``last`` follows the greatest event time (ties: the later add)."""
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if timestamp_ms >= self.last_ts:
            self.last_ts = timestamp_ms
            self.last = value
        values = self.values
        if values is None:
            self.sketch.add(value)  # type: ignore[union-attr]
        else:
            values.append(value)
            if len(values) > EXACT_LIMIT:
                self._to_sketch()

    def _to_sketch(self) -> None:
        sketch = DDSketch(self.accuracy)
        for v in self.values or ():
            sketch.add(v)
        self.sketch, self.values = sketch, None

    def quantiles(self, qs: tuple[float, ...] = QUANTILES) -> tuple[float, ...]:
        """Quantiles ``qs`` (exact up to EXACT_LIMIT values; NaN when empty)."""
        if not self.count:
            return tuple(math.nan for _ in qs)
        if self.values is not None:
            ordered = sorted(self.values)
            top = len(ordered) - 1
            return tuple(ordered[math.floor(q * top)] for q in qs)
        sketch = self.sketch
        assert sketch is not None
        return tuple(_or_nan(sketch.get_quantile_value(q)) for q in qs)

    def to_state(self) -> dict[str, Any]:
        """A plain dict (the Avro WindowState fields, minus window identity)."""
        d: dict[str, Any] = {
            "count": self.count,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "last": self.last,
            "last_ts": self.last_ts,
            "values": self.values.tolist() if self.values is not None else None,
            "zero_count": 0,
            "pos_offset": 0,
            "pos_bins": [],
            "neg_offset": 0,
            "neg_bins": [],
        }
        s = self.sketch
        if s is not None:
            d["zero_count"] = int(s._zero_count)
            d["pos_offset"] = _store_offset(s._store)
            d["pos_bins"] = _store_bins(s._store)
            d["neg_offset"] = _store_offset(s._negative_store)
            d["neg_bins"] = _store_bins(s._negative_store)
        return d

    @classmethod
    def from_state(cls, state: dict[str, Any], relative_accuracy: float) -> WindowAccumulator:
        """Rebuild an accumulator written by ``to_state``."""
        w = cls(relative_accuracy)
        w.count = state["count"]
        w.sum = state["sum"]
        w.min = state["min"]
        w.max = state["max"]
        w.last = state["last"]
        w.last_ts = state["last_ts"]
        if state["values"] is not None:
            w.values = array("d", state["values"])
            return w
        w.values = None
        s = w.sketch = DDSketch(relative_accuracy)
        _load_store(s._store, state["pos_offset"], state["pos_bins"])
        _load_store(s._negative_store, state["neg_offset"], state["neg_bins"])
        s._zero_count = float(state["zero_count"])
        s._count = float(w.count)
        s._sum = w.sum
        s._min = w.min
        s._max = w.max
        return w


def _or_nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


# ddsketch is pinned (==3.0.1) because these three helpers read its DenseStore fields:
# its protobuf form stores every dense bin as a double and drops the sum.
def _store_offset(store: DenseStore) -> int:
    return int(store.min_key) if store.count else 0


def _store_bins(store: DenseStore) -> list[int]:
    if not store.count:
        return []
    lo = store.min_key - store.offset
    return [int(c) for c in store.bins[lo : lo + store.max_key - store.min_key + 1]]


def _load_store(store: DenseStore, offset: int, bins: list[int]) -> None:
    if not bins:
        return
    store.bins = [float(c) for c in bins]
    store.offset = offset
    store.min_key = offset
    store.max_key = offset + len(bins) - 1
    store.count = float(sum(bins))
