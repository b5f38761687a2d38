"""Producer SDK: metric samples from any Python process to the samples topic.

``MetricsCollector`` keeps Prometheus-style instruments (counters, gauges, histograms)
and a low-level ``record()``; samples are buffered and sent as Avro events on
confluent-kafka (librdkafka):

* Kafka key = the series key (name plus sorted labels), so a series always lands on
  one partition. librdkafka runs with ``partitioner=murmur2_random``, the Java
  client's placement, so producers in every language agree.
* Batch mode (default): buffered samples are grouped by partition here, with
  ``murmur2(series_key) % partitions`` exactly as Kafka's default partitioner, and
  each group becomes one ``MetricBatch`` (parallel arrays, ten times cheaper to
  decode than records) written to that partition explicitly; its key is the first
  series key of the batch. A batch goes out when ``collection.batch_size`` samples
  are buffered or the oldest has waited ``collection.linger``.
* Non-batch mode: one ``MetricSample`` per sample, keyed by its series key.
* The buffer is bounded: buffered plus not-yet-acknowledged samples never exceed
  ``collection.buffer_size``. When full, ``record()`` polls the producer and waits up
  to ``block_timeout`` for deliveries, then raises ``BufferFullError`` (``on_full=
  "block"``), or drops the sample and counts it (``on_full="drop"``).
* Deliveries are counted on a prometheus_client registry; ``flush()``, ``close()``,
  a context manager, and a flush when the collector is garbage-collected or the
  interpreter exits (``weakref.finalize``) make sure a short script loses nothing.

This module is the facade. The parts: ``partitioner`` (murmur2, placement),
``sample_encoding`` (series, Avro records), ``instruments`` (counter, gauge,
histogram), ``sender`` (buffer, librdkafka, sender thread); their public names are
re-exported here.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.log import get_logger
from monitoring.metrics.samples import InvalidSample, Limits, is_stale
from monitoring.runtime.kafka_client import client_config, report_access_errors
from monitoring.runtime.topics import SAMPLES, topic_name
from monitoring.sdk.instruments import (
    DEFAULT_BUCKETS,
    Counter,
    CounterChild,
    Gauge,
    GaugeChild,
    Histogram,
    HistogramChild,
    Instruments,
)
from monitoring.sdk.sender import BufferFullError, ProducerClosedError, Sender
from monitoring.wire.partitioner import group_by_partition, murmur2, partition_for
from monitoring.wire.sample_encoding import (
    DEFAULT_LIMITS,
    KINDS,
    SERIES_CACHE_MAX,
    BatchEncoder,
    Item,
    SampleEncoder,
    SeriesRef,
    batch_record,
    encode_descriptor,
    make_series,
    sample_record,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "KINDS",
    "BatchEncoder",
    "BufferFullError",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Histogram",
    "HistogramChild",
    "Item",
    "MetricsCollector",
    "ProducerClosedError",
    "SampleEncoder",
    "SeriesHandle",
    "SeriesRef",
    "batch_record",
    "encode_descriptor",
    "group_by_partition",
    "make_series",
    "murmur2",
    "partition_for",
    "sample_record",
]

log = get_logger("producer")


class SeriesHandle:
    """A pre-validated series: ``handle.record(value)`` skips key computation."""

    __slots__ = ("_append", "series")

    def __init__(self, series: SeriesRef, append: Callable[[SeriesRef, int, float], bool]) -> None:
        self.series = series
        self._append = append

    def record(self, value: float, timestamp_ms: int | None = None) -> bool:
        v = float(value)
        if not math.isfinite(v) and not is_stale(v):
            raise InvalidSample("non-finite-value", f"{self.series.key} value {value!r}")
        return self._append(
            self.series, time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms, v
        )


def _seconds(v: float | timedelta) -> float:
    return v.total_seconds() if isinstance(v, timedelta) else float(v)


class MetricsCollector:
    """Collect metrics in-process and send them to the samples topic.

    Example::

        with MetricsCollector(source="checkout-1") as mc:
            requests = mc.counter("http_requests_total", unit="requests")
            requests.labels(route="/cart", status="200").inc()
            latency = mc.histogram("http_request_duration_seconds", buckets=(0.1, 0.5, 1))
            latency.observe(0.23, route="/cart")
            mc.record("queue_depth", 17, {"queue": "orders"})   # sent now, not at collect
            mc.collect()                  # or mc.start() to collect every interval
        # leaving the block flushes; so does interpreter exit

    Arguments beyond ``settings`` override it: ``bootstrap_servers``, ``topic`` (default
    ``<prefix>metrics.samples``), ``batch_size``, ``buffer_size``, ``linger`` (s), plus
    ``on_full`` ("block" raises ``BufferFullError`` after ``block_timeout`` s, "drop"
    drops and counts), ``num_partitions`` (skip the metadata lookup), and
    ``producer_config`` (extra librdkafka settings). Delivery counts go to ``registry``
    (a private ``CollectorRegistry`` by default, see ``.registry``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        source: str = "",
        batch: bool = True,
        registry: CollectorRegistry | None = None,
        batch_size: int | None = None,
        buffer_size: int | None = None,
        linger: float | timedelta | None = None,
        on_full: Literal["block", "drop"] = "block",
        block_timeout: float = 5.0,
        num_partitions: int | None = None,
        producer_config: Mapping[str, Any] | None = None,
        close_timeout: float = 10.0,
        metadata_timeout: float = 5.0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        settings = settings or Settings.load()
        coll, kafka = settings.collection, settings.kafka
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', not {on_full!r}")
        self.settings = settings
        self.source = source
        self.batch = batch
        self.topic = topic or topic_name(kafka, SAMPLES)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.limits = limits
        self.close_timeout = close_timeout
        buffer_size = buffer_size or coll.buffer_size
        linger_s = _seconds(linger) if linger is not None else coll.linger.total_seconds()
        if bootstrap_servers:
            kafka = kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
        conf: dict[str, Any] = {
            **client_config(kafka),
            "client.id": source or "monitoring-sdk",
            "partitioner": "murmur2_random",  # Java-compatible placement for keyed records
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 5 if batch else max(5, int(linger_s * 1000)),
            "message.max.bytes": kafka.max_message_bytes,
            "queue.buffering.max.messages": max(100_000, buffer_size + 1000),
            "log.connection.close": False,
            "logger": logging.getLogger("monitoring.rdkafka"),
            # a refused password or an untrusted certificate, named in the log
            "error_cb": report_access_errors(
                kafka, lambda reason: log.error("kafka_access_denied", reason=reason)
            ),
        }
        conf.update(producer_config or {})
        self._core = Sender(
            conf=conf,
            topic=self.topic,
            source=source,
            batch=batch,
            batch_size=batch_size or coll.batch_size,
            buffer_size=buffer_size,
            linger_s=linger_s,
            on_full=on_full,
            block_timeout=block_timeout,
            num_partitions=num_partitions,
            fallback_partitions=kafka.samples_partitions,
            max_message_bytes=kafka.max_message_bytes,
            metadata_timeout=metadata_timeout,
            registry=self.registry,
        )
        self._append = self._core.append
        self._instruments = Instruments()
        self._known: dict[Any, SeriesRef] = {}
        self._collect_stop: threading.Event | None = None
        self._collect_thread: threading.Thread | None = None
        self._ingest_parts: tuple[Any, Any] | None = None
        self._finalizer = weakref.finalize(
            self, _finalize, self._core, self._instruments, close_timeout
        )

    # -- instruments ----------------------------------------------------------------------

    def counter(
        self, name: str, labels: Mapping[str, Any] | None = None, unit: str = ""
    ) -> Counter:
        """Get or create a counter family; ``labels`` are constant labels of every series."""
        return self._instruments.get_or_create(
            Counter, name, lambda: Counter(self._instruments, name, labels, unit)
        )

    def gauge(self, name: str, labels: Mapping[str, Any] | None = None, unit: str = "") -> Gauge:
        """Get or create a gauge family."""
        return self._instruments.get_or_create(
            Gauge, name, lambda: Gauge(self._instruments, name, labels, unit)
        )

    def histogram(
        self,
        name: str,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        labels: Mapping[str, Any] | None = None,
        unit: str = "",
    ) -> Histogram:
        """Get or create a histogram family (``+Inf`` is appended to ``buckets``)."""
        return self._instruments.get_or_create(
            Histogram, name, lambda: Histogram(self._instruments, name, labels, unit, buckets)
        )

    def series(
        self,
        name: str,
        labels: Mapping[str, Any] | None = None,
        kind: str = "GAUGE",
        unit: str = "",
    ) -> SeriesHandle:
        """A handle for the fastest ``record`` of one series (key computed once)."""
        return SeriesHandle(make_series(name, labels, kind, unit, self.limits), self._append)

    # -- samples --------------------------------------------------------------------------

    def record(
        self,
        name: str,
        value: float,
        labels: Mapping[str, Any] | None = None,
        timestamp_ms: int | None = None,
        kind: str = "GAUGE",
        unit: str = "",
    ) -> bool:
        """Buffer one sample now (``timestamp_ms`` defaults to now).

        Returns False if it was dropped (``on_full="drop"``); raises ``InvalidSample``
        for a name, labels or value the contract rejects and ``BufferFullError`` when
        the buffer stays full.
        """
        # Cache by name and labels in the caller's order: no sort, no key formatting.
        try:
            ck: Any = (name, *labels.items()) if labels else name
            s = self._known.get(ck)
        except TypeError:  # unhashable label values: validate (and reject) below
            ck, s = None, None
        if s is None or s.kind != kind or s.unit != unit:
            s = self._new_series(ck, name, labels, kind, unit)
        v = float(value)
        if not math.isfinite(v) and not is_stale(v):
            raise InvalidSample("non-finite-value", f"{s.key} value {value!r}")
        return self._append(
            s, time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms, v
        )

    def record_many(self, items: list[Item]) -> None:
        """Buffer many samples at once, all or none: ``items`` are ``(series, timestamp_ms,
        value)`` with series from ``make_series`` (validated) and finite values (or
        the staleness marker, ``STALE_NAN``).

        Raises ``BufferFullError`` at once, buffering nothing, when the buffer cannot take
        them all (a receiver answers 503 and its sender retries the whole request),
        ``InvalidSample`` for a non-finite value (nothing buffered either).
        """
        for s, _ts, v in items:
            if v - v != 0.0 and not is_stale(v):  # NaN or ±Inf, but a staleness marker
                raise InvalidSample("non-finite-value", f"{s.key} value {v!r}")
        self._core.extend(items)

    def _new_series(
        self, ck: Any, name: str, labels: Mapping[str, Any] | None, kind: str, unit: str
    ) -> SeriesRef:
        s = make_series(name, labels, kind, unit, self.limits)
        if ck is not None:
            if len(self._known) >= SERIES_CACHE_MAX:
                self._known.clear()
            self._known[ck] = s
        return s

    def snapshot(self) -> list[tuple[SeriesRef, float]]:
        """Current value of every instrument series, without sending anything."""
        return self._instruments.snapshot()

    def collect(
        self,
        timestamp_ms: int | None = None,
        *,
        sources: Sequence[Any] | None = None,
        interval: float | timedelta | None = None,
    ) -> int:
        """Snapshot every counter, gauge and histogram at one timestamp into the buffer.

        With ``sources`` (``"system"``: this host, node_exporter's names; a scrape
        target's URL; a Python callable returning ``{name: value}`` or points; see
        ``monitoring.ingest.sources``) each is read too, at the same timestamp, through
        the buffer with backpressure. With ``interval`` as well, collection goes on in
        a background thread every ``interval`` (deadlines without drift) until
        ``stop()`` or ``close()``: the seed's ``collect(sources=..., interval=...)``.

        Returns the number of samples buffered now.
        """
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        if sources is None:
            n = _collect(self._core, self._instruments, ts)
            if interval is not None:
                self.start(interval)
            return n
        from monitoring.ingest.sources import SourceSet

        srcs = SourceSet(sources, *self._ingest(), self.settings)
        try:
            n = _collect(self._core, self._instruments, ts) + srcs.collect(ts)
        except BaseException:
            srcs.close()
            raise
        if interval is None:
            srcs.close()
        else:
            self._collect_sources_every(_seconds(interval), srcs)
        return n

    def _ingest(self) -> tuple[Any, Any]:
        """The outlet and error counter that sources push through (made once)."""
        if self._ingest_parts is None:
            from monitoring.ingest.outlet import Outlet
            from monitoring.ingest.sources import source_errors

            outlet = Outlet(self, self.registry, "sources", give_up_s=60.0)
            self._ingest_parts = (outlet, source_errors(self.registry))
        return self._ingest_parts

    def _collect_sources_every(self, every: float, srcs: Any) -> None:
        from monitoring.ingest.ticker import Ticker

        self.stop()  # one background collection at a time
        stop = threading.Event()
        core, instruments = self._core, self._instruments

        def loop() -> None:
            ticker = Ticker(every, offset_s=every)
            try:
                while not stop.wait(ticker.remaining()):
                    now = time.time_ns() // 1_000_000
                    try:
                        _collect(core, instruments, now)
                        srcs.collect(now)
                    except ProducerClosedError:
                        return
                    except Exception as e:
                        log.error("metrics collection failed", error=repr(e))
                    ticker.advance()
            finally:
                srcs.close()

        self._collect_stop = stop
        self._collect_thread = threading.Thread(target=loop, name="metrics-collect", daemon=True)
        self._collect_thread.start()

    def start(self, interval: float | timedelta | None = None) -> None:
        """Collect in a background thread every ``interval`` (default collection.interval)."""
        if self._collect_thread is not None:
            return
        every = (
            _seconds(interval)
            if interval is not None
            else (self.settings.collection.interval.total_seconds())
        )
        stop = threading.Event()
        core, instruments = self._core, self._instruments

        def loop() -> None:
            while not stop.wait(every):
                try:
                    _collect(core, instruments, time.time_ns() // 1_000_000)
                except ProducerClosedError:
                    return
                except Exception as e:
                    log.error("metrics collection failed", error=repr(e))

        self._collect_stop = stop
        self._collect_thread = threading.Thread(target=loop, name="metrics-collect", daemon=True)
        self._collect_thread.start()

    def stop(self) -> None:
        """Stop the background collection started by ``start()``."""
        if self._collect_stop is not None and self._collect_thread is not None:
            self._collect_stop.set()
            self._collect_thread.join()
        self._collect_stop = self._collect_thread = None

    # -- delivery -------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> int:
        """Send everything buffered and wait up to ``timeout`` s for acknowledgements.

        Returns the number of samples still unacknowledged (0 when all arrived).
        """
        return self._core.flush(timeout)

    def close(self, timeout: float | None = None) -> int:
        """Stop collecting, take a last snapshot if instruments changed, flush, close.

        Returns the number of samples left undelivered (0 when all arrived).
        """
        self.stop()
        self._finalizer.detach()
        return _finalize(
            self._core, self._instruments, self.close_timeout if timeout is None else timeout
        )

    @property
    def closed(self) -> bool:
        return self._core.closed

    def partitions(self) -> int:
        """The samples topic's partition count as the SDK uses it for batching."""
        return self._core.partitions()

    def stats(self) -> dict[str, int]:
        """Counts so far: delivered, failed, dropped samples, messages, buffered samples."""
        c = self._core
        with c.lock:
            return {
                "delivered": c.delivered,
                "failed": c.failed,
                "dropped": c.dropped,
                "messages": c.messages,
                "pending": len(c.pending),
                "inflight": c.inflight,
            }

    def __enter__(self) -> MetricsCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _collect(core: Sender, instruments: Instruments, ts: int) -> int:
    n = 0
    for s, v in instruments.snapshot(reset=True):
        if core.append(s, ts, v):
            n += 1
    return n


def _finalize(core: Sender, instruments: Instruments, timeout: float) -> int:
    """Last snapshot (if anything changed) and flush; run by close(), GC or atexit."""
    if core.closed:
        return 0
    try:
        if instruments.dirty:
            _collect(core, instruments, time.time_ns() // 1_000_000)
    finally:
        left = core.close(timeout)
    return left
