"""When have all the windows ending at ``T`` arrived? The alert evaluator's trigger.

Closed windows reach the evaluator from every partition of the aggregates topic; a
partition's windows for one end time arrive together (one watermark step of the
aggregation agent). ``EvaluationClock`` tracks, per partition, the newest window end
seen and when the partition last delivered anything. An end ``T`` is due once

- every *live* partition (one that delivered within ``live_ms``) is done with ``T``, or
- ``grace_ms`` passed since ``T`` was first seen (a lagging partition does not hold
  alerts back for ever).

A partition is done with ``T`` once it said so: the aggregation agent marks the last
record of each close with the time through which the partition is complete
(``complete``). A partition that never sent such a mark is done once it reached ``T``
and ``settle_ms`` passed since ``T`` was first seen (the rest of a burst arrives).

Ends are due in increasing order, each once; an end at or before the last evaluated
one is never due again (its late windows still reach the history).

An end more than ``max_ahead_ms`` after the wall clock (the evaluator passes one
window) is ignored: ``observe`` returns False, the end is never pending and a completion mark
counts only up to that bound. A window from the future (a sample stamped ahead that got
through) must not make the evaluator evaluate that end and skip every end before it.

Every assigned partition counts as live from the start (``assign``). Catch-up
(``begin_catch_up``): after a restart the evaluator re-reads a backlog; until
each partition read up to the end offset it had at start (``caught_up``), that
partition counts whether or not it delivered lately, and no end is due by the grace:
the first messages of one partition would otherwise make every end of the backlog due
with the other partitions' windows missing. Once the last partition caught up, the
grace of the ends still pending counts from then.

>>> c = EvaluationClock(grace_ms=2_000, settle_ms=0, live_ms=30_000)
>>> c.observe(0, 10_000, now_ms=100), c.observe(1, 10_000, now_ms=100)
(True, True)
>>> c.due(now_ms=100)
[10000]
>>> _ = c.observe(0, 20_000, now_ms=200)
>>> c.due(now_ms=300), c.due(now_ms=2_200)  # partition 1 is behind: the grace decides
([], [20000])
>>> m = EvaluationClock(grace_ms=2_000, settle_ms=50, live_ms=30_000)
>>> _ = m.observe(0, 10_000, now_ms=100); m.complete(0, 12_000, now_ms=100)
>>> m.due(now_ms=100)  # complete by its mark: no settle time
[10000]
>>> r = EvaluationClock(grace_ms=2_000, settle_ms=0, live_ms=30_000)
>>> r.begin_catch_up([0, 1])
>>> _ = r.observe(0, 10_000, now_ms=100); r.complete(0, 20_000, now_ms=100)
>>> r.due(now_ms=9_000)  # partition 1 has its backlog to read: no grace
[]
>>> r.complete(1, 10_000, now_ms=9_100); r.due(now_ms=9_100)
[10000]
>>> f = EvaluationClock(grace_ms=0, settle_ms=0, live_ms=30_000, max_ahead_ms=10_000)
>>> f.observe(0, 3_600_000, now_ms=100)  # an hour ahead of the clock: not taken
False
>>> f.due(now_ms=100)
[]
"""

from __future__ import annotations

from collections.abc import Iterable


class EvaluationClock:
    """Per-partition progress of window ends, and the ends due for evaluation."""

    def __init__(
        self,
        grace_ms: int,
        settle_ms: int,
        live_ms: int,
        last_evaluated_ms: int = 0,
        max_ahead_ms: int | None = None,
    ) -> None:
        self.grace_ms = grace_ms
        self.settle_ms = settle_ms
        self.live_ms = live_ms
        self.last_evaluated_ms = last_evaluated_ms
        self.max_ahead_ms = max_ahead_ms
        self._max_end: dict[int, int] = {}
        self._seen_at: dict[int, int] = {}
        self._pending: dict[int, int] = {}  # end -> wall time first seen
        self._through: dict[int, int] = {}  # partition -> complete through (its marks)
        self._behind: set[int] = set()  # partitions still reading their backlog

    def observe(self, partition: int, end_ms: int, now_ms: int) -> bool:
        """A window ending at ``end_ms`` arrived from ``partition`` at wall time ``now_ms``;
        False if that end is too far ahead of the clock to be taken."""
        self._seen_at[partition] = now_ms
        if self.max_ahead_ms is not None and end_ms > now_ms + self.max_ahead_ms:
            return False
        if end_ms > self._max_end.get(partition, 0):
            self._max_end[partition] = end_ms
        if end_ms > self.last_evaluated_ms and end_ms not in self._pending:
            self._pending[end_ms] = now_ms
        return True

    def complete(self, partition: int, through_ms: int, now_ms: int) -> None:
        """``partition`` holds every window ending at or before ``through_ms``."""
        self._seen_at[partition] = now_ms
        if self.max_ahead_ms is not None:
            through_ms = min(through_ms, now_ms + self.max_ahead_ms)
        if through_ms > self._through.get(partition, 0):
            self._through[partition] = through_ms

    def assign(self, partitions: Iterable[int], now_ms: int) -> None:
        """Every partition read counts as live from the start (as if it had delivered
        at ``now_ms``), not only once its first window arrived: else the first partition
        to deliver would make its ends due alone."""
        for p in partitions:
            self._seen_at.setdefault(p, now_ms)

    def begin_catch_up(self, partitions: Iterable[int]) -> None:
        """``partitions`` have a backlog to read: they count, with no grace, until caught up."""
        self._behind = set(partitions)

    def caught_up(self, partition: int, now_ms: int) -> None:
        """``partition`` read its backlog; after the last one the grace restarts from now."""
        if partition not in self._behind:
            return
        self._behind.discard(partition)
        self._seen_at[partition] = now_ms  # it just delivered: live, as the others
        if not self._behind:
            for end in self._pending:
                self._pending[end] = max(self._pending[end], now_ms)

    @property
    def catching_up(self) -> frozenset[int]:
        """Partitions still reading their backlog."""
        return frozenset(self._behind)

    def due(self, now_ms: int) -> list[int]:
        """Ends to evaluate now, oldest first; they count as evaluated from here on."""
        if not self._pending:
            return []
        behind = self._behind
        live = [
            p for p, seen in self._seen_at.items() if now_ms - seen <= self.live_ms or p in behind
        ]
        live += [p for p in behind if p not in self._seen_at]
        marked = [self._through[p] for p in live if p in self._through]
        unmarked = [self._max_end.get(p, 0) for p in live if p not in self._through]
        through = min(marked) if marked else None  # every marking partition is done
        reached = min(unmarked) if unmarked else None
        out = []
        for end in sorted(self._pending):
            waited = now_ms - self._pending[end]
            done = (through is None or through >= end) and (
                reached is None or (reached >= end and waited >= self.settle_ms)
            )
            if done or (waited >= self.grace_ms and not behind):
                out.append(end)
            else:
                break
        for end in out:
            del self._pending[end]
        if out:
            self.last_evaluated_ms = out[-1]
        return out

    def next_check_ms(self) -> int | None:
        """Wall time at which the oldest pending end is due at the latest."""
        if not self._pending:
            return None
        return min(self._pending.values()) + self.grace_ms
