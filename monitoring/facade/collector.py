"""``MetricsCollector().collect(sources=..., interval=...)``: the documented collector.

A *metric source* is what ``monitoring.ingest.sources.as_source`` takes:

* ``"system"``: this host (node_exporter's names: ``node_cpu_seconds_total``,
  ``node_memory_MemAvailable_bytes``...), with ``job`` and ``instance`` labels;
* a URL, ``http://host:port/metrics``: one Prometheus scrape per collection;
* a Python callable returning ``{name: value}``, ``Point`` values or tuples
  ``(name, value[, labels[, kind]])``;
* any object with ``read() -> list[Point]``.

``collect`` reads every source ``rounds`` times (default once), ``interval`` apart
(a duration: ``"10s"``, seconds, a timedelta), through the SDK's bounded outlet (the
contract's validation: a refused point is counted, not returned), and returns the
samples as ``Sample`` values (in ``pipeline`` mode once Kafka acknowledged them, or
``ResultTimeout`` after ``python_api.wait``). In ``pipeline`` mode the same samples go
to the samples topic, and with ``interval`` collection goes on in the background every
interval until ``stop()`` or ``close()`` (the SDK's behaviour). In ``local`` mode nothing
leaves the process.

Without ``sources``, ``collect()`` is the SDK's snapshot of its instruments (counters,
gauges, histograms made with ``counter()``, ``gauge()``, ``histogram()``), returning
the number of samples buffered; every other SDK method (``record``, ``flush``...) is
there in ``pipeline`` mode, and SDK options (``batch=``, ``linger=``...) imply it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from monitoring.config import Settings, parse_duration
from monitoring.facade.common import ResultTimeout, resolve
from monitoring.metrics.samples import InvalidSample, Sample

MAX_ROUNDS = 10_000


class _Recording:
    """The outlet's recorder: validates each point as the SDK does, keeps it as a
    ``Sample``, and forwards it to the SDK in pipeline mode."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward
        self.samples: list[Sample] = []

    def record(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
        kind: str = "GAUGE",
        unit: str = "",
    ) -> bool:
        from monitoring.wire.sample_encoding import make_series

        s = make_series(name, labels, kind, unit)
        v = float(value)
        if not math.isfinite(v):
            raise InvalidSample("non-finite-value", f"{s.key} value {value!r}")
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        if self.forward is not None and not self.forward.record(name, v, s.labels, ts, kind, unit):
            return False
        self.samples.append(Sample(s.key, s.name, s.labels, ts, v, kind, unit))
        return True

    def series(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("sources push points, not series handles")


def seconds(interval: float | str | timedelta) -> float:
    """An interval in seconds (``"10s"``, ``2.5``, a timedelta); ValueError if not > 0."""
    s = parse_duration(interval).total_seconds()
    if not s > 0:
        raise ValueError(f"interval must be greater than 0, not {interval!r}")
    return s


class MetricsCollector:
    """Collects metrics from sources (see the module); SDK producer in pipeline mode.

    >>> mc = MetricsCollector(mode="local")
    >>> [(s.name, s.value) for s in mc.collect(sources=[lambda: {"queue_depth": 3}])]
    [('queue_depth', 3.0)]
    """

    def __init__(
        self, settings: Settings | None = None, *, mode: str | None = None, **sdk_options: Any
    ) -> None:
        if sdk_options and mode is None:
            mode = "pipeline"  # the producer's options: the caller wants the producer
        self.settings, self.mode = resolve(settings, mode)
        self.registry = sdk_options.pop("registry", None) or CollectorRegistry()
        self._sdk: Any = None
        if self.mode == "pipeline":
            from monitoring.sdk.producer import MetricsCollector as Producer

            self._sdk = Producer(self.settings, registry=self.registry, **sdk_options)
        elif sdk_options:
            raise TypeError(f"{', '.join(sdk_options)}: options of the pipeline's producer")
        self._outlet: Any = None

    @property
    def sdk(self) -> Any:
        """The SDK producer (``monitoring.sdk.producer.MetricsCollector``), pipeline mode."""
        if self._sdk is None:
            raise AttributeError("local mode has no producer: use mode='pipeline'")
        return self._sdk

    def __getattr__(self, name: str) -> Any:
        sdk = self.__dict__.get("_sdk")
        if name.startswith("_") or sdk is None:
            raise AttributeError(f"{name}: local mode has no producer: use mode='pipeline'")
        return getattr(sdk, name)

    def collect(
        self,
        timestamp_ms: int | None = None,
        *,
        sources: Sequence[Any] | None = None,
        interval: float | str | timedelta | None = None,
        rounds: int = 1,
    ) -> Any:
        """Read ``sources`` ``rounds`` times, ``interval`` apart; the samples (see the
        module). Without sources: the SDK's instrument snapshot (a count)."""
        if sources is None:
            if self._sdk is None:
                return 0
            return self._sdk.collect(timestamp_ms, interval=interval)
        if not 1 <= rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds must be 1 to {MAX_ROUNDS}")
        every = seconds(interval) if interval is not None else None
        if rounds > 1 and every is None:
            raise ValueError("rounds > 1 needs an interval")
        from monitoring.ingest.outlet import Outlet
        from monitoring.ingest.sources import SourceSet, source_errors

        rec = _Recording(self._sdk)
        if self._outlet is None:
            own = CollectorRegistry()  # the SDK's own outlet counts on self.registry
            self._outlet = (Outlet(rec, own, "python_api"), source_errors(own))
        outlet, errors = self._outlet
        outlet.recorder = rec
        srcs = SourceSet(list(sources), outlet, errors, self.settings)
        try:
            start = time.monotonic()
            for k in range(rounds):
                if k:
                    pause = start + k * (every or 0) - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)  # the next collection's deadline
                if timestamp_ms is None:
                    srcs.collect(time.time_ns() // 1_000_000)
                else:
                    srcs.collect(timestamp_ms + k * round((every or 0) * 1000))
        finally:
            srcs.close()
        if self._sdk is not None:
            wait_s = self.settings.python_api.wait.total_seconds()
            left = self._sdk.flush(wait_s)
            if left:
                raise ResultTimeout(
                    f"{left} of {len(rec.samples)} samples not acknowledged by Kafka "
                    f"({self.settings.kafka.bootstrap_servers}) within {wait_s:g} s"
                )
            if every is not None:  # go on in the background, as the SDK does
                from monitoring.ingest.sources import SourceSet as Sources

                sdk_outlet, sdk_errors = self._sdk._ingest()
                background = Sources(list(sources), sdk_outlet, sdk_errors, self.settings)
                self._sdk._collect_sources_every(every, background)
        return rec.samples

    def stop(self) -> None:
        """Stop background collection (pipeline mode)."""
        if self._sdk is not None:
            self._sdk.stop()

    def close(self, timeout: float | None = None) -> int:
        """Stop, flush and close the producer; samples left undelivered (0 in local mode)."""
        return int(self._sdk.close(timeout)) if self._sdk is not None else 0

    def __enter__(self) -> MetricsCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
