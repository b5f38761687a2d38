"""The SDK's send path: bounded sample buffer, librdkafka producer, sender thread.

``Sender`` buffers samples (buffered plus unacknowledged never exceed its capacity),
groups them by partition into ``MetricBatch`` messages, or sends one ``MetricSample``
per message, and counts deliveries for a prometheus_client registry.
``MetricsCollector`` (``producer.py``) is its facade.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

from confluent_kafka import KafkaException, Producer
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitoring.log import get_logger
from monitoring.wire.codec import AvroCodec
from monitoring.wire.partitioner import group_by_partition
from monitoring.wire.sample_encoding import BatchEncoder, Item, SampleEncoder, SeriesRef

_PARTITION_CACHE_MAX = 1_000_000
_METADATA_TTL_S = 300.0
_METADATA_RETRY_S = 30.0
_MESSAGE_OVERHEAD = 1024  # record headers, key and batch framing beside the Avro body

log = get_logger("producer")


class BufferFullError(RuntimeError):
    """The SDK buffer stayed full for the whole ``block_timeout``: the broker is too slow
    or unreachable. Nothing was enqueued for the sample that raised."""


class ProducerClosedError(RuntimeError):
    """``record()`` or an instrument update reached a closed collector's send path."""


@functools.lru_cache(maxsize=1)
def _codec() -> AvroCodec:
    return AvroCodec.from_directory()


