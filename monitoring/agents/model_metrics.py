"""Model metrics agent: predictions + labels -> model_* samples on the samples topic.

The pure parts around ``monitoring.mlops.monitor.ModelMonitor``, one per partition, run
by ``monitoring.runtime``: the agent reads ``models.predictions`` and ``models.labels``
(both keyed by prediction id, same partition count; Faust's assignor gives partition p
of both topics to the same worker, since every worker subscribes to both), decodes and
validates each event (bad ones to the dead-letter topic with the reason), and publishes
the monitor's samples
as ``MetricSample`` records keyed by series key, so each series stays on one samples
partition and the aggregation agent windows them like any other series (then the
anomaly agent and alert rules see them).

State (pending joins, River metrics and detectors, counters, the applied offset of each
topic) is checkpointed to the compacted ``models.state`` topic. Replayed messages
already in the restored state are skipped, and the runtime checkpoints before it gives
partitions up in a rebalance and when the worker stops (SIGTERM), so scaling out and
restarts emit nothing twice.

A worker that dies (SIGKILL) replays the messages since its last checkpoint and
publishes their samples again; without Kafka transactions that cannot be avoided, so
the counts are made so that a repeat changes nothing. Tagging each per-event sample
with its source (partition, offset) would not do: the aggregation agent counts every
record of the samples topic in its window, a byte-identical repeat included (only the
``samples`` table collapses a repeated ``(series, ts)``), so the counts are cumulative
``COUNTER`` series instead (``mlops.counters``), published once per window of the
smallest aggregation size, with values that depend only on each topic's own order:
a replay rewrites the same value at the same timestamp, the windows' ``last`` and
``max`` do not move, and ``increase()`` gives exact counts end to end (tested with a
SIGKILL mid-stream against the counts of the produced events). The per-event samples
that remain (latency for its percentiles, drift, the rolling River estimates) are
published again after a SIGKILL: their window counts are not counts of anything. When
one of a partition's topics has been quiet for half ``aggregation.idle_timeout`` on the
wall clock (so that they reach the samples topic before an idle samples partition closes
its windows), the counts waiting for it are published at once, then the agent
checkpoints.

Poison input (not Avro, a schema this worker does not know, such as a newer version, an
empty or null value, a record of another type, an invalid event, or an error while
applying it) goes to the dead-letter topic with the reason in headers; the stream goes on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitoring.config import Settings, ms
from monitoring.log import get_logger
from monitoring.metrics.budget import SeriesBudget
from monitoring.metrics.samples import InvalidSample, Limits, Sample, check_point
from monitoring.mlops.events import (
    LABEL,
    PREDICTION,
    InvalidModelEvent,
    Label,
    Prediction,
    label_from_record,
    prediction_from_record,
)
from monitoring.mlops.monitor import (
    LABELS_SOURCE,
    PREDICTIONS_SOURCE,
    ModelMonitor,
    MonitorConfig,
    Records,
)
from monitoring.runtime import topics
from monitoring.runtime.agent import Emit, Record, StreamAgent
from monitoring.wire.codec import AvroCodec, DecodeError
from monitoring.wire.sample_encoding import SampleEncoder, SeriesRef, make_series

log = get_logger("model_metrics")
_SERIES_CACHE_MAX = 100_000


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "model_metrics_messages", "Events processed", ["topic"], registry=registry
        )
        self.samples = Counter(
            "model_metrics_samples", "Samples published to the samples topic", registry=registry
        )
        self.pending = Gauge(
            "model_metrics_pending", "Predictions and labels waiting for their partner",
            registry=registry,
        )  # fmt: skip
        self.join = Gauge(
            "model_metrics_join_events",
            "Totals of the assigned partitions: joined, expired, evicted, unlabelled_"
            "predictions, unmatched_labels, duplicate_*, incomparable, drifts",
            ["kind"],
            registry=registry,
        )


class ModelMetricsAgent(StreamAgent[ModelMonitor]):
    """Predictions and labels to model_* samples, per partition (module docstring)."""

    name = "model_metrics"

    def __init__(
        self, settings: Settings, registry: CollectorRegistry, codec: AvroCodec | None = None
    ) -> None:
        m = settings.model_metrics
        self.config = MonitorConfig(
            join_horizon_ms=ms(m.join_horizon),
            max_pending=m.max_pending,
            rolling_window=m.rolling_window,
            drift_detector=m.drift_detector,
            drift_interval_ms=ms(m.drift_interval),
            counter_window_ms=min(settings.aggregation.windows_ms),
            max_series=m.max_series,
        )
        # model_metrics.max_series_per_worker: every partition this worker holds
        self.budget = SeriesBudget(m.max_series_per_worker)
        # half the aggregation agent's: the counts closed here reach the samples topic
        # before an idle samples partition closes its windows (they would be late then)
        self.idle_timeout_s = settings.aggregation.idle_timeout.total_seconds() / 2
        self.checkpoint_interval_s = m.checkpoint_interval.total_seconds()
        self.codec = codec or AvroCodec.from_directory()
        self.encoder = SampleEncoder(self.codec, source="model_metrics")
        self.metrics = _Metrics(registry)
        # as samples: an event may be ahead of its Kafka record's timestamp by the small
        # skew only (deterministic on replay); one from the future would move its topic's
        # open window and the join's clock ahead, holding the counts back (issue 13)
        self.limits = Limits(
            max_future_skew_ms=ms(settings.aggregation.max_record_skew),
            reference="its record's timestamp",
        )
        k = settings.kafka
        self.predictions_topic = topics.topic_name(k, topics.PREDICTIONS)
        self.labels_topic = topics.topic_name(k, topics.MODEL_LABELS)
        # co-partitioned: partition p of both feeds the monitor of partition p
        self.sources = (self.predictions_topic, self.labels_topic)
        self.state_topic = topics.topic_name(k, topics.MODEL_STATE)
        self.samples_topic = topics.topic_name(k, topics.SAMPLES)
        self._index = {self.predictions_topic: 0, self.labels_topic: 1}  # the monitor's
        self._series: dict[str, SeriesRef] = {}
        self._by_topic = {
            self.predictions_topic: self.metrics.messages.labels("predictions"),
            self.labels_topic: self.metrics.messages.labels("labels"),
        }

    def health(self, states: Mapping[int, ModelMonitor]) -> dict[str, Any]:
        """Predictions and labels waiting for their partner; label sets with state."""
        return {
            "pending_joins": sum(s.pending for s in states.values()),
            "series": sum(s.series_count for s in states.values()),
            "series_limit_per_worker": self.budget.limit,
            "series_refused_by_worker_limit": self.budget.refused,
        }

    # -- the stream ---------------------------------------------------------------
    def handle(self, msg: Record, state: ModelMonitor, out: Emit) -> int:
        """Apply one prediction or label; the number of samples it published."""
        self._by_topic[msg.topic].inc()
        ev = self._decode(msg, out)
        if ev is None:
            return 0
        if isinstance(ev, Prediction):
            if not state.admits(ev):
                out.dead_letter(
                    "cardinality",
                    f"model {ev.model[:100]!r}: a new label set over model_metrics.max_series "
                    f"({self.config.max_series} a partition) or max_series_per_worker "
                    f"({self.budget.limit})",
                )
                return 0
            samples = state.apply_prediction(msg.offset, ev)
        else:
            samples = state.apply_label(msg.offset, ev)
        if samples is None:
            out.skip_replayed()
            return 0
        self._publish(out, samples)
        return len(samples)

    def _publish(self, out: Emit, samples: list[Sample]) -> None:
        if samples:
            records = [(s.series.encode(), self._encode(s)) for s in samples]
            out.send_many(self.samples_topic, records)
            self.metrics.samples.inc(len(samples))

    def _decode(self, msg: Record, out: Emit) -> Prediction | Label | None:
        want = PREDICTION if msg.topic == self.predictions_topic else LABEL
        try:
            decoded = self.codec.decode(msg.value)
            if decoded.name != want:
                raise InvalidModelEvent("unexpected-record", f"{decoded.name} on {msg.topic}")
            ev: Prediction | Label = (
                prediction_from_record(decoded.record)
                if want == PREDICTION
                else label_from_record(decoded.record)
            )
            produced_ms = int(msg.timestamp * 1000) if msg.timestamp else int(time.time() * 1000)
            check_point(ev.timestamp_ms, 0.0, produced_ms, self.limits)
        except (DecodeError, InvalidModelEvent, InvalidSample) as e:
            out.dead_letter(e.reason, str(e))
            return None
        return ev

    def _encode(self, s: Sample) -> bytes:
        ref = self._series.get(s.series)
        if ref is None:
            if len(self._series) >= _SERIES_CACHE_MAX:
                self._series.clear()
            ref = self._series[s.series] = make_series(s.name, s.labels, s.kind, s.unit)
        return self.encoder.encode(ref, s.timestamp_ms, s.value)

    # -- idleness ------------------------------------------------------------------
    def next_offset(self, state: ModelMonitor, topic: str) -> int:
        """The offset after the last applied event of ``topic`` (restored ones included)."""
        source = PREDICTIONS_SOURCE if topic == self.predictions_topic else LABELS_SOURCE
        return state.offsets[source] + 1

    def wants_idle(self, state: ModelMonitor) -> bool:
        """Counts wait for a window of either topic."""
        return state.waiting_for((0, 1))

    def idle(self, partition: int, state: ModelMonitor, quiet: frozenset[str], out: Emit) -> bool:
        """Publish the counts that wait for the quiet topics, then checkpoint at once (a
        close is the one step a replay may not repeat alike)."""
        which = [self._index[t] for t in quiet]
        if not state.waiting_for(which):
            return False
        self._publish(out, state.close(which))
        return True

    def observe(self, states: Mapping[int, ModelMonitor]) -> None:
        """Pending joins and join totals of the assigned partitions."""
        monitors = list(states.values())
        self.metrics.pending.set(sum(m.pending for m in monitors))
        totals: dict[str, int] = {}
        for m in monitors:
            for kind, n in m.counts.items():
                totals[kind] = totals.get(kind, 0) + n
        for kind, n in totals.items():
            self.metrics.join.labels(kind).set(n)

    # -- state ---------------------------------------------------------------------
    def restore(self, partition: int, table: dict[bytes, bytes]) -> ModelMonitor:
        """The monitor of ``partition`` from its changelog table."""
        monitor = ModelMonitor(dataclasses.replace(self.config, partition=partition), self.budget)
        monitor.restore(table)
        self.budget.join(partition, monitor)  # restored label sets are kept, and count
        log.info("model_metrics_restored", partition=partition, pending=monitor.pending)
        return monitor

    def release(self, partition: int, state: ModelMonitor) -> None:
        """A revoked partition's label sets no longer count against the worker's bound."""
        self.budget.leave(partition, state)

    def snapshot(self, state: ModelMonitor) -> Records | None:
        """The monitor's changed records."""
        return state.checkpoint() if state.has_changes else None
