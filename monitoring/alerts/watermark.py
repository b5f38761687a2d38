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

>>> c = EvaluationClock(grace_ms=2_000, settle_ms=0, live_ms=30_000)
>>> c.observe(0, 10_000, now_ms=100); c.observe(1, 10_000, now_ms=100)
>>> c.due(now_ms=100)
[10000]
>>> c.observe(0, 20_000, now_ms=200)
>>> c.due(now_ms=300), c.due(now_ms=2_200)  # partition 1 is behind: the grace decides
([], [20000])
>>> m = EvaluationClock(grace_ms=2_000, settle_ms=50, live_ms=30_000)
>>> m.observe(0, 10_000, now_ms=100); m.complete(0, 12_000, now_ms=100)
>>> m.due(now_ms=100)  # complete by its mark: no settle time
[10000]
"""

from __future__ import annotations


class EvaluationClock:
    """Per-partition progress of window ends, and the ends due for evaluation."""

    def __init__(
        self, grace_ms: int, settle_ms: int, live_ms: int, last_evaluated_ms: int = 0
    ) -> None:
        self.grace_ms = grace_ms
        self.settle_ms = settle_ms
        self.live_ms = live_ms
        self.last_evaluated_ms = last_evaluated_ms
        self._max_end: dict[int, int] = {}
        self._seen_at: dict[int, int] = {}
        self._pending: dict[int, int] = {}  # end -> wall time first seen
        self._through: dict[int, int] = {}  # partition -> complete through (its marks)

    def observe(self, partition: int, end_ms: int, now_ms: int) -> None:
        """A window ending at ``end_ms`` arrived from ``partition`` at wall time ``now_ms``."""
        self._seen_at[partition] = now_ms
        if end_ms > self._max_end.get(partition, 0):
            self._max_end[partition] = end_ms
        if end_ms > self.last_evaluated_ms and end_ms not in self._pending:
            self._pending[end_ms] = now_ms

    def complete(self, partition: int, through_ms: int, now_ms: int) -> None:
        """``partition`` holds every window ending at or before ``through_ms``."""
        self._seen_at[partition] = now_ms
        if through_ms > self._through.get(partition, 0):
            self._through[partition] = through_ms

    def due(self, now_ms: int) -> list[int]:
        """Ends to evaluate now, oldest first; they count as evaluated from here on."""
        if not self._pending:
            return []
        live = [p for p, seen in self._seen_at.items() if now_ms - seen <= self.live_ms]
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
            if done or waited >= self.grace_ms:
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
