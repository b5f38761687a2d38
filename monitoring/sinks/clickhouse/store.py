"""The store process: consume samples and aggregates from Kafka into ClickHouse.

At-least-once with idempotent tables: offsets are committed synchronously only after
the buffered rows were inserted; a crash in between replays rows that
ReplacingMergeTree (read with FINAL) collapses. ``handle`` (one message) and
``maybe_flush`` are separate from the loop so that tests can drive them directly.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException

from monitoring.config import Settings, ms
from monitoring.log import get_logger
from monitoring.metrics.samples import BATCH, SAMPLE, InvalidSample, Limits, SampleDecoder
from monitoring.sinks.clickhouse.writer import Writer
from monitoring.streams.codec import AvroCodec, DecodeError
from monitoring.streams.metric_batch import MetricBatchDecoder
from monitoring.streams.metric_sample import MetricSampleDecoder
from monitoring.streams.topics import (
    AGGREGATES,
    ANOMALIES,
    LOG_STORED,
    LOG_TEMPLATES,
    NOTIFY_DELIVERIES,
    SAMPLES,
    topic_name,
)

AGGREGATE = "monitoring.Aggregate"
ANOMALY = "monitoring.Anomaly"
DELIVERY = "monitoring.Delivery"
STORED_LOG = "monitoring.StoredLog"
STORED_LOG_BATCH = "monitoring.StoredLogBatch"
LOG_TEMPLATE = "monitoring.LogTemplate"
GROUP_ID = "monitoring-store"
MAX_BACKOFF_S = 30.0


class Message(Protocol):
    """What the store reads of a Kafka message (confluent_kafka.Message)."""

    def error(self) -> Any: ...
    def value(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def timestamp(self) -> tuple[int, int]: ...


def consumer_config(settings: Settings, group_id: str = GROUP_ID) -> dict[str, Any]:
    """confluent-kafka settings of the store's consumer group."""
    return {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "client.id": "monitoring-store",
    }


def topics(settings: Settings) -> list[str]:
    """The topics the store consumes."""
    roles = (SAMPLES, AGGREGATES, ANOMALIES, NOTIFY_DELIVERIES, LOG_STORED, LOG_TEMPLATES)
    return [topic_name(settings.kafka, t) for t in roles]


