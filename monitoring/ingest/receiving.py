"""What both receivers share: request limits, refusals, converted requests, and the
bounded cache of validated series.

A receiver converts a whole request into ``Converted`` (points ready for the SDK's
buffer plus counts of what it refused and why) before anything is buffered, so the
request is admitted whole or not at all (see ``receiver.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitoring.metrics.samples import InvalidSample, Limits

DEFAULT_SERIES_CACHE = 100_000


class BadRequest(ValueError):
    """The request as a whole is refused: ``status`` (400, 413, 415) and the reason."""

    def __init__(self, status: int, message: str, reason: str = "bad-request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class RequestLimits:
    """Bounds of one request, checked before and while it is decoded."""

    max_decompressed_bytes: int = 32 * 1024 * 1024
    max_series: int = 50_000
    max_samples: int = 50_000
    max_metadata: int = 50_000
    series: Limits = field(default_factory=Limits)


@dataclass
class Converted:
    """A decoded request: points to buffer, and refusals by reason."""

    points: list[tuple[Any, int, float]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    stale: int = 0  # staleness markers, dropped by design (docs/ingest.md)
    first_error: str = ""
    commit: Callable[[], None] | None = None  # state to keep once the request is admitted

    def reject(self, reason: str, detail: str, n: int = 1) -> None:
        """Count ``n`` points refused for ``reason``; the first detail is kept for the client."""
        self.rejected[reason] += n
        if not self.first_error:
            self.first_error = f"{reason}: {detail}"[:500]

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


MakeSeries = Callable[[str, Mapping[str, str], str, str], Any]


class SeriesCache:
    """Validated series by a caller's key, at most ``max_entries`` (emptied when full,
    as the SDK's caches are); ``make`` validates (raising ``InvalidSample``) and builds.

    >>> made = []
    >>> c = SeriesCache(lambda n, lab, k, u: made.append(n) or (n, k), max_entries=2)
    >>> c.get(("a",), "a", {}, "GAUGE"), c.get(("a",), "a", {}, "GAUGE"), made
    (('a', 'GAUGE'), ('a', 'GAUGE'), ['a'])
    """

    def __init__(self, make: MakeSeries, max_entries: int = DEFAULT_SERIES_CACHE) -> None:
        self.make = make
        self.max_entries = max_entries
        self.entries: dict[Hashable, Any] = {}

    def get(
        self, key: Hashable, name: str, labels: Mapping[str, str], kind: str, unit: str = ""
    ) -> Any:
        """The series under ``key``, built (and validated) on a miss."""
        s = self.entries.get(key)
        if s is None:
            s = self.make(name, labels, kind, unit)
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
            self.entries[key] = s
        return s


__all__ = ["BadRequest", "Converted", "InvalidSample", "RequestLimits", "SeriesCache"]
