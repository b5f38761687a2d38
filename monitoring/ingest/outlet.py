"""Where collected samples leave: the SDK's bounded buffer, with backpressure.

``Outlet.push`` hands points to a ``MetricsCollector`` (on_full="block"). When the
buffer stays full, ``record`` raises ``BufferFullError`` after the SDK's block timeout;
the outlet keeps retrying until its own deadline, so the caller (a collector or a
scrape loop) slows down, and counts what it then could not send. Nothing is dropped
silently: every point ends as ``sent``, ``unsent`` or ``invalid`` in
``monitoring_ingest_samples_total{source,outcome}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter

from monitoring.log import get_logger
from monitoring.metrics.samples import InvalidSample
from monitoring.sdk.sender import BufferFullError

log = get_logger("ingest")


class Point(NamedTuple):
    """One sample to send: ``timestamp_ms`` None means the push's timestamp."""

    name: str
    labels: Mapping[str, str]
    kind: str
    value: float
    timestamp_ms: int | None = None


class Handle(Protocol):
    """A series the SDK validated once (``MetricsCollector.series``)."""

    def record(self, value: float, timestamp_ms: int | None = None) -> bool: ...


class Recorder(Protocol):
    """What an outlet needs of ``MetricsCollector``."""

    def record(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
        kind: str = "GAUGE",
        unit: str = "",
    ) -> bool: ...

    def series(
        self,
        name: str,
        labels: Mapping[str, Any] | None = None,
        kind: str = "GAUGE",
        unit: str = "",
    ) -> Handle: ...


class PushResult(NamedTuple):
    sent: int
    unsent: int
    invalid: int


class Outlet:
    """Send points through ``recorder``; block (retrying) up to ``give_up_s`` per push
    while the buffer is full, then count the rest as unsent."""

    def __init__(
        self,
        recorder: Recorder,
        registry: CollectorRegistry,
        source: str,
        give_up_s: float = 60.0,
    ) -> None:
        self.recorder = recorder
        self.source = source
        self.give_up_s = give_up_s
        self.samples = Counter(
            "monitoring_ingest_samples",
            "Collected samples by outcome: sent (to the SDK buffer), unsent (the buffer "
            "stayed full), invalid (refused by the samples contract).",
            ["source", "outcome"],
            registry=registry,
        )
        self._sent = self.samples.labels(source, "sent")
        self._unsent = self.samples.labels(source, "unsent")
        self._invalid = self.samples.labels(source, "invalid")
        self._last_log = 0.0

    def push(self, points: Iterable[Point], timestamp_ms: int) -> PushResult:
        """Buffer every point (at ``timestamp_ms`` unless it has its own)."""
        record = self.recorder.record

        def send(p: Point) -> bool:
            ts = timestamp_ms if p.timestamp_ms is None else p.timestamp_ms
            return record(p.name, p.value, p.labels, ts, p.kind)

        return self._push(points if isinstance(points, list) else list(points), send)

    def push_series(self, items: list[tuple[Handle, float, int]]) -> PushResult:
        """Buffer (series handle, value, timestamp_ms) items: no per-sample validation."""
        return self._push(items, lambda it: it[0].record(it[1], it[2]))

    def invalid(self, n: int) -> None:
        """Count ``n`` samples refused before they reached the outlet."""
        if n:
            self._invalid.inc(n)

    def _push(self, items: list[Any], send: Callable[[Any], bool]) -> PushResult:
        sent = invalid = 0
        deadline = 0.0
        i = 0
        n = len(items)
        while i < n:
            try:
                if send(items[i]):
                    sent += 1
                else:  # on_full="drop": the SDK counted it as dropped
                    self._unsent.inc()
            except InvalidSample as e:
                invalid += 1
                self._note("sample refused", reason=e.reason, detail=e.detail[:200])
            except BufferFullError:
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.give_up_s
                if now < deadline:
                    continue  # the SDK waited its block timeout: try the same item again
                unsent = n - i
                self._sent.inc(sent)
                self._invalid.inc(invalid)
                self._unsent.inc(unsent)
                log.error(
                    "samples not sent: the producer buffer stayed full",
                    source=self.source,
                    unsent=unsent,
                    waited_s=self.give_up_s,
                )
                return PushResult(sent, unsent, invalid)
            i += 1
        self._sent.inc(sent)
        self._invalid.inc(invalid)
        return PushResult(sent, 0, invalid)

    def _note(self, event: str, **kw: object) -> None:
        now = time.monotonic()
        if now - self._last_log >= 5.0:  # at most one line per 5 s
            self._last_log = now
            log.warning(event, source=self.source, **kw)
