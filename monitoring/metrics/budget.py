"""One bound on the series of every partition a worker holds.

Pure: no I/O, no clock. The per-partition bounds (``aggregation.max_series``,
``max_series_per_metric``, ``anomaly.max_series``) keep one partition small, but a
worker may hold every partition: at the default bounds, six samples partitions of
200,000 series each (about 3.4 KB apiece) are 4 GB, and no setting bounded that. A
``SeriesBudget`` is the worker's bound (``aggregation.max_series_per_worker``,
``anomaly.max_series_per_worker``): one per agent in a worker process, shared by the
states of every partition the agent holds.

The agent ``join``s the state of each partition it restores and the runtime makes it
``leave`` when the partition is revoked; each state counts its own series
(``series_count``), so the budget holds no count that could drift from them. A state
asks ``room()`` before it gives a new series a place: the series the limit still has
room for across every joined state. Series restored with a partition are kept whatever
the room (their windows and detectors hold data nothing else has), and count: a worker
that takes over partitions refuses new series until expiry brings the total back under
the limit. So the total grows past the limit only by restored series, never by new
ones. The runtime restores partitions in a worker thread (their agents ``join`` there)
while the event loop asks ``room()``: the holders are kept under a lock.

>>> class Part:
...     def __init__(self, n): self.series_count = n
>>> budget = SeriesBudget(10)
>>> budget.join(0, Part(4)); budget.join(1, Part(3))
>>> budget.used, budget.room()
(7, 3)
>>> budget.join(2, Part(8))  # restored with partition 2: kept, counted
>>> budget.used, budget.room()
(15, 0)
>>> budget.leave(2); budget.room()
3
"""

from __future__ import annotations

import sys
import threading
from typing import Protocol

UNBOUNDED = sys.maxsize


class Holder(Protocol):
    """A partition's state: it knows how many series it holds."""

    @property
    def series_count(self) -> int: ...


class SeriesBudget:
    """The series every joined partition state holds, against ``limit`` (0: none)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("a series limit cannot be negative")
        self.limit = limit
        self.refused = 0  # refusals by this bound (the caller's unit: series or points)
        self._holders: dict[int, Holder] = {}
        self._lock = threading.Lock()  # joins come from restoring threads

    def join(self, partition: int, holder: Holder) -> None:
        """``holder`` is the state of ``partition`` now (a former one is let go)."""
        with self._lock:
            self._holders[partition] = holder

    def leave(self, partition: int, holder: Holder | None = None) -> None:
        """``partition`` was given up; with ``holder``, only if it is still the one joined."""
        with self._lock:
            if holder is None or self._holders.get(partition) is holder:
                self._holders.pop(partition, None)

    @property
    def partitions(self) -> list[int]:
        """The partitions joined."""
        with self._lock:
            return sorted(self._holders)

    @property
    def used(self) -> int:
        """Series held by every joined state."""
        with self._lock:
            holders = list(self._holders.values())
        return sum(h.series_count for h in holders)

    def room(self) -> int:
        """New series that may still get a place (0 when full or over; ``UNBOUNDED``
        without a limit)."""
        if not self.limit:
            return UNBOUNDED
        return max(0, self.limit - self.used)
