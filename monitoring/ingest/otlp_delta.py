"""Delta points accumulated into cumulative ones, per series, with a bounded state.

OpenTelemetry's compatibility spec asks delta monotonic sums and delta histograms to be
"aggregated into a Cumulative aggregation temporality" before they become Prometheus
counters. ``DeltaState`` keeps per series the running total (or bucket counts, sum and
count) and the end time of the last point added:

* a point whose end is not after the last one's is refused (``delta-out-of-order``:
  a repeat or a reordering, which would otherwise be counted twice);
* a histogram whose bounds change starts afresh (a reset, as Prometheus reads it);
* at most ``max_series`` series holding about ``max_bytes`` (keys and bucket arrays,
  estimated); when full, series not updated for ``ttl_ns`` are forgotten, and if none
  is, a new series is refused (``delta-state-full``) rather than resetting a live one.
  A forgotten series starts again from its next delta.

Updates are staged per request (``stage``) and kept only by ``commit``, so a request
refused for backpressure and sent again is not counted twice.

>>> d = DeltaState(max_series=10)
>>> st = d.stage()
>>> st.add_sum("k", start_ns=0, end_ns=10, value=2.0), st.add_sum("k", 10, 20, 3.0)
(2.0, 5.0)
>>> st.commit(); d.stage().add_sum("k", 20, 30, 1.0)
6.0
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from monitoring.metrics.samples import InvalidSample


class DeltaState:
    """Running totals of delta series (see the module's docstring)."""

    def __init__(
        self, max_series: int = 100_000, ttl_ns: int = 3600 * 10**9, max_bytes: int = 256 << 20
    ) -> None:
        self.max_series = max_series
        self.ttl_ns = ttl_ns
        self.max_bytes = max_bytes
        # key -> [last end ns, total] or [last end ns, bounds, counts, sum, count]
        self.series: dict[Hashable, list[Any]] = {}
        self.sizes: dict[Hashable, int] = {}  # estimated bytes of each series' entry
        self.bytes = 0

    def stage(self) -> Staged:
        """A request's view: reads through to the state, writes kept aside."""
        return Staged(self)

    def _room(self, now_ns: int, extra: int, extra_bytes: int) -> bool:
        def fits() -> bool:
            return (
                len(self.series) + extra < self.max_series
                and self.bytes + extra_bytes <= self.max_bytes
            )

        if fits():
            return True
        cutoff = now_ns - self.ttl_ns
        for k in [k for k, e in self.series.items() if e[0] < cutoff]:
            del self.series[k]
            self.bytes -= self.sizes.pop(k, 0)
        return fits()


def _bytes(key: Any) -> int:
    """Bytes a key holds, estimated (strings, bytes and tuples of them, each object's
    own overhead counted: a key of many empty attributes is mostly overhead).

    >>> _bytes(("a", ("bc", b"d")))
    156
    """
    if isinstance(key, str | bytes):
        return len(key) + 40
    if isinstance(key, tuple):
        return 8 * len(key) + sum(map(_bytes, key))
    return 8


class Staged:
    """Updates of one request, applied to the state by ``commit``."""

    def __init__(self, state: DeltaState) -> None:
        self.state = state
        self.changes: dict[Hashable, list[Any]] = {}
        self.sizes: dict[Hashable, int] = {}  # of the series this request adds or reshapes
        self.added_bytes = 0

    def _entry(self, key: Hashable, end_ns: int, buckets: int = 0) -> list[Any] | None:
        e = self.changes.get(key)
        if e is None:
            e = self.state.series.get(key)
        if e is not None and end_ns <= e[0]:
            raise InvalidSample("delta-out-of-order", f"a point ending at {end_ns} ns repeats")
        if e is None:
            size = 200 + _bytes(key) + 80 * buckets
            if not self.state._room(end_ns, len(self.changes), self.added_bytes + size):
                raise InvalidSample(
                    "delta-state-full",
                    f"{self.state.max_series} delta series or {self.state.max_bytes} bytes kept",
                )
            self.sizes[key] = size
            self.added_bytes += size
        return e

    def add_sum(self, key: Hashable, start_ns: int, end_ns: int, value: float) -> float:
        """The cumulative total after adding a delta sum point."""
        e = self._entry(key, end_ns)
        total = (e[1] if e is not None else 0.0) + value
        if total - total != 0.0:  # overflowed to +-inf: refused, the kept total unchanged
            raise InvalidSample("non-finite-value", f"a delta total {total!r}")
        self.changes[key] = [end_ns, total]
        return total

    def add_histogram(
        self,
        key: Hashable,
        end_ns: int,
        bounds: Sequence[float],
        counts: Sequence[int],
        total: float,
        count: int,
    ) -> tuple[list[int], float, int]:
        """Cumulative (bucket counts, sum, count) after adding a delta histogram point."""
        e = self._entry(key, end_ns, len(bounds))
        b = tuple(bounds)
        if e is not None and e[1] != b:  # a reset to other bounds: another size
            size = 200 + _bytes(key) + 80 * len(b)
            self.added_bytes += size - self.sizes.get(key, self.state.sizes.get(key, 0))
            self.sizes[key] = size
        if e is None or e[1] != b:
            acc, s, n = list(counts), total, count
        else:
            acc = [x + y for x, y in zip(e[2], counts, strict=True)]
            s, n = e[3] + total, e[4] + count
        if s - s != 0.0:
            raise InvalidSample("non-finite-value", f"a delta histogram's sum {s!r}")
        self.changes[key] = [end_ns, b, acc, s, n]
        return acc, s, n

    def commit(self) -> None:
        """Keep the staged updates (the request was admitted)."""
        state = self.state
        state.series.update(self.changes)
        for k, size in self.sizes.items():
            if k not in self.changes:  # refused after its room was counted
                continue
            state.bytes += size - state.sizes.get(k, 0)
            state.sizes[k] = size
        self.changes, self.sizes, self.added_bytes = {}, {}, 0
