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
# Bytes a per-series structure may hold, estimated. Counting entries alone does not
# bound memory: one entry can be as large as a request (a label value at the contract's
# 2048 characters, 32 of them, or unknown protobuf fields padding a cache key's bytes).
DEFAULT_SERIES_CACHE_BYTES = 256 << 20
DEFAULT_KEY_CACHE_BYTES = 64 << 20
MAX_UNIT_LEN = 128  # the samples contract has no bound on a unit: a 1 MB one outgrows Kafka
ENTRY_OVERHEAD = 200  # a dict slot, the key tuple or bytes object, the value's object


def held(series: Any) -> int:
    """Bytes a cached ``SeriesRef`` holds, estimated: its key, its labels and its
    encoded descriptor are each about as long as the key."""
    return 3 * len(getattr(series, "key", "")) + ENTRY_OVERHEAD


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
    # OTLP/JSON costs about 0.6 CPU-microseconds and 20 bytes of memory per body byte to decode
    # (under the receiver's lock): 32 MB of it stalled every sender for 18 s
    max_json_bytes: int = 4 * 1024 * 1024
    max_series: int = 50_000
    max_samples: int = 50_000
    max_metadata: int = 50_000
    series: Limits = field(default_factory=Limits)


@dataclass
class Converted:
    """A decoded request: points to buffer, and refusals by reason."""

    points: list[tuple[Any, int, float]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    stale: int = 0  # staleness markers (passed on; OTLP drops flagged histograms, summaries)
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
    """Validated series by a caller's key, at most ``max_entries`` holding about
    ``max_bytes`` (emptied when full, as the SDK's caches are); ``make`` validates
    (raising ``InvalidSample``) and builds.

    >>> made = []
    >>> c = SeriesCache(lambda n, lab, k, u: made.append(n) or (n, k), max_entries=2)
    >>> c.get(("a",), "a", {}, "GAUGE"), c.get(("a",), "a", {}, "GAUGE"), made
    (('a', 'GAUGE'), ('a', 'GAUGE'), ['a'])
    """

    def __init__(
        self,
        make: MakeSeries,
        max_entries: int = DEFAULT_SERIES_CACHE,
        max_bytes: int = DEFAULT_SERIES_CACHE_BYTES,
    ) -> None:
        self.make = make
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: dict[Hashable, Any] = {}

    def get(
        self, key: Hashable, name: str, labels: Mapping[str, str], kind: str, unit: str = ""
    ) -> Any:
        """The series under ``key``, built (and validated) on a miss."""
        s = self.entries.get(key)
        if s is None:
            s = self.make(name, labels, kind, unit)
            size = held(s)
            if len(self.entries) >= self.max_entries or self.bytes + size > self.max_bytes:
                self.entries.clear()
                self.bytes = 0
            self.entries[key] = s
            self.bytes += size
        return s


class KeyBytes:
    """The byte budget of a cache keyed by a sender's bytes: ``charge`` says whether
    the cache must be emptied before an entry of ``size`` bytes goes in.

    >>> kb = KeyBytes(max_entries=10, max_bytes=1000)
    >>> kb.charge(0, 600), kb.charge(1, 600), kb.bytes
    (False, True, 800)
    """

    def __init__(self, max_entries: int, max_bytes: int = DEFAULT_KEY_CACHE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0

    def charge(self, entries: int, size: int) -> bool:
        """Count ``size`` more bytes into a cache of ``entries``; True when it must be
        emptied first (the count then restarts at ``size``)."""
        size += ENTRY_OVERHEAD
        if entries >= self.max_entries or self.bytes + size > self.max_bytes:
            self.bytes = size
            return True
        self.bytes += size
        return False


__all__ = [
    "MAX_UNIT_LEN",
    "BadRequest",
    "Converted",
    "InvalidSample",
    "KeyBytes",
    "RequestLimits",
    "SeriesCache",
    "held",
]
