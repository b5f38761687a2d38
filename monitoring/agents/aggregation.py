"""Aggregation agent: samples topic -> event-time windows -> aggregates topic.

The pure parts around ``monitoring.metrics.aggregator.PartitionAggregator``, run by
``monitoring.runtime``: each message of the samples topic is decoded (bad ones to the
dead-letter topic with the reason; so are samples whose event time is more than
``aggregation.max_record_skew`` ahead of their Kafka record's timestamp, which would
otherwise move the partition's watermark into the future, and new series over the
series limits, reason ``cardinality``), its samples fed to its partition's aggregator,
and closed windows and late samples published. An idle partition (nothing read for
``aggregation.idle_timeout``, nothing left to read) closes its open windows. State goes
to the compacted ``aggregation.state`` topic: the changed series, then the partition
record. Faust's windowed tables and ``on_window_close`` are not used (see docs/aggregation.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitoring.config import Settings, ms
from monitoring.log import get_logger
from monitoring.metrics.aggregator import (
    CHECKPOINT_KEY,
    NO_WATERMARK,
    Aggregate,
    PartitionAggregator,
)
from monitoring.metrics.budget import SeriesBudget
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
from monitoring.runtime import topics
from monitoring.runtime.agent import Emit, Record, Records, StreamAgent
from monitoring.runtime.outputs import Headers
from monitoring.wire.aggregate_encoding import CLOSED_THROUGH, AggregateEncoder
from monitoring.wire.codec import AvroCodec, DecodeError
from monitoring.wire.metric_batch import MetricBatchDecoder
from monitoring.wire.metric_sample import MetricSampleDecoder
from monitoring.wire.sample_encoding import sample_record

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


def record_ms(msg: Record) -> int:
    """The Kafka timestamp of ``msg`` in ms (the wall clock if the record has none)."""
    ts = msg.timestamp
    return round(ts * 1000) if ts is not None and ts > 0 else int(time.time() * 1000)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.late = Counter(
            "aggregation_late_samples", "Samples after their window closed", registry=registry
        )
        self.aggregates = Counter(
            "aggregation_aggregates",
            "Windows closed and published",
            ["closed_by"],
            registry=registry,
        )
        self.open_windows = Gauge("aggregation_open_windows", "Open windows", registry=registry)
        self.series = Gauge(
            "aggregation_series", "Series with a place, every partition held", registry=registry
        )


class AggregationAgent(StreamAgent[PartitionAggregator]):
    """Samples to windowed aggregates, per samples partition (see the module docstring)."""

    name = "aggregation"

    def __init__(
        self, settings: Settings, registry: CollectorRegistry, codec: AvroCodec | None = None
    ) -> None:
        self.settings = settings
        self.codec = codec or AvroCodec.from_directory()
        self.aggregate_encoder = AggregateEncoder(self.codec)
        self.metrics = _Metrics(registry)
        a = settings.aggregation
        self.messages = SampleMessages(self.codec, ms(a.max_record_skew))
        # aggregation.max_series_per_worker: every partition this worker holds
        self.budget = SeriesBudget(a.max_series_per_worker)
        self._windows_ms = a.windows_ms
        self._lateness_ms = ms(a.allowed_lateness)
        self._every_ms = min(self._windows_ms)  # refused counts: at most one change a window
        self.idle_timeout_s = a.idle_timeout.total_seconds()
        self.checkpoint_interval_s = a.checkpoint_interval.total_seconds()
        k = settings.kafka
        self.sources = (topics.topic_name(k, topics.SAMPLES),)
        self.state_topic = topics.topic_name(k, topics.AGGREGATION_STATE)
        self.aggregates_topic = topics.topic_name(k, topics.AGGREGATES)
        self.late_topic = topics.topic_name(k, topics.LATE)
        # equal counts: a series' aggregates go to its samples partition's number (the
        # murmur2 placement for the SDK's producers), so one partition's close is one
        # ordered run of records and its last one can say the close is complete
        self._co_partitioned = k.samples_partitions == k.output_partitions
        self._aggregates_by_reason = {
            r: self.metrics.aggregates.labels(r) for r in ("watermark", "idle")
        }

    def health(self, states: Mapping[int, PartitionAggregator]) -> dict[str, Any]:
        """Windows, series and late samples of the assigned partitions."""
        parts = list(states.values())
        return {
            "open_windows": sum(x.open_windows for x in parts),
            "late_samples": sum(x.late_count for x in parts),
            "series": sum(x.series_count for x in parts),
            "series_refused_samples": sum(x.refused_count for x in parts),
            "series_limit_per_worker": self.budget.limit,
            # new series refused by that limit (the rest by the partitions' own)
            "series_refused_by_worker_limit": self.budget.refused,
            # each partition's watermark: every window ending by it is closed
            "closed_through_ms": {
                p: x.watermark_ms
                for p, x in sorted(states.items())
                if x.watermark_ms > NO_WATERMARK
            },
        }

    # -- the stream ---------------------------------------------------------------
    def handle(self, msg: Record, state: PartitionAggregator, out: Emit) -> int:
        """Apply one message; the number of samples it added."""
        if msg.offset <= state.checkpoint_offset:
            out.skip_replayed()
            return 0
        samples, refused = state.admit(self._decode(msg, out))
        if refused:
            detail = f"{len(refused)} new series over the series limits: " + ", ".join(refused[:5])
            out.dead_letter("cardinality", detail[:2000])
        result = state.process(msg.offset, samples)
        # a change of the refused-samples counter, at the record time: a replay publishes
        # the counts of the same messages (cumulative, restored with the partition record)
        now = min(record_ms(msg), int(time.time() * 1000))
        self._publish_refused(out, state.refused_samples(msg.partition, now, self._every_ms))
        if result.closed:
            self._publish_close(out, msg.partition, result.closed, state.watermark_ms)
        for late in result.late:
            self.metrics.late.inc()
            self._publish_late(out, late.sample, late.window_sizes_ms, late.watermark_ms)
        return len(samples.series_index) if isinstance(samples, SampleBatch) else len(samples)

    def _decode(self, msg: Record, out: Emit) -> SampleBatch | list[Sample]:
        """The message's valid samples (``SampleMessages``); the rest dead-lettered."""
        d = self.messages.decode(msg.value, record_ms(msg))
        if d.error is not None:
            out.dead_letter(d.error.reason, str(d.error))
        elif d.rejected:
            first = d.rejected[0][1]
            detail = "; ".join(f"#{i}: {e}" for i, e in d.rejected[:20])
            out.dead_letter(first.reason, detail, [i for i, _ in d.rejected])
        return d.samples

    def _publish_close(self, out: Emit, p: int, closed: list[Aggregate], through_ms: int) -> None:
        """One close step of partition ``p``, in order; co-partitioned, the last record
        carries the ``x-closed-through`` header (the alert evaluator's completion signal)."""
        self._aggregates_by_reason[closed[0].closed_by].inc(len(closed))  # one reason a step
        values = self.aggregate_encoder.encode_all(closed)
        records = list(zip([a.series.encode() for a in closed], values, strict=True))
        if not self._co_partitioned:
            out.send_many(self.aggregates_topic, records)
            return
        mark: Headers = [(CLOSED_THROUGH, str(through_ms).encode())]
        out.send_many(self.aggregates_topic, records, p, mark)

    def _publish_refused(self, out: Emit, samples: list[Sample]) -> None:
        """``monitoring_series_refused_total{partition}`` to the samples topic."""
        for s in samples:
            rec = sample_record(s, s.timestamp_ms, s.value)
            out.send(self.sources[0], s.series.encode(), self.codec.encode(SAMPLE, rec))

    def _publish_late(
        self, out: Emit, s: Sample, sizes: tuple[int, ...], watermark_ms: int
    ) -> None:
        rec = sample_record(s, s.timestamp_ms, s.value)
        headers: Headers = [
            ("x-window-sizes-ms", ",".join(map(str, sizes)).encode()),
            ("x-watermark-ms", str(watermark_ms).encode()),
        ]
        out.send(
            self.late_topic, s.series.encode(), self.codec.encode(SAMPLE, rec), headers=headers
        )

    # -- idleness ------------------------------------------------------------------
    def next_offset(self, state: PartitionAggregator, topic: str) -> int:
        """The offset after the last applied message (restored ones included)."""
        return state.last_offset + 1

    def wants_idle(self, state: PartitionAggregator) -> bool:
        """Open windows wait to be closed."""
        return bool(state.open_windows)

    def idle(
        self, partition: int, state: PartitionAggregator, quiet: frozenset[str], out: Emit
    ) -> bool:
        """Close every open window of an idle partition."""
        closed = state.close_idle()
        log.info("idle_close", partition=partition, windows=len(closed))
        if closed:
            self._publish_close(out, partition, closed, state.watermark_ms)
        at = state.refused_due(self._every_ms)  # refused after the count last published
        if at is not None:  # in its next slot: no message will publish them now
            self._publish_refused(out, state.refused_samples(partition, at, self._every_ms))
        return False

    def observe(self, states: Mapping[int, PartitionAggregator]) -> None:
        """The open windows and series gauges."""
        self.metrics.open_windows.set(sum(x.open_windows for x in states.values()))
        self.metrics.series.set(sum(x.series_count for x in states.values()))

    # -- state ---------------------------------------------------------------------
    def restore(self, partition: int, table: dict[bytes, bytes]) -> PartitionAggregator:
        """The aggregator of ``partition`` from its changelog table."""
        a = self.settings.aggregation
        agg = PartitionAggregator(
            self._windows_ms,
            self._lateness_ms,
            a.quantile_relative_accuracy,
            max_series=a.max_series,
            max_series_per_metric=a.max_series_per_metric,
            budget=self.budget,
        )
        table = dict(table)
        meta_raw = table.pop(_CHECKPOINT_KEY, None)
        agg.restore(
            unpack_meta(meta_raw) if meta_raw else None,
            (restore_record(k.decode(), v) for k, v in table.items()),
        )
        # restored series are kept whatever the worker's room, and count against it
        self.budget.join(partition, agg)
        limit = int(time.time() * 1000) + ms(a.max_record_skew)
        if agg.max_event_ms > limit:  # a checkpoint from before samples were bounded
            ahead = agg.max_event_ms
            dropped = agg.pull_back(limit)
            log.warning(
                "watermark_in_future", partition=partition, max_event_ms=ahead,
                reset_to_ms=limit, windows_dropped=dropped,
            )  # fmt: skip
        log.info(
            "aggregation_restored",
            partition=partition,
            series=len(table),
            open_windows=agg.open_windows,
            checkpoint_offset=agg.checkpoint_offset,
            worker_series=self.budget.used,
        )
        return agg

    def release(self, partition: int, state: PartitionAggregator) -> None:
        """A revoked partition's series no longer count against the worker's bound."""
        self.budget.leave(partition, state)

    def snapshot(self, state: PartitionAggregator) -> Records | None:
        """The series changed since the last checkpoint, the partition record last."""
        if not state.has_changes:
            return None
        cp = state.checkpoint()
        records: Records = [
            (k.encode(), None if v is None else pack_series(v)) for k, v in cp.series
        ]
        records.append((_CHECKPOINT_KEY, pack_meta(cp.meta)))
        return records
