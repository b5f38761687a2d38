"""Recent closed windows per series: what the rule evaluator reads.

``WindowHistory`` receives aggregates (``monitoring.metrics.aggregator.Aggregate`` or
anything with the same attributes) of ONE window size and keeps, per series, the
windows that the loaded rules can still read:

* windows ending within ``retention_ms`` of the series' newest window (the caller
  sets it to the longest range of any rule plus one window, so ``increase`` finds its
  baseline), always at least the newest one;
* a series whose newest window ended more than ``retention_ms + lookback_ms`` before
  the evaluation time is dropped (``expire``), so memory is bounded by the series
  alive in that horizon.

Windows of other sizes are ignored (``add`` returns False). A window arriving again
with the same end (a replay after a restart) replaces the stored one; an older window
arriving out of order is inserted in order.

>>> h = WindowHistory(window_ms=10_000, retention_ms=60_000)
>>> h.add(WindowRow.of("cpu", {"host": "a"}, end_ms=10_000, values=[1.0, 3.0]))
True
>>> s = h.series_for("cpu")[0]
>>> s.key, s.rows[-1].last, s.rows[-1].count
('cpu{host="a"}', 3.0, 2)
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from monitoring.metrics.aggregator import Aggregate

Labels = tuple[tuple[str, str], ...]
MatchCache = dict[str, tuple[int, list["Series"]]]
"""A selector's key -> (the metric's version when matched, the series it matched)."""
"""A label set as sorted ``(name, value)`` pairs (hashable)."""

NAME = "__name__"
DEFAULT_LOOKBACK_MS = 300_000


class WindowRow(NamedTuple):
    """One closed window of a series, as the evaluator reads it."""

    end_ms: int
    count: int  # type: ignore[assignment]  # shadows tuple.count, as the Avro field
    sum: float
    min: float
    max: float
    last: float
    p50: float
    p90: float
    p99: float
    increase: float | None = None  # the counter increase (Aggregate v2; None: inferred)

    @staticmethod
    def of(
        name: str,
        labels: Mapping[str, str],
        end_ms: int,
        values: list[float],
        window_ms: int = 10_000,
        increase: float | None = None,
    ) -> Aggregate:
        """A tiny test helper: an ``Aggregate`` of ``values`` (last = the last one).

        Quantiles are the value at rank ``floor(q (n-1))`` as the aggregator computes them;
        ``increase`` is the counter field (None: an Aggregate v1).
        """
        s = sorted(values)
        n = len(s)

        def rank(q: float) -> float:
            return s[int(q * (n - 1))]

        return Aggregate(
            series_key(name, labels),
            name,
            dict(labels),
            window_ms,
            end_ms - window_ms,
            end_ms,
            n,
            sum(values),
            s[0],
            s[-1],
            sum(values) / n,
            values[-1],
            rank(0.5),
            rank(0.9),
            rank(0.99),
            increase=increase,
        )


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """Prometheus' text form with sorted labels, as the pipeline keys series."""
    inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels))
    return f"{name}{{{inner}}}"


class Series:
    """The stored windows of one series, oldest first (``ends`` parallel to ``rows``)."""

    __slots__ = ("ends", "key", "labels", "labels_key", "labels_key_noname", "name", "rows")

    def __init__(self, key: str, name: str, labels: Mapping[str, str]) -> None:
        self.key = key
        self.name = name
        self.labels: dict[str, str] = {NAME: name, **labels}
        self.labels_key: Labels = tuple(sorted(self.labels.items()))
        self.labels_key_noname: Labels = tuple(p for p in self.labels_key if p[0] != NAME)
        self.rows: list[WindowRow] = []
        self.ends: list[int] = []

    def insert(self, row: WindowRow) -> None:
        """Add a window, keeping end order; the same end replaces."""
        ends = self.ends
        if not ends or row.end_ms > ends[-1]:
            self.rows.append(row)
            ends.append(row.end_ms)
            return
        i = bisect.bisect_left(ends, row.end_ms)
        if i < len(ends) and ends[i] == row.end_ms:
            self.rows[i] = row
        else:
            self.rows.insert(i, row)
            ends.insert(i, row.end_ms)

    def trim(self, keep_after_ms: int) -> None:
        """Drop windows ending before ``keep_after_ms``, but never the newest."""
        k = min(bisect.bisect_left(self.ends, keep_after_ms), len(self.ends) - 1)
        if k > 0:
            del self.ends[:k]
            del self.rows[:k]

    def at(self, t_ms: int, lookback_ms: int) -> WindowRow | None:
        """The newest window ending at or before ``t_ms`` and after ``t_ms - lookback_ms``."""
        i = bisect.bisect_right(self.ends, t_ms) - 1
        if i < 0:
            return None
        row = self.rows[i]
        return row if row.end_ms > t_ms - lookback_ms else None

    def range(self, start_ms: int, end_ms: int, *, closed_start: bool = False) -> list[WindowRow]:
        """Windows ending in ``(start_ms, end_ms]`` (``[start, end]`` if closed), oldest first."""
        ends = self.ends
        lo = (
            bisect.bisect_left(ends, start_ms)
            if closed_start
            else bisect.bisect_right(ends, start_ms)
        )
        hi = bisect.bisect_right(ends, end_ms)
        return self.rows[lo:hi]


