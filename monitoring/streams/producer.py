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
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, NamedTuple

import fastavro
from confluent_kafka import KafkaException, Producer
from fastavro.schema import to_parsing_canonical_form
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from monitoring.config import Settings
from monitoring.log import get_logger
from monitoring.metrics.samples import (
    BATCH,
    SAMPLE,
    InvalidSample,
    Limits,
    check_series,
    series_key,
)
from monitoring.streams.codec import AvroCodec
from monitoring.streams.topics import SAMPLES, topic_name

KINDS = frozenset({"GAUGE", "COUNTER", "HISTOGRAM_BUCKET", "SUMMARY", "UNTYPED"})
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    math.inf,
)
_LIMITS = Limits()
_SERIES_CACHE_MAX = 100_000
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


# --------------------------------------------------------------------------- partitioning


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (Java ``Utils.murmur2``, librdkafka ``rd_murmur2``), unsigned.

    The same function as ``aiokafka.partitioner.murmur2`` (a unit test checks both
    against Java's test vectors), written here with whole-word int ops so the SDK
    does not import asyncio-based aiokafka (170 ms) for twenty lines.

    >>> murmur2(b"21") - (1 << 32)  # Java: Utils.murmur2("21".getBytes()) == -973932308
    -973932308
    """
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length & ~3
    for i in range(0, n4, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h = ((h ^ data[n4]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_for(key: str | bytes, num_partitions: int) -> int:
    """Partition of a keyed record, as Kafka's default partitioner and librdkafka's
    ``murmur2_random`` place it: ``toPositive(murmur2(key)) % num_partitions``.

    >>> partition_for(b"abc", 1000)  # kafka-python's Java-compatibility vector
    107
    """
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % num_partitions


class SeriesRef(NamedTuple):
    """One series as the SDK sends it: key plus the descriptor fields of the contract."""

    key: str
    name: str
    labels: Mapping[str, str]
    kind: str = "GAUGE"
    unit: str = ""
    descriptor: bytes = b""  # Avro bytes of name, labels, kind, unit as MetricSample has them


Item = tuple[SeriesRef, int, float]
"""A buffered sample: (series, timestamp_ms, value)."""


def group_by_partition(
    items: Iterable[Item], num_partitions: int, cache: dict[str, int] | None = None
) -> dict[int, list[Item]]:
    """Split samples by the partition their series key hashes to (order kept per group)."""
    if cache is None:
        cache = {}
    groups: dict[int, list[Item]] = {}
    for item in items:
        key = item[0].key
        p = cache.get(key)
        if p is None:
            p = cache[key] = partition_for(key, num_partitions)
        g = groups.get(p)
        if g is None:
            groups[p] = [item]
        else:
            g.append(item)
    return groups


def batch_record(items: Sequence[Item], source: str = "") -> dict[str, Any]:
    """The ``MetricBatch`` record (parallel arrays) for samples of one partition."""
    keys: list[str] = []
    kinds: list[str] = []
    units: list[str] = []
    index_of: dict[str, int] = {}
    series_index: list[int] = []
    stamps: list[int] = []
    values: list[float] = []
    for s, ts, v in items:
        i = index_of.get(s.key)
        if i is None:
            i = index_of[s.key] = len(keys)
            keys.append(s.key)
            kinds.append(s.kind)
            units.append(s.unit)
        series_index.append(i)
        stamps.append(ts)
        values.append(v)
    return {
        "source": source,
        "series": keys,
        "kinds": kinds,
        "units": units,
        "series_index": series_index,
        "timestamps_ms": stamps,
        "values": values,
    }


def sample_record(
    s: SeriesRef, timestamp_ms: int, value: float, source: str = ""
) -> dict[str, Any]:
    """The ``MetricSample`` record of one sample."""
    return {
        "name": s.name,
        "value": value,
        "timestamp_ms": timestamp_ms,
        "labels": s.labels,
        "kind": s.kind,
        "unit": s.unit,
        "source": source,
    }


@functools.lru_cache(maxsize=1)
def _codec() -> AvroCodec:
    return AvroCodec.from_directory()


_KIND_SYMBOLS = ("GAUGE", "COUNTER", "HISTOGRAM_BUCKET", "SUMMARY", "UNTYPED")
_KIND_INDEX = {k: i for i, k in enumerate(_KIND_SYMBOLS)}


_FAST_SAMPLE_LAYOUT = {
    "type": "record", "name": "MetricSample", "namespace": "monitoring",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "value", "type": "double"},
        {"name": "timestamp_ms", "type": "long"},
        {"name": "labels", "type": {"type": "map", "values": "string"}},
        {"name": "kind", "type": {"type": "enum", "name": "MetricKind",
                                  "symbols": list(_KIND_SYMBOLS)}},
        {"name": "unit", "type": "string"},
        {"name": "source", "type": "string"},
    ],
}  # fmt: skip
_DOUBLE = struct.Struct("<d")


def _same_layout(layout: dict[str, Any], parsed: Any) -> bool:
    return bool(
        to_parsing_canonical_form(fastavro.parse_schema(layout))
        == to_parsing_canonical_form(parsed)
    )


def _long(n: int) -> bytes:
    """Avro ``long``: zig-zag, then base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    if n >> 35 and not n >> 42:  # every ms timestamp from 1971 to 2109: six bytes
        return bytes(
            (n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80,
             n >> 21 & 0x7F | 0x80, n >> 28 & 0x7F | 0x80, n >> 35)
        )  # fmt: skip
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(s: str) -> bytes:
    b = s.encode()
    return _long(len(b)) + b


def encode_descriptor(name: str, labels: Mapping[str, str], kind: str, unit: str) -> bytes:
    """Avro bytes of a series' name, labels map, kind enum and unit (MetricSample's
    fields, in its order, with the value and timestamp cut out)."""
    parts = [_string(name)]
    if labels:
        parts.append(_long(len(labels)))
        for k, v in labels.items():
            parts.append(_string(k))
            parts.append(_string(v))
    parts.append(b"\x00")
    parts.append(_long(_KIND_INDEX[kind]))
    parts.append(_string(unit))
    return b"".join(parts)


class BatchEncoder:
    """Single-object encoding of ``MetricBatch`` (fastavro; series go as key strings)."""

    def __init__(self, codec: AvroCodec) -> None:
        self._encode = functools.partial(codec.encode, BATCH)

    def encode(self, items: Sequence[Item], source: str = "") -> bytes:
        return self._encode(batch_record(items, source))


def make_series(
    name: str,
    labels: Mapping[str, Any] | None,
    kind: str = "GAUGE",
    unit: str = "",
    limits: Limits = _LIMITS,
) -> SeriesRef:
    """Validate a series (name, labels, kind) and build its ``SeriesRef``.

    Raises ``InvalidSample`` for a name or labels the contract rejects.
    """
    lab = {str(k): str(v) for k, v in labels.items()} if labels else {}
    check_series(name, lab, limits)
    if kind not in KINDS:
        raise InvalidSample("bad-kind", f"kind {kind!r} is not one of {sorted(KINDS)}")
    return SeriesRef(
        series_key(name, lab), name, lab, kind, unit, encode_descriptor(name, lab, kind, unit)
    )


class SampleEncoder:
    """Single-object encoding of ``MetricSample``: the series' bytes are cached, so a
    sample costs a double and a varint (byte-for-byte fastavro's output, tested)."""

    def __init__(self, codec: AvroCodec, source: str = "") -> None:
        sv = codec.latest(SAMPLE)
        self.header = sv.header
        self.source = source
        self._slow = functools.partial(codec.encode, SAMPLE)
        self._source = _string(source)
        self.fast = _same_layout(_FAST_SAMPLE_LAYOUT, sv.parsed)
        self._parts: dict[bytes, tuple[bytes, bytes]] = {}

    def encode(self, s: SeriesRef, timestamp_ms: int, value: float) -> bytes:
        if not (self.fast and s.descriptor):
            return self._slow(sample_record(s, timestamp_ms, value, self.source))
        parts = self._parts.get(s.descriptor)
        if parts is None:
            n = len(_string(s.name))  # the descriptor starts with the name, as the sample does
            if len(self._parts) >= _SERIES_CACHE_MAX:
                self._parts.clear()
            parts = self._parts[s.descriptor] = (
                self.header + s.descriptor[:n],
                s.descriptor[n:] + self._source,
            )
        return b"".join((parts[0], _DOUBLE.pack(value), _long(timestamp_ms), parts[1]))


# --------------------------------------------------------------------------- send path


class _Core:
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
        """Send everything buffered and wait up to ``timeout`` s; samples still unacknowledged."""
        items = self.drain()
        if items:
            self._send(items)
        self.producer.flush(timeout)
        with self.lock:
            return len(self.pending) + self.inflight

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

    def __init__(self, core: _Core) -> None:
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


# --------------------------------------------------------------------------- instruments


def _labels_key(labels: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


class _Family:
    """A metric family: children by label set, like prometheus_client's labelled metrics."""

    kind = "GAUGE"

    def __init__(
        self, owner: _Instruments, name: str, labels: Mapping[str, Any] | None, unit: str
    ) -> None:
        self._owner = owner
        self.name = name
        self.unit = unit
        self.const_labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self._children: dict[tuple[tuple[str, str], ...], Any] = {}
        self._lock = threading.Lock()
        make_series(name, self.const_labels, self.kind, unit)  # validate early

    def labels(self, **labels: Any) -> Any:
        """The child for these labels (merged over the family's constant labels)."""
        return self._child(labels)

    def _child(self, labels: Mapping[str, Any] | None) -> Any:
        key = _labels_key(labels) if labels else ()
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = self._new_child(
                        {**self.const_labels, **dict(key)}
                    )
        return child

    def _new_child(self, labels: dict[str, str]) -> Any:
        raise NotImplementedError

    def samples(self) -> list[tuple[SeriesRef, float]]:
        out: list[tuple[SeriesRef, float]] = []
        for child in list(self._children.values()):
            out.extend(child.samples())
        return out


class _ValueChild:
    __slots__ = ("_lock", "_owner", "series", "value")

    def __init__(self, owner: _Instruments, series: SeriesRef) -> None:
        self._owner = owner
        self.series = series
        self.value = 0.0
        self._lock = threading.Lock()

    def samples(self) -> list[tuple[SeriesRef, float]]:
        return [(self.series, self.value)]


class CounterChild(_ValueChild):
    """One counter series: monotonically increasing."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        if amount < 0:
            raise ValueError(f"counter {self.series.key} can only increase, got inc({amount})")
        with self._lock:
            self.value += amount
        self._owner.dirty = True


class GaugeChild(_ValueChild):
    """One gauge series: a value that goes up and down."""

    __slots__ = ()

    def set(self, value: float) -> None:
        self.value = float(value)
        self._owner.dirty = True

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount
        self._owner.dirty = True

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)


class HistogramChild:
    """One histogram: cumulative ``_bucket{le}`` counts, ``_sum`` and ``_count``."""

    __slots__ = (
        "_bucket_series",
        "_count",
        "_count_series",
        "_counts",
        "_lock",
        "_owner",
        "_sum",
        "_sum_series",
        "_upper",
    )

    def __init__(
        self,
        owner: _Instruments,
        name: str,
        labels: dict[str, str],
        buckets: Sequence[float],
        unit: str,
    ) -> None:
        self._owner = owner
        self._upper = list(buckets)
        self._counts = [0] * len(self._upper)
        self._sum = 0.0
        self._count = 0
        self._lock = threading.Lock()
        self._bucket_series = [
            make_series(
                f"{name}_bucket", {**labels, "le": floatToGoString(b)}, "HISTOGRAM_BUCKET", unit
            )
            for b in self._upper
        ]
        self._sum_series = make_series(f"{name}_sum", labels, "COUNTER", unit)
        self._count_series = make_series(f"{name}_count", labels, "COUNTER", "")

    def observe(self, value: float) -> None:
        """Count one observation in the first bucket whose upper bound is >= value."""
        i = bisect.bisect_left(self._upper, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value
            self._count += 1
        self._owner.dirty = True

    def samples(self) -> list[tuple[SeriesRef, float]]:
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        out: list[tuple[SeriesRef, float]] = []
        acc = 0
        for s, c in zip(self._bucket_series, counts, strict=True):
            acc += c
            out.append((s, float(acc)))
        out.append((self._sum_series, total))
        out.append((self._count_series, float(n)))
        return out


class Counter(_Family):
    """A counter family; ``counter.inc()`` or ``counter.labels(route="/").inc()``."""

    kind = "COUNTER"

    def _new_child(self, labels: dict[str, str]) -> CounterChild:
        return CounterChild(self._owner, make_series(self.name, labels, self.kind, self.unit))

    def inc(
        self, amount: float = 1.0, labels: Mapping[str, Any] | None = None, **label_kw: Any
    ) -> None:
        """Add ``amount`` to the series of ``labels`` (a mapping or keywords)."""
        self._child({**(labels or {}), **label_kw}).inc(amount)


class Gauge(_Family):
    """A gauge family; ``.set(v)``, ``.inc()``, ``.dec()``, or through ``.labels(...)``."""

    kind = "GAUGE"

    def _new_child(self, labels: dict[str, str]) -> GaugeChild:
        return GaugeChild(self._owner, make_series(self.name, labels, self.kind, self.unit))

    def set(self, value: float, labels: Mapping[str, Any] | None = None, **label_kw: Any) -> None:
        self._child({**(labels or {}), **label_kw}).set(value)

    def inc(
        self, amount: float = 1.0, labels: Mapping[str, Any] | None = None, **label_kw: Any
    ) -> None:
        self._child({**(labels or {}), **label_kw}).inc(amount)

    def dec(
        self, amount: float = 1.0, labels: Mapping[str, Any] | None = None, **label_kw: Any
    ) -> None:
        self._child({**(labels or {}), **label_kw}).dec(amount)


class Histogram(_Family):
    """A histogram family emitting Prometheus ``_bucket{le}``, ``_sum``, ``_count``."""

    kind = "HISTOGRAM_BUCKET"

    def __init__(
        self,
        owner: _Instruments,
        name: str,
        labels: Mapping[str, Any] | None,
        unit: str,
        buckets: Sequence[float],
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"histogram {name}: buckets must be distinct and non-empty")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.buckets = tuple(bounds)
        super().__init__(owner, name, labels, unit)

    def _new_child(self, labels: dict[str, str]) -> HistogramChild:
        if "le" in labels:
            raise InvalidSample("bad-label-name", f"histogram {self.name} cannot have a label 'le'")
        return HistogramChild(self._owner, self.name, labels, self.buckets, self.unit)

    def observe(
        self, value: float, labels: Mapping[str, Any] | None = None, **label_kw: Any
    ) -> None:
        self._child({**(labels or {}), **label_kw}).observe(value)


class _Instruments:
    """The registered families; ``dirty`` is set by any update since the last collect."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}
        self.lock = threading.Lock()
        self.dirty = False

    def get_or_create(self, cls: type[_Family], name: str, factory: Callable[[], _Family]) -> Any:
        with self.lock:
            fam = self.families.get(name)
            if fam is None:
                fam = self.families[name] = factory()
            elif type(fam) is not cls:
                raise ValueError(f"metric {name} is already a {type(fam).__name__.lower()}")
            return fam

    def snapshot(self, reset: bool = False) -> list[tuple[SeriesRef, float]]:
        with self.lock:
            fams = list(self.families.values())
        if reset:
            self.dirty = False
        out: list[tuple[SeriesRef, float]] = []
        for f in fams:
            out.extend(f.samples())
        return out


# --------------------------------------------------------------------------- facade


class SeriesHandle:
    """A pre-validated series: ``handle.record(value)`` skips key computation."""

    __slots__ = ("_append", "series")

    def __init__(self, series: SeriesRef, append: Callable[[SeriesRef, int, float], bool]) -> None:
        self.series = series
        self._append = append

    def record(self, value: float, timestamp_ms: int | None = None) -> bool:
        v = float(value)
        if not math.isfinite(v):
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
        limits: Limits = _LIMITS,
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
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers or kafka.bootstrap_servers,
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
        }
        conf.update(producer_config or {})
        self._core = _Core(
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
        self._instruments = _Instruments()
        self._known: dict[Any, SeriesRef] = {}
        self._collect_stop: threading.Event | None = None
        self._collect_thread: threading.Thread | None = None
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
        if not math.isfinite(v):
            raise InvalidSample("non-finite-value", f"{s.key} value {value!r}")
        return self._append(
            s, time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms, v
        )

    def _new_series(
        self, ck: Any, name: str, labels: Mapping[str, Any] | None, kind: str, unit: str
    ) -> SeriesRef:
        s = make_series(name, labels, kind, unit, self.limits)
        if ck is not None:
            if len(self._known) >= _SERIES_CACHE_MAX:
                self._known.clear()
            self._known[ck] = s
        return s

    def snapshot(self) -> list[tuple[SeriesRef, float]]:
        """Current value of every instrument series, without sending anything."""
        return self._instruments.snapshot()

    def collect(self, timestamp_ms: int | None = None) -> int:
        """Snapshot every counter, gauge and histogram at one timestamp into the buffer.

        Returns the number of samples buffered.
        """
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        return _collect(self._core, self._instruments, ts)

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


def _collect(core: _Core, instruments: _Instruments, ts: int) -> int:
    n = 0
    for s, v in instruments.snapshot(reset=True):
        if core.append(s, ts, v):
            n += 1
    return n


def _finalize(core: _Core, instruments: _Instruments, timeout: float) -> int:
    """Last snapshot (if anything changed) and flush; run by close(), GC or atexit."""
    if core.closed:
        return 0
    try:
        if instruments.dirty:
            _collect(core, instruments, time.time_ns() // 1_000_000)
    finally:
        left = core.close(timeout)
    return left
