"""One event-time tumbling window of one series: count, sum, min, max, last, quantiles.

The aggregator keeps its windows in columns (``window_columns.WindowColumns``, every
series of a window at once) with these semantics; ``WindowAccumulator`` is the
one-series form, whose ``to_state`` dict is the checkpoint record of a window and
whose ``from_state`` rebuilds a restored window's sketch.

Quantile ``q`` is the value at rank ``floor(q * (count - 1))`` of the window's values.
Up to ``EXACT_LIMIT`` values the window keeps them (a compact ``array('d')``) and the
quantiles are exact; past that it moves them into a DDSketch (Datadog's mergeable
sketch, package ``ddsketch``), whose quantiles lie within ``relative_accuracy`` of the
exact value. Most windows of scraped metrics hold a handful of values, where a
sketch costs far more than the values (a new sketch is 5 µs, an add 1.3 µs, a
quantile up to 20 µs, against 0.05 µs for an append). Past the limit, values still go
into an array first and enter the sketch ``SKETCH_CHUNK`` at a time (``add_many``:
bucket keys computed with numpy, one store update per distinct key), so a busy
series costs about an append per value instead of a sketch add.

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

import numpy as np
from ddsketch import DDSketch
from ddsketch.store import DenseStore

QUANTILES = (0.5, 0.9, 0.99)
EXACT_LIMIT = 256
SKETCH_CHUNK = 512
_LN2 = math.log(2)


def window_start(timestamp_ms: int, window_ms: int) -> int:
    """Start of the tumbling window of size ``window_ms`` holding ``timestamp_ms``.

    >>> window_start(12_345, 10_000)
    10000
    """
    return timestamp_ms - timestamp_ms % window_ms


class WindowAccumulator:
    """Running statistics of one window; ``to_state``/``from_state`` for checkpoints."""

    __slots__ = (
        "accuracy", "count", "last", "last_ts", "max", "min", "pending", "sketch", "sum", "values",
    )  # fmt: skip

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
        self.pending: array[float] | None = None  # on the way into the sketch

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
            pending = self.pending
            pending.append(value)  # type: ignore[union-attr]
            if len(pending) >= SKETCH_CHUNK:  # type: ignore[arg-type]
                self._flush()
        else:
            values.append(value)
            if len(values) > EXACT_LIMIT:
                self._to_sketch()

    def _to_sketch(self) -> None:
        self.sketch, self.pending, self.values = DDSketch(self.accuracy), self.values, None
        self._flush()

    def _flush(self) -> None:
        """Move the pending values into the sketch."""
        if self.pending:
            add_many(self.sketch, self.pending)  # type: ignore[arg-type]
            self.pending = array("d")

    def quantiles(self, qs: tuple[float, ...] = QUANTILES) -> tuple[float, ...]:
        """Quantiles ``qs`` (exact up to EXACT_LIMIT values; NaN when empty)."""
        if not self.count:
            return tuple(math.nan for _ in qs)
        if self.values is not None:
            ordered = sorted(self.values)
            top = len(ordered) - 1
            return tuple(ordered[math.floor(q * top)] for q in qs)
        self._flush()
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
        self._flush()
        s = self.sketch
        if s is not None:
            d["zero_count"] = int(s._zero_count)
            d["pos_offset"] = store_offset(s._store)
            d["pos_bins"] = store_bins(s._store)
            d["neg_offset"] = store_offset(s._negative_store)
            d["neg_bins"] = store_bins(s._negative_store)
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
        w.pending = array("d")
        s = w.sketch = DDSketch(relative_accuracy)
        _load_store(s._store, state["pos_offset"], state["pos_bins"])
        _load_store(s._negative_store, state["neg_offset"], state["neg_bins"])
        s._zero_count = float(state["zero_count"])
        s._count = float(w.count)
        s._sum = w.sum
        s._min = w.min
        s._max = w.max
        return w


def add_many(sketch: DDSketch, values: array[float] | np.ndarray) -> None:
    """Add ``values`` to a DDSketch (logarithmic mapping) as ``sketch.add`` one at a
    time would: the same bucket key per value (numpy computes ddsketch's
    ``ceil(log(v, 2) * multiplier) + offset``), one store update per distinct key.

    >>> s, one = DDSketch(0.01), DDSketch(0.01)
    >>> xs = array("d", [0.0, 1.5, -2.0, 1.5, 1e6])
    >>> add_many(s, xs)
    >>> for x in xs:
    ...     one.add(x)
    >>> (s.count, s.get_quantile_value(0.5) == one.get_quantile_value(0.5))
    (5.0, True)
    """
    v = np.asarray(values, dtype=np.float64)
    mapping = sketch._mapping
    low = mapping.min_possible
    pos, neg = v[v > low], -v[v < -low]
    for part, store in ((pos, sketch._store), (neg, sketch._negative_store)):
        if len(part):
            keys = np.ceil(np.log(part) / _LN2 * mapping._multiplier) + mapping._offset
            unique, counts = np.unique(keys.astype(np.int64), return_counts=True)
            for key, n in zip(unique.tolist(), counts.tolist(), strict=True):
                store.add(key, float(n))
    sketch._zero_count += float(len(v) - len(pos) - len(neg))
    sketch._count += float(len(v))
    sketch._sum += float(v.sum())
    sketch._min = min(sketch._min, float(v.min()))
    sketch._max = max(sketch._max, float(v.max()))


def _or_nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


# ddsketch is pinned (==3.0.1) because these three helpers read its DenseStore fields:
# its protobuf form stores every dense bin as a double and drops the sum.
def store_offset(store: DenseStore) -> int:
    return int(store.min_key) if store.count else 0


def store_bins(store: DenseStore) -> list[int]:
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
