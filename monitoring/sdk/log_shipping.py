"""Ship application logs to the logs topic without ever blocking or crashing the app.

``LogShipper`` is the send path: ``submit`` appends a tuple to a bounded
``collections.deque`` (under a lock, a microsecond or so: when the buffer is full the
oldest record is dropped and counted), and a daemon thread encodes what is waiting and
hands it to librdkafka, keyed by service (Java's murmur2 placement): consecutive
records of one service and host as one ``LogBatch`` message (up to ``batch_lines``
lines and about ``max_record_bytes`` of text: a busy application), a record waiting
alone as a ``LogRecord`` v1 (a quiet one); ``batch_lines=1`` sends only ``LogRecord``.
The log agent decodes a batch once, which is what lets one worker keep up with busy
sources. The thread keeps at most ``max_in_flight`` records inside
librdkafka, so memory is bounded by ``buffer_size + max_in_flight`` records whatever
the broker does; while the broker is unreachable the buffer fills and then drops its
oldest records; when it returns, what is buffered is delivered. Nothing here raises
into the application: errors are counted (``monitoring_log_shipper_records`` by
outcome ``delivered``, ``failed`` (librdkafka gave up after ``message.timeout.ms``),
``dropped`` (buffer full), in the registry given) and logged at most every 30 s.
``close`` (also registered with ``atexit``) flushes what it can within a timeout.

Two front ends feed it: ``KafkaLogHandler`` (stdlib ``logging``) and
``StructlogShipper`` (a structlog processor; ``install_structlog_shipper`` adds it to
the current configuration before the renderer).
"""

from __future__ import annotations

import atexit
import collections
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from functools import partial
from typing import Any

from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitoring.config import Settings
from monitoring.logs.batch import MAX_BATCH_LINES
from monitoring.logs.records import FLAG_ORIGINAL_BYTES, FLAG_TRUNCATED, truncate_utf8
from monitoring.runtime.kafka_client import KafkaTarget, client_config
from monitoring.wire.codec import AvroCodec
from monitoring.wire.log_batch import LogBatchEncoder
from monitoring.wire.log_encoding import LOG_RECORD

# (timestamp_ms, service, host, level, logger, message, trace_id, span_id, exception, attrs)
Entry = tuple[int, str, str, str, str, str, str, str, str, Mapping[str, str]]
_FIELDS = ("timestamp_ms", "service", "host", "level", "logger", "message", "trace_id",
           "span_id", "exception", "attributes")  # fmt: skip
_ERROR_LOG_EVERY_S = 30.0


