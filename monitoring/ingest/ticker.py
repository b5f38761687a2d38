"""Interval deadlines that do not drift.

Tick ``k`` is due at ``start + offset + k * interval`` on the monotonic clock, whatever
the work of earlier ticks cost: a late tick does not shift the later ones. A tick whose
deadline has passed before the previous one finished is skipped and counted in
``missed`` (as Go's ticker, behind Prometheus' scrape loop, drops ticks).

>>> t = Ticker(10.0, offset_s=2.0, clock=lambda: 100.0)
>>> t.due
102.0
>>> t.clock = lambda: 102.5; t.advance()
112.0
>>> t.clock = lambda: 135.0; t.advance(), t.missed
(142.0, 2)
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Ticker:
    """The next deadline of a fixed-interval schedule and the ticks missed so far."""

    def __init__(
        self,
        interval_s: float,
        offset_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval must be greater than 0")
        self.interval = interval_s
        self.clock = clock
        self.due = clock() + offset_s
        self.missed = 0

    def advance(self) -> float:
        """Move to the next deadline not yet past (counting skipped ones); return it."""
        now = self.clock()
        self.due += self.interval
        if now > self.due:
            skipped = int((now - self.due) // self.interval) + 1
            self.missed += skipped
            self.due += skipped * self.interval
        return self.due

    def remaining(self) -> float:
        """Seconds until the current deadline (0 when due)."""
        return max(0.0, self.due - self.clock())
