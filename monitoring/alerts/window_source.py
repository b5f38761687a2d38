"""The window history as a ``monitoring.promql`` sample source.

Each closed window of a series is ONE sample: its ``last`` value, stamped at the
window's last instant, ``end_ms - 1`` (a window is ``[start, end)``, so its last sample
was taken at or before then). That is what a Prometheus scraping once per window
would hold, and it makes Prometheus 2.42's closed intervals (``[T - d, T]`` for a
range, ``[T - lookback, T]`` for an instant selector) take exactly the windows ending
in ``(T - d, T]`` / ``(T - lookback, T]``, as the window subset reads them.

Selectors resolve through the history's (metric, label, value) index and remember
which series their matchers accept until a series of the metric appears or goes
(the cache lives in the evaluator's ``Context.matches``, next to the subset's); the
samples of one selector and interval are built once per evaluation time, however many
rules read them. The cost of a selector is proportional to the series it selects
times the windows in its interval; the history bounds both.

>>> from monitoring.alerts.history import WindowHistory, WindowRow
>>> from monitoring.promql import Matcher
>>> h = WindowHistory(10_000, 60_000)
>>> for end, v in ((10_000, 1.0), (20_000, 4.0)):
...     _ = h.add(WindowRow.of("c", {"job": "a"}, end, [v]))
>>> [(s.labels, s.t_ms.tolist(), s.values.tolist())
...  for s in WindowSource(h).select([Matcher("__name__", "=", "c")], 0, 20_000)]
[({'__name__': 'c', 'job': 'a'}, [9999, 19999], [1.0, 4.0])]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from monitoring.alerts.history import NAME, MatchCache, Series, WindowHistory
from monitoring.alerts.matchers import value_test
from monitoring.promql import Matcher, SeriesData

Test = Callable[[str], bool]
SAMPLE_OFFSET_MS = 1
"""A window's sample is stamped this long before its end."""


def matcher_test(m: Matcher) -> Test:
    """The value test of one matcher (regexes anchored, RE2); ``MatcherError`` if bad."""
    return value_test(m.op, m.value, where=f'matcher {m.name}{m.op}"{m.value}"')


class _Selector:
    """One matcher list, compiled: the metric name, equality pairs and value tests."""

    __slots__ = ("equal", "key", "name", "tests")

    def __init__(self, matchers: list[Matcher]) -> None:
        self.key = "\0samples:" + repr(matchers)
        self.name: str | None = None
        self.equal: list[tuple[str, str]] = []
        self.tests: list[tuple[str, Test]] = []
        for m in matchers:
            if m.op == "=" and m.name == NAME and self.name is None:
                self.name = m.value
                continue
            if m.op == "=":
                self.equal.append((m.name, m.value))
            self.tests.append((m.name, matcher_test(m)))

    def series(self, history: WindowHistory, cache: MatchCache) -> list[Series]:
        """The matching series (cached until a series of the metric appears or goes)."""
        return history.matching(self.name, self.equal, self.tests, self.key, cache)


_COMPILED: dict[str, _Selector] = {}
"""Compiled matcher lists by their text (rules are few; bounded by ``_MAX_COMPILED``)."""
_MAX_COMPILED = 10_000


def _compiled(matchers: list[Matcher]) -> _Selector:
    key = repr(matchers)
    sel = _COMPILED.get(key)
    if sel is None:
        sel = _Selector(matchers)
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.clear()
        _COMPILED[key] = sel
    return sel


class WindowSource:
    """A ``monitoring.promql.Source`` over one ``WindowHistory``, for one evaluation.

    ``matches`` is the selector cache kept across evaluations (``Context.matches``).
    """

    def __init__(self, history: WindowHistory, matches: MatchCache | None = None) -> None:
        self.history = history
        self.matches: MatchCache = {} if matches is None else matches
        self._samples: dict[tuple[str, int, int], list[SeriesData]] = {}

    def select(self, matchers: list[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        """Every matching series with its window samples in ``[start_ms, end_ms]``."""
        sel = _compiled(matchers)
        key = (sel.key, start_ms, end_ms)
        hit = self._samples.get(key)
        if hit is not None:
            return hit
        out: list[SeriesData] = []
        # samples at end - 1 in [start, end] <=> window ends in (start, end + 1]
        lo, hi = start_ms + SAMPLE_OFFSET_MS - 1, end_ms + SAMPLE_OFFSET_MS
        for s in sel.series(self.history, self.matches):
            rows = s.range(lo, hi)
            if not rows:
                continue
            n = len(rows)
            t = np.fromiter((r.end_ms for r in rows), dtype=np.int64, count=n)
            v = np.fromiter((r.last for r in rows), dtype=np.float64, count=n)
            out.append(SeriesData(s.labels, t - SAMPLE_OFFSET_MS, v))
        self._samples[key] = out
        return out
