"""Per-service log counts as cumulative counters, published once per event-time window.

For each service: ``log_events_total{level, service}`` and
``log_template_events_total{service, template_id}``, both ``COUNTER`` samples with the
cumulative count of records processed so far (Prometheus' counter convention, so a
replayed emission repeats the same value at the same timestamp and changes nothing
downstream; the increase over a window is the difference of two samples).

Windows are tumbling, ``window_ms`` long, in the service's event time: when a record
at or after the open window's end arrives, the series that changed are emitted with
timestamp ``window_end - 1`` (inside the window they describe, so the aggregation
agent's window of that size sees the value at its end as ``last``), then the record
counts towards the next emission. A record older than the open window (late) simply
counts in the next emission. ``close`` emits the open window without waiting for a
later record (the agent calls it for services idle on the wall clock).

Cardinality: one ``log_events_total`` series per level (six at most) and one
``log_template_events_total`` series per live template of the service: the counters
held, and the series of one emission, are at most ``logs.max_templates`` per service.
A template the miner evicts is ``evict``-ed here at once: its counter is dropped and
its series gets no sample after that; the id is never reused (a template that comes
back is a new series, counting from 1). The price: increments of an evicted template
not yet emitted (it was counted in the open window, then evicted in the same window,
which takes more than ``max_templates`` new templates in one window) are not
published; ``log_events_total`` stays exact.

>>> c = ServiceCounts("api", window_ms=10_000)
>>> c.add(1_000, "INFO", 1), c.add(2_000, "ERROR", 2)
([], [])
>>> [(s.series, s.timestamp_ms, s.value) for s in c.add(12_000, "INFO", 1)][:2]
[('log_events_total{level="ERROR",service="api"}', 9999, 1.0), \
('log_events_total{level="INFO",service="api"}', 9999, 1.0)]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from monitoring.metrics.samples import Sample, series_key

EVENTS = "log_events_total"
TEMPLATE_EVENTS = "log_template_events_total"


class ServiceCounts:
    """Cumulative counts of one service and the series changed since the last emission."""

    def __init__(self, service: str, window_ms: int) -> None:
        self.service = service
        self.window_ms = window_ms
        self.open_end = 0  # end of the open window; 0 before the first record
        self.levels: dict[str, int] = {}
        self.templates: dict[int, int] = {}
        self.changed_levels: set[str] = set()
        self.changed_templates: set[int] = set()

    @property
    def has_changes(self) -> bool:
        return bool(self.changed_levels or self.changed_templates)

    def add(self, timestamp_ms: int, level: str, template_id: int) -> list[Sample]:
        """Count one record; returns the samples of a window it closed (often none)."""
        out: list[Sample] = []
        if timestamp_ms >= self.open_end:
            if self.open_end:
                out = self._emit()
            self.open_end = timestamp_ms - timestamp_ms % self.window_ms + self.window_ms
        self.levels[level] = self.levels.get(level, 0) + 1
        self.templates[template_id] = self.templates.get(template_id, 0) + 1
        self.changed_levels.add(level)
        self.changed_templates.add(template_id)
        return out

    def add_many(
        self, timestamps_ms: Sequence[int], levels: Sequence[str], template_ids: Sequence[int]
    ) -> list[Sample]:
        """``add`` for each record in order, the samples concatenated; the runs between
        window ends are counted at once (one ``Counter`` each: most batches are one run).

        >>> a, b = ServiceCounts("api", 10_000), ServiceCounts("api", 10_000)
        >>> recs = [(1_000, "INFO", 1), (12_000, "WARN", 2), (13_000, "INFO", 1)]
        >>> a.add_many(*zip(*recs)) == [s for r in recs for s in b.add(*r)]
        True
        """
        out: list[Sample] = []
        n, start, end, w = len(timestamps_ms), 0, self.open_end, self.window_ms
        if n and max(timestamps_ms) >= end:  # a window end inside: find each
            for i, ts in enumerate(timestamps_ms):
                if ts >= end:
                    if i > start:
                        self._count(levels[start:i], template_ids[start:i])
                    if end:
                        out += self._emit()
                    end = self.open_end = ts - ts % w + w
                    start = i
        if start < n:
            self._count(levels[start:], template_ids[start:])
        return out

    def _count(self, levels: Sequence[str], template_ids: Sequence[int]) -> None:
        counts = self.levels
        for level, k in Counter(levels).items():
            counts[level] = counts.get(level, 0) + k
            self.changed_levels.add(level)
        tcounts = self.templates
        for tid, k in Counter(template_ids).items():
            tcounts[tid] = tcounts.get(tid, 0) + k
            self.changed_templates.add(tid)

    def evict(self, template_ids: Sequence[int]) -> None:
        """Forget these templates (the miner evicted them): no sample of their series
        from now on (see the module doc).

        >>> c = ServiceCounts("api", 10_000)
        >>> _ = c.add(1_000, "INFO", 1), c.add(2_000, "INFO", 2); c.evict([1])
        >>> [s.labels.get("template_id") for s in c.close()], sorted(c.templates)
        ([None, '2'], [2])
        """
        for tid in template_ids:
            self.templates.pop(tid, None)
            self.changed_templates.discard(tid)

    def close(self) -> list[Sample]:
        """Emit the open window now (idle service); later records count in the next."""
        if not self.open_end or not self.has_changes:
            return []
        out = self._emit()
        self.open_end += self.window_ms
        return out

    def _emit(self) -> list[Sample]:
        ts = self.open_end - 1
        svc = self.service
        out = []
        for level in sorted(self.changed_levels):
            labels = {"level": level, "service": svc}
            out.append(Sample(series_key(EVENTS, labels), EVENTS, labels, ts,
                              float(self.levels[level]), "COUNTER"))  # fmt: skip
        for tid in sorted(self.changed_templates):
            labels = {"service": svc, "template_id": str(tid)}
            out.append(Sample(series_key(TEMPLATE_EVENTS, labels), TEMPLATE_EVENTS, labels, ts,
                              float(self.templates[tid]), "COUNTER"))  # fmt: skip
        self.changed_levels.clear()
        self.changed_templates.clear()
        return out

    def state(self) -> dict[str, Any]:
        """JSON-friendly state."""
        return {
            "open_end": self.open_end,
            "levels": self.levels,
            "templates": {str(k): v for k, v in self.templates.items()},
            "changed_levels": sorted(self.changed_levels),
            "changed_templates": sorted(self.changed_templates),
        }

    @classmethod
    def from_state(cls, service: str, window_ms: int, st: dict[str, Any]) -> ServiceCounts:
        c = cls(service, window_ms)
        c.open_end = int(st["open_end"])
        c.levels = {str(k): int(v) for k, v in st["levels"].items()}
        c.templates = {int(k): int(v) for k, v in st["templates"].items()}
        c.changed_levels = set(st["changed_levels"])
        c.changed_templates = {int(t) for t in st["changed_templates"]}
        return c