class WindowHistory:
    """The recent windows of every series of one window size, indexed by metric name."""

    def __init__(
        self,
        window_ms: int = 10_000,
        retention_ms: int = 300_000,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
    ) -> None:
        if window_ms <= 0 or retention_ms < 0 or lookback_ms <= 0:
            raise ValueError("window_ms and lookback_ms must be positive, retention_ms >= 0")
        self.window_ms = window_ms
        self.retention_ms = retention_ms
        self.lookback_ms = lookback_ms
        self._series: dict[str, Series] = {}
        self._by_name: dict[str, dict[str, Series]] = {}
        # (name, label, value) -> series: selectors with an equality matcher start here
        self._by_label: dict[tuple[str, str, str], dict[str, Series]] = {}
        self._versions: dict[str, int] = {}
        self.version = 0
        """Incremented whenever a series is added or dropped (selector caches key on it)."""

    def __len__(self) -> int:
        return len(self._series)

    def add(self, agg: Any) -> bool:
        """Store one closed window; False (ignored) if its size is not ``window_ms``."""
        if agg.window_ms != self.window_ms:
            return False
        s = self._series.get(agg.series)
        if s is None:
            s = Series(agg.series, agg.name, agg.labels)
            self._series[agg.series] = s
            self._by_name.setdefault(agg.name, {})[agg.series] = s
            for k, v in s.labels_key_noname:
                self._by_label.setdefault((agg.name, k, v), {})[agg.series] = s
            self._bump(agg.name)
        end = agg.window_end_ms
        row = WindowRow(
            end, agg.count, agg.sum, agg.min, agg.max, agg.last, agg.p50, agg.p90, agg.p99,
            agg.increase,
        )  # fmt: skip
        ends = s.ends
        if ends and end > ends[-1]:  # the live case, inlined: a new newest window
            s.rows.append(row)
            ends.append(end)
            if ends[0] < end - self.retention_ms:
                s.trim(end - self.retention_ms)
            return True
        s.insert(row)
        s.trim(ends[-1] - self.retention_ms)
        return True

    def add_all(self, aggs: Iterable[Any]) -> int:
        """Store many windows; returns how many were of the configured size."""
        return sum(1 for a in aggs if self.add(a))

    def _bump(self, name: str) -> None:
        self._versions[name] = self._versions.get(name, 0) + 1
        self.version += 1

    def name_version(self, name: str) -> int:
        """A counter that changes when a series of metric ``name`` appears or goes."""
        return self._versions.get(name, 0)

    def series_for(self, name: str | None) -> list[Series]:
        """Every stored series of metric ``name`` (all series when ``name`` is None)."""
        if name is None:
            return list(self._series.values())
        d = self._by_name.get(name)
        return list(d.values()) if d else []

    def candidates(self, name: str | None, equal: Iterable[tuple[str, str]]) -> list[Series]:
        """The series of metric ``name`` having every ``(label, value)`` in ``equal``
        (label ``""`` matches a missing label, as in PromQL), or a superset of them:
        the caller still applies its matchers. Uses the smallest index entry.

        >>> h = WindowHistory(10_000, 60_000)
        >>> for host in "abc":
        ...     _ = h.add(WindowRow.of("cpu", {"host": host}, 10_000, [1.0]))
        >>> [s.key for s in h.candidates("cpu", [("host", "b")])]
        ['cpu{host="b"}']
        """
        if name is None:
            return self.series_for(None)
        best: dict[str, Series] | None = None
        for k, v in equal:
            if k == NAME or v == "":
                continue
            found = self._by_label.get((name, k, v))
            if found is None:
                return []
            if best is None or len(found) < len(best):
                best = found
        return self.series_for(name) if best is None else list(best.values())

    def matching(
        self,
        name: str | None,
        equal: Iterable[tuple[str, str]],
        tests: Iterable[tuple[str, Callable[[str], bool]]],
        key: str,
        cache: MatchCache,
    ) -> list[Series]:
        """The series of ``name`` passing every ``(label, test)`` (``equal`` narrows the
        candidates first), cached under ``key`` until a series of the metric appears or
        goes."""
        version = self.name_version(name) if name is not None else self.version
        hit = cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        found = [
            s
            for s in self.candidates(name, equal)
            if all(test(s.labels.get(k, "")) for k, test in tests)
        ]
        cache[key] = (version, found)
        return found

    def expire(self, at_ms: int) -> int:
        """Drop series idle since before ``at_ms - retention_ms - lookback_ms``; how many."""
        horizon = at_ms - self.retention_ms - self.lookback_ms
        dead = [s for s in self._series.values() if s.ends[-1] < horizon]
        for s in dead:
            del self._series[s.key]
            group = self._by_name[s.name]
            del group[s.key]
            if not group:
                del self._by_name[s.name]
            for k, v in s.labels_key_noname:
                index = self._by_label[(s.name, k, v)]
                del index[s.key]
                if not index:
                    del self._by_label[(s.name, k, v)]
            self._bump(s.name)
        return len(dead)
