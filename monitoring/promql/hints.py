"""What the engine will look at of a selector's samples (pure; see ``SelectHint``).

A source that takes a ``hint`` keyword in ``select`` may leave out every sample the
evaluation never looks at; :meth:`SelectHint.keep` says which ones it needs. The
engine's answers are bit-identical either way (tests/unit/test_promql_hints.py).

>>> h = SelectHint(first_ms=600, last_ms=1800, step_ms=600, range_ms=100, instant=False)
>>> h.keep(np.array([450, 500, 550, 600, 700, 1100, 1750])).tolist()
[False, True, True, True, False, True, True]
>>> i = SelectHint(first_ms=600, last_ms=1800, step_ms=600, range_ms=300, instant=True)
>>> i.keep(np.array([300, 500, 550, 700, 1000, 1100])).tolist()
[False, False, True, False, False, True]
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SelectHint:
    """A selector is evaluated at ``first_ms, first_ms + step_ms, ... <= last_ms``
    (``step_ms`` 0: at ``first_ms`` only) over the samples in ``[t - range_ms, t]``
    (a range selector's range, an instant selector's lookback); an ``instant``
    selector uses only the newest of them (a staleness marker included)."""

    first_ms: int
    last_ms: int
    step_ms: int
    range_ms: int
    instant: bool

    @property
    def steps(self) -> int:
        """How many evaluation times."""
        return 1 if self.step_ms <= 0 else (self.last_ms - self.first_ms) // self.step_ms + 1

    def bucket(self, t_ms: np.ndarray) -> np.ndarray:
        """The index k of the first evaluation time ``>= t`` (0 for ``t <= first``)."""
        x = np.asarray(t_ms, dtype=np.int64) - self.first_ms
        if self.step_ms <= 0:
            return np.zeros(len(x), dtype=np.int64)
        return np.where(x <= 0, 0, (x - 1) // self.step_ms + 1)

    def keep(self, t_ms: np.ndarray, sid: np.ndarray | None = None) -> np.ndarray:
        """Which of the samples at ``t_ms`` (sorted per series; ``sid`` the series of
        each, in runs) the evaluation may look at; every other one can be left out.

        A range selector: the samples inside ``[t - range, t]`` of some evaluation
        time t. An instant one: per series and bucket ``(t_{k-1}, t_k]`` the newest
        sample, when it is inside ``[t_k - range, t_k]`` (the newest sample at or
        before a time t_j is the newest of the last non-empty bucket up to j).
        """
        t = np.asarray(t_ms, dtype=np.int64)
        k = self.bucket(t)
        t_k = self.first_ms + k * max(self.step_ms, 0)
        out = (t_k - t <= self.range_ms) & (k < self.steps) & (t >= self.first_ms - self.range_ms)
        if self.instant and len(t):
            newest = np.ones(len(t), dtype=bool)
            newest[:-1] = k[1:] != k[:-1]
            if sid is not None:
                newest[:-1] |= sid[1:] != sid[:-1]
            out &= newest
        return out

    def thins(self) -> bool:
        """Whether leaving samples out is worth a filter: the range (lookback) is at
        most half the step, so at least half of the points fall outside every window."""
        return self.steps > 1 and 2 * self.range_ms <= self.step_ms


def from_times(times: np.ndarray, range_ms: int, instant: bool) -> SelectHint | None:
    """The hint of evaluation ``times`` (equally spaced, or all one time); None when
    they are not (the source then fetches everything)."""
    t = np.asarray(times, dtype=np.int64)
    if not len(t):
        return None
    first, last = int(t[0]), int(t[-1])
    if first == last and (t == first).all():
        return SelectHint(first, first, 0, range_ms, instant)
    step = int(t[1] - t[0]) if len(t) > 1 else 0
    if step <= 0 or not (np.diff(t) == step).all():
        return None
    return SelectHint(first, last, step, range_ms, instant)


def accepts_hint(source: Any) -> bool:
    """Whether ``source.select`` takes a ``hint`` keyword (the optional extension)."""
    try:
        return "hint" in inspect.signature(source.select).parameters
    except (TypeError, ValueError):
        return False