class Sender:
    """Buffer, librdkafka producer, sender thread. Holds no reference to the facade, so
    the facade's finalizer (GC or interpreter exit) can flush it."""

    def __init__(
        self,
        *,
        conf: dict[str, Any],
        topic: str,
        source: str,
        batch: bool,
        batch_size: int,
        buffer_size: int,
        linger_s: float,
        on_full: Literal["block", "drop"],
        block_timeout: float,
        num_partitions: int | None,
        fallback_partitions: int,
        max_message_bytes: int,
        metadata_timeout: float,
        registry: CollectorRegistry,
    ) -> None:
        self.producer = Producer(conf)
        self.topic = topic
        self.source = source
        self.batch = batch
        self.batch_size = batch_size
        self.capacity = buffer_size
        self.linger_s = linger_s
        self.on_full = on_full
        self.block_timeout = block_timeout
        self.fixed_partitions = num_partitions
        self.fallback_partitions = fallback_partitions
        self.max_body = max(1024, max_message_bytes - _MESSAGE_OVERHEAD)
        self.metadata_timeout = metadata_timeout
        codec = _codec()
        self.encode_batch = BatchEncoder(codec).encode
        self.encode_sample = SampleEncoder(codec, source).encode

        self.lock = threading.Lock()
        self.pending: list[Item] = []
        self.oldest = 0.0
        self.inflight = 0
        self.closed = False
        self.stopping = threading.Event()
        self.delivered = self.failed = self.dropped = self.messages = 0
        self.num_partitions = 0
        self.partitions_expiry = 0.0
        self.partition_cache: dict[str, int] = {}
        self._last_error_log = 0.0

        registry.register(_ProducerMetrics(self))
        self._on_delivery_one = functools.partial(self._on_delivery, 1)

        self.sender = threading.Thread(target=self._sender_loop, name="metrics-sender", daemon=True)
        self.sender.start()

    # -- buffer ---------------------------------------------------------------------------

    def occupancy(self) -> int:
        return len(self.pending) + self.inflight

    def append(self, s: SeriesRef, ts: int, v: float) -> bool:
        """Buffer one sample; True if enqueued, False if dropped (``on_full="drop"``)."""
        if not self.batch:
            return self._append_single(s, ts, v)
        deadline = 0.0
        while True:
            with self.lock:
                if self.closed:
                    raise ProducerClosedError("the metrics collector is closed")
                pending = self.pending
                if len(pending) + self.inflight < self.capacity:
                    if not pending:
                        self.oldest = time.monotonic()
                    pending.append((s, ts, v))
                    if len(pending) < self.batch_size:
                        return True
                    items: list[Item] | None = self._drain_locked()
                    full = False
                else:
                    items = self._drain_locked() if pending else None
                    full = True
            if items:
                self._send(items)
            if not full:
                return True
            if self.on_full == "drop":
                self._count_dropped()
                return False
            deadline = self._wait_for_space(deadline)

    def extend(self, items: list[Item]) -> None:
        """Buffer every item or none: ``BufferFullError`` at once, nothing buffered, when
        the buffer (buffered plus unacknowledged) cannot take them all."""
        if not self.batch:  # room for all reserved first: never half buffered or dropped
            with self.lock:
                if self.closed:
                    raise ProducerClosedError("the metrics collector is closed")
                if self.inflight + len(items) > self.capacity:
                    raise BufferFullError(
                        f"metrics buffer full: {len(items)} samples do not fit beside "
                        f"{self.occupancy()} of {self.capacity} unacknowledged"
                    )
                self.inflight += len(items)
            for s, ts, v in items:
                self._produce(self.encode_sample(s, ts, v), s.key, None, 1)
            return
        with self.lock:
            if self.closed:
                raise ProducerClosedError("the metrics collector is closed")
            if len(self.pending) + self.inflight + len(items) > self.capacity:
                raise BufferFullError(
                    f"metrics buffer full: {len(items)} samples do not fit beside "
                    f"{self.occupancy()} of {self.capacity} buffered or unacknowledged"
                )
            if not self.pending:
                self.oldest = time.monotonic()
            self.pending.extend(items)
            drained = self._drain_locked() if len(self.pending) >= self.batch_size else None
        if drained:
            self._send(drained)

    def _append_single(self, s: SeriesRef, ts: int, v: float) -> bool:
        deadline = 0.0
        while True:
            with self.lock:
                if self.closed:
                    raise ProducerClosedError("the metrics collector is closed")
                if self.inflight < self.capacity:
                    self.inflight += 1
                    break
            if self.on_full == "drop":
                self._count_dropped()
                return False
            deadline = self._wait_for_space(deadline)
        self._produce(self.encode_sample(s, ts, v), s.key, None, 1)
        return True

    def _count_dropped(self) -> None:
        with self.lock:
            self.dropped += 1

    def _wait_for_space(self, deadline: float) -> float:
        now = time.monotonic()
        if not deadline:
            deadline = now + self.block_timeout
        if now >= deadline:
            raise BufferFullError(
                f"metrics buffer full ({self.occupancy()} of {self.capacity} samples buffered or "
                f"unacknowledged) for {self.block_timeout:g}s: is the broker reachable and the "
                f"topic {self.topic!r} there? (on_full='drop' drops instead)"
            )
        self.producer.poll(min(0.05, deadline - now))
        return deadline

    def _drain_locked(self) -> list[Item]:
        items = self.pending
        self.pending = []
        self.inflight += len(items)
        return items

    def drain(self) -> list[Item]:
        with self.lock:
            return self._drain_locked() if self.pending else []

    # -- sending --------------------------------------------------------------------------

    def _send(self, items: list[Item]) -> None:
        """Send drained samples (already counted in ``inflight``), one batch per partition."""
        try:
            groups = group_by_partition(items, self.partitions(), self.partition_cache)
        except BaseException:
            self._settle(len(items), ok=False)
            raise
        todo = list(groups.items())
        for n, (p, group) in enumerate(todo):
            try:
                self._send_group(p, group)
            except BaseException:
                self._settle(sum(len(g) for _, g in todo[n + 1 :]), ok=False)
                raise

    def _send_group(self, p: int, group: list[Item]) -> None:
        try:
            data = self.encode_batch(group, self.source)
        except BaseException:
            self._settle(len(group), ok=False)
            raise
        if len(data) > self.max_body and len(group) > 1:
            half = len(group) // 2
            self._send_group(p, group[:half])
            self._send_group(p, group[half:])
            return
        self._produce(data, group[0][0].key, p, len(group))

    def _produce(self, data: bytes, key: str, partition: int | None, n: int) -> None:
        """Hand one message carrying ``n`` samples to librdkafka; on its own queue being
        full (BufferError), serve delivery reports and retry until ``block_timeout``."""
        cb = self._on_delivery_one if n == 1 else functools.partial(self._on_delivery, n)
        deadline = 0.0
        while True:
            try:
                if partition is None:
                    self.producer.produce(self.topic, data, key, on_delivery=cb)
                else:
                    self.producer.produce(self.topic, data, key, partition, on_delivery=cb)
                return
            except BufferError:
                now = time.monotonic()
                if not deadline:
                    deadline = now + max(self.block_timeout, 1.0)
                elif now >= deadline:
                    self._settle(n, ok=False, err="librdkafka queue full")
                    raise BufferFullError(
                        "librdkafka's queue stayed full; raise queue.buffering.max.messages"
                    ) from None
                self.producer.poll(0.05)
            except KafkaException as e:
                self._settle(n, ok=False, err=e)
                raise

    def _on_delivery(self, n: int, err: Any, _msg: Any) -> None:
        if err is None:
            with self.lock:
                self.inflight -= n
                self.delivered += n
                self.messages += 1
        else:
            self._settle(n, ok=False, err=err)

    def _settle(self, n: int, ok: bool, err: Any = None) -> None:
        if n <= 0:
            return
        with self.lock:
            self.inflight -= n
            if ok:
                self.delivered += n
                self.messages += 1
                return
            self.failed += n
        now = time.monotonic()
        if now - self._last_error_log >= 5.0:  # at most one line per 5 s
            self._last_error_log = now
            log.error(
                "metric samples not delivered",
                topic=self.topic,
                samples=n,
                error=str(err),
                failed_total=self.failed,
            )

    def partitions(self) -> int:
        """Partition count of the topic: fixed, or from metadata (cached, refreshed)."""
        if self.fixed_partitions:
            return self.fixed_partitions
        now = time.monotonic()
        if self.num_partitions and now < self.partitions_expiry:
            return self.num_partitions
        n = self._fetch_partitions()
        if n is None:
            ttl = _METADATA_RETRY_S
            if not self.num_partitions:
                n = self.fallback_partitions
                log.warning(
                    "topic metadata unavailable; using the configured partition count",
                    topic=self.topic,
                    partitions=n,
                )
            else:
                n = self.num_partitions
        else:
            ttl = _METADATA_TTL_S
        if n != self.num_partitions:
            if self.num_partitions:
                log.warning(
                    "partition count changed", topic=self.topic, before=self.num_partitions, after=n
                )
            self.partition_cache.clear()
            self.num_partitions = n
        elif len(self.partition_cache) > _PARTITION_CACHE_MAX:
            self.partition_cache.clear()
        self.partitions_expiry = now + ttl
        return n

    def _fetch_partitions(self) -> int | None:
        try:
            md = self.producer.list_topics(self.topic, timeout=self.metadata_timeout)
        except KafkaException:
            return None
        t = md.topics.get(self.topic)
        if t is None or t.error is not None or not t.partitions:
            return None
        return len(t.partitions)

    # -- background and shutdown -----------------------------------------------------------

    def _sender_loop(self) -> None:
        tick = min(max(self.linger_s / 2, 0.005), 0.1)
        while not self.stopping.is_set():
            try:
                self.producer.poll(tick)
                if self.pending and time.monotonic() - self.oldest >= self.linger_s:
                    items = self.drain()
                    if items:
                        self._send(items)
            except Exception as e:  # keep sending; the error was counted and logged
                log.error("metrics sender error", error=repr(e))
                time.sleep(tick)

    def flush(self, timeout: float) -> int:
        """Send everything buffered and wait up to ``timeout`` s; samples of those buffered
        at the call still unacknowledged (samples recorded meanwhile are not waited for).

        The sender thread may hold a batch it drained and has not handed to librdkafka
        yet (counted in ``inflight``): librdkafka's own flush returns at once then, so
        this waits on the counts themselves."""
        if math.isnan(timeout):
            raise ValueError("flush timeout is NaN")
        with self.lock:
            settled = self.delivered + self.failed
            target = settled + len(self.pending) + self.inflight
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            items = self.drain()
            if items:
                self._send(items)
            self.producer.flush(max(0.0, min(deadline - time.monotonic(), 1.0)))
            with self.lock:
                left = max(0, target - self.delivered - self.failed)
            if not left or time.monotonic() >= deadline:
                return left
            self.producer.poll(0.01)

    def close(self, timeout: float) -> int:
        if self.closed:
            return self.occupancy()
        try:
            left = self.flush(timeout)
        finally:
            with self.lock:
                self.closed = True
            self.stopping.set()
            if threading.current_thread() is not self.sender:
                self.sender.join(1.0)
        if left:
            log.warning(
                "metrics collector closed with samples undelivered", topic=self.topic, samples=left
            )
        return left


class _ProducerMetrics:
    """prometheus_client collector reading the core's counts at scrape time, so the
    delivery path only bumps plain ints under the lock it already holds."""

    def __init__(self, core: Sender) -> None:
        self._core = core

    def collect(self) -> Iterator[Metric]:
        c = self._core
        with c.lock:
            counts = (c.delivered, c.failed, c.dropped, c.messages, len(c.pending) + c.inflight)
        samples = CounterMetricFamily(
            "monitoring_producer_samples",
            "Metric samples by outcome: delivered, failed (after librdkafka's retries), "
            "dropped (buffer full, on_full='drop').",
            labels=["outcome"],
        )
        for outcome, v in zip(("delivered", "failed", "dropped"), counts, strict=False):
            samples.add_metric([outcome], v)
        yield samples
        yield CounterMetricFamily(
            "monitoring_producer_messages", "Kafka messages acknowledged.", value=counts[3]
        )
        yield GaugeMetricFamily(
            "monitoring_producer_buffered_samples",
            "Samples buffered or awaiting acknowledgement.",
            value=counts[4],
        )
