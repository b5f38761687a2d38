"""Aggregation agent: samples topic -> event-time windows -> aggregates topic.

Thin wiring around ``monitoring.metrics.aggregator.PartitionAggregator``: the samples
topic is delivered in bulk (``streams.bulk``: Faust's consumer, group and commits, but
one handler call per fetched run instead of Faust's per-event stream). In the run's
order (each partition's messages in offset order), each message is decoded (bad ones
to the dead-letter topic with the reason in headers; so are samples whose event time
is more than ``aggregation.max_record_skew`` ahead of their Kafka record's timestamp,
which would otherwise move the partition's watermark into the future), its samples fed
to its partition's aggregator, and closed windows and late samples published. A timer
closes windows of idle partitions and checkpoints: outputs are flushed, the changed
state goes to the compacted ``aggregation.state`` topic (same partition), and only
then are the source messages acked, so Faust commits offsets no further than the changelog.
Outputs go through ``streams.outputs.Outputs`` (librdkafka), not Faust's producer:
a series scraped every 10 s closes a 10 s window with every sample.
Faust's windowed tables and ``on_window_close`` are not used (see ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaException, TopicPartition
from faust.types import TP, Message
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.config import Settings, ms
from monitoring.log import get_logger
from monitoring.metrics.aggregator import CHECKPOINT_KEY, Aggregate, PartitionAggregator
from monitoring.metrics.checkpoint import pack_meta, pack_series, restore_record, unpack_meta
from monitoring.metrics.samples import (
    BATCH,
    BatchResult,
    ColumnsResult,
    InvalidSample,
    Limits,
    Sample,
    SampleBatch,
    SampleDecoder,
)
from monitoring.streams import topics
from monitoring.streams.aggregate_encoding import CLOSED_THROUGH, AggregateEncoder
from monitoring.streams.bulk import BulkApp
from monitoring.streams.codec import AvroCodec, DecodeError
from monitoring.streams.metric_batch import MetricBatchDecoder
from monitoring.streams.metric_sample import MetricSampleDecoder
from monitoring.streams.outputs import Headers, Outputs
from monitoring.streams.partition_state import PartitionStates, Records, Slot
from monitoring.streams.sample_encoding import sample_record

log = get_logger("aggregation")
SAMPLE = "monitoring.MetricSample"
_CHECKPOINT_KEY = CHECKPOINT_KEY.encode()


class Decoded(NamedTuple):
    """One samples message: its valid samples; ``error`` if it is rejected whole, else
    the rejected samples of a batch by index (each with its reason)."""

    samples: SampleBatch | list[Sample]
    error: InvalidSample | DecodeError | None = None
    rejected: list[tuple[int, InvalidSample]] = []


class SampleMessages:
    """Decodes and checks the messages of the samples topic. Pure: no I/O, no clock.

    A sample's event time may be at most ``max_record_skew_ms`` ahead of the timestamp
    of the Kafka record that carried it (when it was produced, as the broker keeps
    it). A sample stamped in the future would raise its partition's watermark: every
    on-time sample after it would be late until the clock caught up, and its window
    would close (and be marked complete for the alert evaluator) ahead of time. The
    record's timestamp rather than the wall clock decides, so a replay gets the same
    verdicts. In a ``MetricBatch`` only the offending samples are rejected.
    """

    def __init__(self, codec: AvroCodec, max_record_skew_ms: int) -> None:
        limits = Limits(max_future_skew_ms=max_record_skew_ms, reference="its record's timestamp")
        self.codec = codec
        self.decoder = SampleDecoder(limits)
        self.sample_decoder = MetricSampleDecoder(codec, limits)
        self.batch_decoder = MetricBatchDecoder(codec)

    def decode(self, value: Any, record_ms: int) -> Decoded:
        """Columns for a ``MetricBatch`` of the current version, ``Sample`` values
        otherwise (a ``MetricSample``, older versions)."""
        result: ColumnsResult | BatchResult
        try:
            if self.sample_decoder.accepts(value):
                return Decoded([self.sample_decoder.decode(value, record_ms)])
            if self.batch_decoder.accepts(value):
                columns = self.batch_decoder.decode(value)._asdict()
                result = self.decoder.columns(BATCH, columns, record_ms)
            else:
                decoded = self.codec.decode(value)
                result = self.decoder.samples(decoded.name, decoded.record, record_ms)
        except (DecodeError, InvalidSample) as e:
            return Decoded([], e)
        samples = result.batch if isinstance(result, ColumnsResult) else result.samples
        return Decoded(samples, None, result.rejected)


def record_ms(msg: Message) -> int:
    """The Kafka timestamp of ``msg`` in ms (the wall clock if the record has none)."""
    ts = msg.timestamp
    return round(ts * 1000) if ts is not None and ts > 0 else int(time.time() * 1000)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "aggregation_messages", "Source messages processed", registry=registry
        )
        self.samples = Counter("aggregation_samples", "Samples aggregated", registry=registry)
        self.dead_letters = Counter(
            "aggregation_dead_letters",
            "Messages sent to the dead-letter topic",
            ["reason"],
            registry=registry,
        )
        self.late = Counter(
            "aggregation_late_samples", "Samples after their window closed", registry=registry
        )
        self.aggregates = Counter(
            "aggregation_aggregates",
            "Windows closed and published",
            ["closed_by"],
            registry=registry,
        )
        self.skipped = Counter(
            "aggregation_replayed_messages",
            "Messages skipped as already in the restored state",
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "aggregation_checkpoint_seconds",
            "Time to flush outputs and write a checkpoint",
            registry=registry,
        )
        self.open_windows = Gauge("aggregation_open_windows", "Open windows", registry=registry)
        self.partitions = Gauge(
            "aggregation_partitions", "Assigned samples partitions", registry=registry
        )


class AggregationAgent:
    """Registers the aggregation agent, its timer and rebalance hooks on ``app``."""

    def __init__(
        self,
        app: BulkApp,
        settings: Settings,
        registry: CollectorRegistry,
        codec: AvroCodec | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.codec = codec or AvroCodec.from_directory()
        self.aggregate_encoder = AggregateEncoder(self.codec)
        self.metrics = _Metrics(registry)
        a = settings.aggregation
        self.messages = SampleMessages(self.codec, ms(a.max_record_skew))
        self._windows_ms = a.windows_ms
        self._lateness_ms = ms(a.allowed_lateness)
        self._idle_s = a.idle_timeout.total_seconds()
        k = settings.kafka
        self.samples_topic = app.topic(topics.topic_name(k, topics.SAMPLES))
        self.aggregates_topic = topics.topic_name(k, topics.AGGREGATES)
        self.late_topic = topics.topic_name(k, topics.LATE)
        self.dead_letter_topic = topics.topic_name(k, topics.DEAD_LETTER)
        self.state_topic = topics.topic_name(k, topics.AGGREGATION_STATE)
        self.outputs = Outputs(k)
        # equal counts: a series' aggregates go to its samples partition's number (the
        # murmur2 placement for the SDK's producers), so one partition's close is one
        # ordered run of records and its last one can say the close is complete
        self._co_partitioned = k.samples_partitions == k.output_partitions
        self._offsets_client: Consumer | None = None
        self._aggregates_by_reason = {
            r: self.metrics.aggregates.labels(r) for r in ("watermark", "idle")
        }
        self.states: PartitionStates[PartitionAggregator] = PartitionStates(
            source_topic=self.samples_topic.get_topic_name(),
            state_topic=self.state_topic,
            bootstrap=k.bootstrap_servers,
            outputs=self.outputs,
            restore=self._restore,
            snapshot=_snapshot,
        )
        self._idle_lock = asyncio.Lock()
        self._broker_back_at = time.monotonic()
        self._broker_down = False
        app.bulk(self.samples_topic, self._run)
        app.timer(min(1.0, self._idle_s / 4))(self._idle_tick)
        app.timer(a.checkpoint_interval.total_seconds())(self._checkpoint_tick)
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]

    def health(self) -> dict[str, Any]:
        """For ``GET /healthz``: ``ok`` unless the broker was last found unreachable."""
        parts = dict(self.states.slots)
        return {
            "status": "unavailable" if self._broker_down else "ok",
            "partitions": sorted(parts),
            "open_windows": sum(x.state.open_windows for x in parts.values()),
            "unacked_messages": sum(len(x.pending) + len(x.unacked) for x in parts.values()),
            "late_samples": sum(x.state.late_count for x in parts.values()),
            "series": sum(x.state.series_count for x in parts.values()),
            "series_refused_samples": sum(x.state.refused_count for x in parts.values()),
        }

    # -- the stream ---------------------------------------------------------------
    async def _run(self, messages: Sequence[Message]) -> None:
        """One fetched run (``streams.bulk``), message by message."""
        self.metrics.samples.inc(await self.states.apply(messages, self._handle))
        self.metrics.messages.inc(len(messages))
        self.outputs.poll()  # delivery callbacks, once per run

    async def _handle(self, msg: Message, part: Slot[PartitionAggregator]) -> int:
        """Apply one message; the number of samples it added."""
        self.states.processed(part, msg)
        samples, refused = part.state.admit(await self._decode(msg))
        if refused:
            detail = f"{len(refused)} new series over the series limits: " + ", ".join(refused[:5])
            await self._dead_letter(msg, "cardinality", detail[:2000])
        result = part.state.process(msg.offset, samples)
        if result.closed:
            await self._publish_close(msg.partition, result.closed, part.state.watermark_ms)
        for late in result.late:
            self.metrics.late.inc()
            await self._publish_late(late.sample, late.window_sizes_ms, late.watermark_ms)
        return len(samples.series_index) if isinstance(samples, SampleBatch) else len(samples)

    async def _decode(self, msg: Message) -> SampleBatch | list[Sample]:
        """The message's valid samples (``SampleMessages``); the rest dead-lettered."""
        d = self.messages.decode(msg.value, record_ms(msg))
        if d.error is not None:
            await self._dead_letter(msg, d.error.reason, str(d.error))
        elif d.rejected:
            first = d.rejected[0][1]
            detail = "; ".join(f"#{i}: {e}" for i, e in d.rejected[:20])
            await self._dead_letter(msg, first.reason, detail, rejected=[i for i, _ in d.rejected])
        return d.samples

    async def _dead_letter(
        self, msg: Message, reason: str, detail: str, rejected: list[int] | None = None
    ) -> None:
        self.metrics.dead_letters.labels(reason).inc()
        await self.outputs.dead_letter(
            self.dead_letter_topic, msg, reason, detail, "aggregation", rejected
        )

    async def _publish_close(self, p: int, closed: list[Aggregate], through_ms: int) -> None:
        """One close step of partition ``p``, in order; co-partitioned, the last record
        carries the ``x-closed-through`` header (the alert evaluator's completion signal)."""
        self._aggregates_by_reason[closed[0].closed_by].inc(len(closed))  # one reason a step
        values = self.aggregate_encoder.encode_all(closed)
        records = list(zip([a.series.encode() for a in closed], values, strict=True))
        if not self._co_partitioned:
            await self.outputs.send_many(self.aggregates_topic, records)
            return
        mark: Headers = [(CLOSED_THROUGH, str(through_ms).encode())]
        await self.outputs.send_many(self.aggregates_topic, records, p, mark)

    async def _publish_late(self, s: Sample, sizes: tuple[int, ...], watermark_ms: int) -> None:
        rec = sample_record(s, s.timestamp_ms, s.value)
        headers: Headers = [
            ("x-window-sizes-ms", ",".join(map(str, sizes)).encode()),
            ("x-watermark-ms", str(watermark_ms).encode()),
        ]
        await self.outputs.send(
            self.late_topic, s.series.encode(), self.codec.encode(SAMPLE, rec), headers=headers
        )

    # -- state: restore on assignment, checkpoint on the timer ----------------------
    def _restore(self, p: int, table: dict[bytes, bytes]) -> PartitionAggregator:
        a = self.settings.aggregation
        agg = PartitionAggregator(
            self._windows_ms,
            self._lateness_ms,
            a.quantile_relative_accuracy,
            max_series=a.max_series,
            max_series_per_metric=a.max_series_per_metric,
        )
        meta_raw = table.pop(_CHECKPOINT_KEY, None)
        agg.restore(
            unpack_meta(meta_raw) if meta_raw else None,
            (restore_record(k.decode(), v) for k, v in table.items()),
        )
        limit = int(time.time() * 1000) + ms(self.settings.aggregation.max_record_skew)
        if agg.max_event_ms > limit:  # a checkpoint from before samples were bounded
            ahead = agg.max_event_ms
            dropped = agg.pull_back(limit)
            log.warning(
                "watermark_in_future", partition=p, max_event_ms=ahead, reset_to_ms=limit,
                windows_dropped=dropped,
            )  # fmt: skip
        log.info(
            "aggregation_restored",
            partition=p,
            series=len(table),
            open_windows=agg.open_windows,
            checkpoint_offset=agg.checkpoint_offset,
        )
        return agg

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        await self.states.on_assigned(assigned)
        self.metrics.partitions.set(len(self.states.slots))

    async def _on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        self.states.on_revoked(revoked)
        self.metrics.partitions.set(len(self.states.slots))

    async def _idle_tick(self) -> None:
        """Close the windows of partitions that have seen no message for idle_timeout.

        Only when the broker answers and the partition has nothing left to read, and
        not before a whole idle timeout after the broker was last found unreachable: an
        outage must not make the samples that producers held back during it late.
        """
        async with self._idle_lock:
            now = time.monotonic()
            idle = [
                (p, part)
                for p, part in self.states.slots.items()
                if now - max(part.last_event_wall, self._broker_back_at) >= self._idle_s
                and part.state.open_windows
            ]
            ends = await asyncio.to_thread(self._end_offsets, [p for p, _ in idle]) if idle else {}
            if ends is None:
                log.warning("idle_check_skipped", reason="broker unreachable")
                self._broker_down = True
                idle = []
            elif self._broker_down:
                # back: producers get a whole idle timeout to deliver what they held
                self._broker_down = False
                self._broker_back_at = time.monotonic()
                idle = []
            for p, part in idle:
                if ends is not None and ends[p] > part.state.last_offset + 1:
                    continue  # messages are waiting: not idle
                if self.states.slots.get(p) is not part:
                    continue
                async with self.states.lock:
                    closed = part.state.close_idle()
                    log.info("idle_close", partition=p, windows=len(closed))
                    if closed:
                        await self._publish_close(p, closed, part.state.watermark_ms)
            self.metrics.open_windows.set(
                sum(x.state.open_windows for x in self.states.slots.values())
            )

    def _end_offsets(self, partitions: list[int]) -> dict[int, int] | None:
        """High watermarks of samples partitions, or None if the broker does not answer."""
        if self._offsets_client is None:
            self._offsets_client = Consumer(
                {
                    "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                    "group.id": "monitoring-idle-check",  # never subscribes or commits
                    "enable.auto.commit": False,
                }
            )
        topic = self.samples_topic.get_topic_name()
        try:
            self._offsets_client.list_topics(topic, timeout=2.0)  # one probe, not one per partition
            return {
                p: self._offsets_client.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=2.0, cached=False
                )[1]
                for p in partitions
            }
        except KafkaException:
            return None

    async def _checkpoint_tick(self) -> None:
        """Checkpoint every changed partition (see ``streams.partition_state``)."""
        started = time.monotonic()
        if await self.states.checkpoint(self.app.ack):
            self.metrics.checkpoint_seconds.observe(time.monotonic() - started)


def _snapshot(agg: PartitionAggregator) -> Records | None:
    """Changelog records of the changes since the last checkpoint, the partition record last."""
    if not agg.has_changes:
        return None
    cp = agg.checkpoint()
    records: Records = [(k.encode(), None if v is None else pack_series(v)) for k, v in cp.series]
    records.append((_CHECKPOINT_KEY, pack_meta(cp.meta)))
    return records