class LogShipper:
    """Bounded buffer, sender thread, librdkafka producer (see the module doc)."""

    def __init__(
        self,
        kafka: KafkaTarget,
        topic: str,
        service: str,
        host: str | None = None,
        buffer_size: int = 10_000,
        max_in_flight: int = 1_000,
        max_record_bytes: int = 512 * 1024,
        linger_s: float = 0.05,
        batch_lines: int = 256,
        registry: CollectorRegistry | None = None,
        codec: AvroCodec | None = None,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.service = service
        self.host = host if host is not None else socket.gethostname()
        self.buffer: collections.deque[Entry] = collections.deque(maxlen=buffer_size)
        self.max_in_flight = max_in_flight
        self.max_record_bytes = max_record_bytes
        self.linger_s = linger_s
        if not 1 <= batch_lines <= MAX_BATCH_LINES:
            raise ValueError(f"batch_lines {batch_lines}: between 1 and {MAX_BATCH_LINES}")
        self.batch_lines = batch_lines
        self.codec = codec or AvroCodec.from_directory()
        self._batch_encoder = LogBatchEncoder(self.codec)
        conf: dict[str, Any] = {
            **client_config(kafka),
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.timeout.ms": 300_000,
            "queue.buffering.max.messages": max(max_in_flight * 2, 1000),
            "enable.idempotence": True,
            "acks": "all",
            "error_cb": self._on_error,
        }
        conf.update(producer_config or {})
        self.producer = Producer(conf)
        self.delivered = self.failed = self.dropped = 0
        self.in_flight = 0
        self._lock = threading.Lock()  # delivery counts (callbacks run in the sender thread)
        self._submit_lock = threading.Lock()
        self._stop = threading.Event()
        self._last_error_log = 0.0
        self.closed = False
        if registry is not None:
            registry.register(_ShipperMetrics(self))
        self._thread = threading.Thread(target=self._loop, name="log-shipper", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the application side: never blocks, never raises -----------------------------
    def submit(self, entry: Entry) -> None:
        """Buffer one record; if the buffer is full the oldest record is dropped."""
        buf = self.buffer
        with self._submit_lock:  # exact drop counts across application threads
            if len(buf) == buf.maxlen:
                self.dropped += 1
            buf.append(entry)

    # -- the sender thread ----------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._pump()
                self.producer.poll(self.linger_s)
            except Exception as e:  # never let the thread die
                self._log_error(f"log shipper: {e!r}")
                time.sleep(0.1)

    def _pump(self) -> int:
        """Move buffered records into librdkafka while it holds fewer than max_in_flight."""
        moved = 0
        buf, produce = self.buffer, self.producer.produce
        while buf and self.in_flight < self.max_in_flight:
            group = self._take(min(self.batch_lines, self.max_in_flight - self.in_flight))
            if not group:
                break
            try:
                value = self._encode(group[0]) if len(group) == 1 else self._encode_batch(group)
            except Exception as e:
                self._log_error(f"log shipper cannot encode {len(group)} records: {e!r}")
                with self._lock:
                    self.failed += len(group)
                continue
            n = len(group)
            done = partial(self._on_delivery, n=n)
            try:
                produce(self.topic, value, group[0][1].encode(), on_delivery=done)
            except BufferError:
                buf.extendleft(reversed(group))
                break
            with self._lock:
                self.in_flight += n
            moved += n
        return moved

    def _take(self, limit: int) -> list[Entry]:
        """Up to ``limit`` records from the buffer's head: consecutive ones of the first
        record's service and host, about ``max_record_bytes`` of text at most."""
        buf = self.buffer
        group: list[Entry] = []
        size = 0
        while buf and len(group) < limit:
            try:
                e = buf.popleft()
            except IndexError:
                break
            if group and (
                e[1] != group[0][1] or e[2] != group[0][2]
                or size + len(e[5]) + len(e[8]) > self.max_record_bytes
            ):  # fmt: skip
                buf.appendleft(e)
                break
            group.append(e)
            size += len(e[5]) + len(e[8]) + 64
        return group

    def _limited(self, e: Entry) -> Entry:
        """The record with message and exception cut to ``max_record_bytes``, flagged."""
        limit = self.max_record_bytes
        message, n_msg = truncate_utf8(e[5], limit)
        exception, n_exc = truncate_utf8(e[8], limit)
        if n_msg <= limit and n_exc <= limit:
            return e
        cut = [(f, n) for f, n in (("message", n_msg), ("exception", n_exc)) if n > limit]
        attrs = dict(e[9])
        attrs[FLAG_TRUNCATED] = ",".join(f for f, _ in cut)
        attrs[FLAG_ORIGINAL_BYTES] = ",".join(f"{f}={n}" for f, n in cut)
        return (*e[:5], message, e[6], e[7], exception, attrs)

    def _encode(self, e: Entry) -> bytes:
        """One record as a ``LogRecord``."""
        e = self._limited(e)
        return self.codec.encode(LOG_RECORD, dict(zip(_FIELDS, e, strict=True)))

    def _encode_batch(self, group: list[Entry]) -> bytes:
        """Records of one service and host as a ``LogBatch``."""
        lines = [self._limited(e) for e in group]
        return self._batch_encoder.encode(group[0][1], group[0][2], [(e[0], *e[3:]) for e in lines])

    def _on_delivery(self, err: Any, _msg: Any, n: int = 1) -> None:
        with self._lock:
            self.in_flight -= n
            if err is None:
                self.delivered += n
            else:
                self.failed += n
        if err is not None:
            self._log_error(f"log shipper delivery failed: {err}")

    def _on_error(self, err: Any) -> None:
        self._log_error(f"log shipper: broker error: {err}")

    def _log_error(self, text: str) -> None:
        # Plain stderr, rate-limited: logging here could feed back into the shipper.
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_EVERY_S:
            self._last_error_log = now
            print(text, file=sys.stderr)

    # -- flush / close ----------------------------------------------------------------
    def pending(self) -> int:
        """Records buffered or inside librdkafka, not yet acknowledged."""
        return len(self.buffer) + self.in_flight

    def flush(self, timeout: float = 10.0) -> int:
        """Wait until everything submitted so far is delivered; return what is left."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pending()

    def close(self, timeout: float = 5.0) -> int:
        """Flush within ``timeout`` seconds, stop the thread; return records left unsent."""
        if self.closed:
            return self.pending()
        self.closed = True
        left = self.flush(timeout)
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(2.0)
        atexit.unregister(self.close)
        return left


class _ShipperMetrics:
    """prometheus_client collector reading the shipper's counts at scrape time."""

    def __init__(self, shipper: LogShipper) -> None:
        self._s = shipper

    def collect(self) -> Iterator[Metric]:
        s = self._s
        c = CounterMetricFamily(
            "monitoring_log_shipper_records",
            "Log records by outcome: delivered, failed (librdkafka gave up), dropped "
            "(buffer full: the oldest record is dropped).",
            labels=["outcome"],
        )
        for outcome, v in (("delivered", s.delivered), ("failed", s.failed),
                           ("dropped", s.dropped)):  # fmt: skip
            c.add_metric([outcome], v)
        yield c
        yield GaugeMetricFamily(
            "monitoring_log_shipper_pending", "Records buffered or in flight.", value=s.pending()
        )


# -- stdlib logging -------------------------------------------------------------------
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class KafkaLogHandler(logging.Handler):
    """A ``logging.Handler`` that ships records through a ``LogShipper``.

    ``extra={...}`` fields become attributes (``trace_id`` and ``span_id`` fill those
    fields); exceptions are formatted into ``exception``. Never raises.
    """

    def __init__(self, shipper: LogShipper, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.shipper = shipper
        self._exc_formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            exc = ""
            if record.exc_info:
                exc = self._exc_formatter.formatException(record.exc_info)
            elif record.exc_text:
                exc = record.exc_text
            d = record.__dict__
            attrs: dict[str, str] = {}
            trace = span = ""
            if len(d) > len(_STANDARD) - 3:  # cheap test for `extra=` fields
                for k, v in d.items():
                    if k not in _STANDARD:
                        if k == "trace_id":
                            trace = str(v)
                        elif k == "span_id":
                            span = str(v)
                        else:
                            attrs[k] = str(v)
            s = self.shipper
            s.submit((int(record.created * 1000), s.service, s.host, record.levelname,
                      record.name, msg, trace, span, exc, attrs))  # fmt: skip
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        try:
            self.shipper.close()
        finally:
            super().close()


# -- structlog ------------------------------------------------------------------------
_RESERVED = frozenset(
    {"event", "level", "timestamp", "logger", "component", "exception", "exc_info",
     "trace_id", "span_id", "stack"}
)  # fmt: skip


class StructlogShipper:
    """A structlog processor: ships the event, returns it unchanged for rendering.

    Put it after ``format_exc_info`` (so ``exception`` is text) and before the
    renderer. Level: the ``level`` key (``add_log_level``) or the method name; logger:
    ``logger`` or ``component``; other keys become attributes (``str()``).
    """

    def __init__(self, shipper: LogShipper) -> None:
        self.shipper = shipper

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            get = event_dict.get
            attrs = {k: str(v) for k, v in event_dict.items() if k not in _RESERVED}
            s = self.shipper
            s.submit(
                (
                    int(time.time() * 1000), s.service, s.host,
                    str(get("level") or method_name), str(get("logger") or get("component") or ""),
                    str(get("event", "")), str(get("trace_id", "")), str(get("span_id", "")),
                    str(get("exception", "") or get("stack", "") or ""), attrs,
                )
            )  # fmt: skip
        except Exception:
            pass  # shipping must never break the application's logging
        return event_dict


def install_structlog_shipper(shipper: LogShipper) -> StructlogShipper:
    """Insert a ``StructlogShipper`` before the renderer of structlog's current config."""
    import structlog

    processors = list(structlog.get_config()["processors"])
    proc = StructlogShipper(shipper)
    processors.insert(max(0, len(processors) - 1), proc)
    structlog.configure(processors=processors)
    return proc


def ship_own_logs(
    settings: Settings, service: str, registry: CollectorRegistry | None = None
) -> LogShipper:
    """Ship this process's structlog events to the configured logs topic as well."""
    from monitoring.runtime.topics import LOGS, topic_name

    shipper = LogShipper(
        settings.kafka, topic_name(settings.kafka, LOGS), service,
        registry=registry,
    )  # fmt: skip
    install_structlog_shipper(shipper)
    return shipper