class Store:
    """Decodes messages into the writer's buffers; flushes, then commits."""

    def __init__(
        self,
        settings: Settings,
        writer: Writer,
        consumer: Any = None,
        codec: AvroCodec | None = None,
        clock: Callable[[], float] = time.monotonic,
        group_id: str = GROUP_ID,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = writer.metrics
        self.consumer = consumer
        self.codec = codec or AvroCodec.from_directory()
        self.batch_decoder = MetricBatchDecoder(self.codec)
        limits = Limits(max_future_skew_ms=ms(settings.aggregation.max_future_skew))
        self.decoder = SampleDecoder(limits)
        self.sample_decoder = MetricSampleDecoder(self.codec, limits)
        self.clock = clock
        self.group_id = group_id
        self.log = get_logger("store")
        self.uncommitted = 0
        self.last_flush = clock()
        self.last_success = time.time()
        self.backoff = 0.0
        self.retry_at = 0.0
        self.paused = False

    # -- one message ---------------------------------------------------------------
    def handle(self, msg: Message) -> None:
        """Decode one message and buffer its rows; bad input is counted and skipped."""
        self.uncommitted += 1
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                self.log.warning("consume_error", error=str(err))
            return
        self.metrics.messages.labels(msg.topic() or "").inc()
        data = msg.value()
        if self.sample_decoder.accepts(data):  # as the aggregation agent reads them
            try:
                sample = self.sample_decoder.decode(data, int(time.time() * 1000))
            except (DecodeError, InvalidSample) as e:
                self.metrics.invalid.labels(e.reason).inc()
                return
            self.writer.add_samples([sample])
            return
        if self.batch_decoder.accepts(data):
            self._handle_batch(data)
            return
        try:
            decoded = self.codec.decode(data)
        except DecodeError as e:
            self.metrics.invalid.labels(e.reason).inc()
            return
        if decoded.name in (SAMPLE, BATCH):
            try:
                result = self.decoder.samples(decoded.name, decoded.record, int(time.time() * 1000))
            except InvalidSample as e:
                self.metrics.invalid.labels(e.reason).inc()
                return
            for _, bad in result.rejected:
                self.metrics.invalid.labels(bad.reason).inc()
            self.writer.add_samples(result.samples)
        elif decoded.name == AGGREGATE:
            ts_type, ts = msg.timestamp()
            version = (
                ts if ts_type != TIMESTAMP_NOT_AVAILABLE and ts > 0 else int(time.time() * 1000)
            )
            self.writer.add_aggregate(decoded.record, version)
        elif decoded.name == ANOMALY:
            self.writer.add_anomaly(decoded.record)
        elif decoded.name == DELIVERY:
            self.writer.add_delivery(decoded.record)
        elif decoded.name == STORED_LOG:
            self.writer.add_log(decoded.record)
        elif decoded.name == STORED_LOG_BATCH:
            try:
                self.writer.add_log_batch(decoded.record)
            except ValueError:
                self.metrics.invalid.labels("bad-batch").inc()
        elif decoded.name == LOG_TEMPLATE:
            self.writer.add_log_template(decoded.record)
        else:
            self.metrics.invalid.labels("unexpected-record").inc()

    def _handle_batch(self, data: bytes) -> None:
        """A MetricBatch decoded and validated as arrays (the aggregation worker's
        path), buffered as columns; counted as ``handle`` counts the other records."""
        try:
            columns = self.batch_decoder.decode(data)._asdict()
            result = self.decoder.columns(BATCH, columns, int(time.time() * 1000))
        except (DecodeError, InvalidSample) as e:
            self.metrics.invalid.labels(e.reason).inc()
            return
        if result.rejected:
            for reason, n in Counter(bad.reason for _, bad in result.rejected).items():
                self.metrics.invalid.labels(reason).inc(n)
        self.writer.add_sample_batch(result.batch)

    # -- flush and commit ----------------------------------------------------------
    def due(self) -> bool:
        """A flush is due: a full batch, or buffered work older than flush_interval."""
        if self.writer.pending >= self.settings.storage.batch_size:
            return True
        waited = self.clock() - self.last_flush
        busy = self.uncommitted or self.writer.pending
        return bool(busy) and waited >= self.settings.storage.flush_interval.total_seconds()

    def flush_and_commit(self) -> None:
        """Insert the buffers, then commit consumed offsets synchronously. Raises on failure."""
        self.writer.flush()
        self.last_flush = self.clock()
        self.last_success = time.time()
        if self.consumer is not None and self.uncommitted:
            try:
                self.consumer.commit(asynchronous=False)
            except KafkaException as e:
                if e.args[0].code() != KafkaError._NO_OFFSET:
                    raise
            self.metrics.commits.inc()
        self.uncommitted = 0

    def maybe_flush(self) -> bool:
        """Flush if due and not backing off; on failure back off and pause consumption."""
        now = self.clock()
        if now < self.retry_at or not self.due():
            return False
        try:
            self.flush_and_commit()
        except Exception as e:
            self.backoff = min(MAX_BACKOFF_S, self.backoff * 2 or 0.5)
            self.retry_at = now + self.backoff
            self.log.error(
                "flush_failed",
                error=str(e)[:500],
                retry_in_s=self.backoff,
                pending=self.writer.pending,
            )
            self._pause(True)
            return False
        if self.backoff:
            self.log.info("flush_recovered", pending=self.writer.pending)
        self.backoff = self.retry_at = 0.0
        self._pause(False)
        return True

    def _pause(self, pause: bool) -> None:
        # While ClickHouse is down, stop fetching but keep polling (group membership).
        if self.consumer is None or pause == self.paused:
            return
        parts = self.consumer.assignment()
        (self.consumer.pause if pause else self.consumer.resume)(parts)
        self.paused = pause

    def health(self) -> dict[str, Any]:
        """Health summary for /healthz."""
        return {
            "status": "degraded" if self.backoff else "ok",
            "pending_rows": self.writer.pending,
            "seconds_since_flush": round(time.time() - self.last_success, 3),
            "retry_backoff_s": self.backoff,
        }

    # -- the loop ------------------------------------------------------------------
    def on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Before partitions move to another store: flush and commit what we have."""
        try:
            self.flush_and_commit()
        except Exception as e:
            self.log.warning("revoke_flush_failed", error=str(e)[:300])

    def run(self, stop: threading.Event, shutdown_timeout: float = 30.0) -> None:
        """Consume until ``stop`` is set, then flush, commit and close the consumer."""
        consumer = self.consumer
        if consumer is None:
            consumer = self.consumer = Consumer(consumer_config(self.settings, self.group_id))
        consumer.subscribe(topics(self.settings), on_revoke=self.on_revoke)
        self.log.info(
            "store_started",
            topics=topics(self.settings),
            batch_size=self.settings.storage.batch_size,
            flush_interval_ms=ms(self.settings.storage.flush_interval),
        )
        try:
            while not stop.is_set():
                for msg in consumer.consume(num_messages=5000, timeout=0.2):
                    self.handle(msg)
                self.maybe_flush()
            self._drain(shutdown_timeout)
        finally:
            consumer.close()
            self.log.info("store_stopped", pending=self.writer.pending)

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            try:
                self.flush_and_commit()
                return
            except Exception as e:
                if time.monotonic() + delay > deadline:
                    self.log.error(
                        "shutdown_flush_failed",
                        error=str(e)[:300],
                        uncommitted_rows_replay_on_restart=self.writer.pending,
                    )
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
