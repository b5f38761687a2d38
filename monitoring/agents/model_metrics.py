"""Model metrics agent: predictions + labels -> model_* samples on the samples topic.

Thin wiring around ``monitoring.mlops.monitor.ModelMonitor``, one per partition: the
agent reads ``models.predictions`` and ``models.labels`` (both keyed by prediction id,
same partition count; Faust's assignor gives partition p of both topics to the same
worker, since every worker subscribes to both), decodes and validates each event (bad
ones to the dead-letter topic with the reason), and publishes the monitor's samples
as ``MetricSample`` records keyed by series key, so each series stays on one samples
partition and the aggregation agent windows them like any other series (then the
anomaly agent and alert rules see them).

State (pending joins, River metrics and detectors, counters, the applied offset of each
topic) is checkpointed to the compacted ``models.state`` topic through
``streams.partition_state``: outputs flushed, then the state, then the source acks.
Replayed messages already in the restored state are skipped, and the agent
checkpoints before it gives partitions up in a rebalance and when the worker stops
(SIGTERM), so scaling out and restarts emit nothing twice.

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
one of a partition's topics has been quiet for ``aggregation.idle_timeout`` on the wall
clock, the counts waiting for it are published at once, then the agent checkpoints.

Poison input (not Avro, a schema this worker does not know, such as a newer version, an
empty or null value, a record of another type, an invalid event, or an error while
applying it) goes to the dead-letter topic with the reason in headers; the stream goes on.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import faust
from faust.types import TP, EventT, StreamT
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitoring.config import Settings, ms
from monitoring.log import get_logger
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
from monitoring.mlops.monitor import ModelMonitor, MonitorConfig, Records
from monitoring.streams import topics
from monitoring.streams.codec import AvroCodec, DecodeError
from monitoring.streams.outputs import Outputs
from monitoring.streams.partition_state import Ack, PartitionStates, Slot
from monitoring.streams.sample_encoding import SampleEncoder, SeriesRef, make_series

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
        self.dead_letters = Counter(
            "model_metrics_dead_letters", "Events sent to the dead-letter topic", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.replayed = Counter(
            "model_metrics_replayed_messages", "Events skipped as already applied",
            registry=registry,
        )  # fmt: skip
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


class ModelMetricsAgent:
    """Registers the model metrics agent, its checkpoint timer and rebalance hooks."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        registry: CollectorRegistry,
        codec: AvroCodec | None = None,
    ) -> None:
        m = settings.model_metrics
        self.config = MonitorConfig(
            join_horizon_ms=ms(m.join_horizon),
            max_pending=m.max_pending,
            rolling_window=m.rolling_window,
            drift_detector=m.drift_detector,
            drift_interval_ms=ms(m.drift_interval),
            counter_window_ms=min(settings.aggregation.windows_ms),
        )
        self._idle_s = settings.aggregation.idle_timeout.total_seconds()
        self.codec = codec or AvroCodec.from_directory()
        self.encoder = SampleEncoder(self.codec, source="model_metrics")
        self.metrics = _Metrics(registry)
        self.limits = Limits(max_future_skew_ms=ms(settings.aggregation.max_future_skew))
        k = settings.kafka
        self.predictions_topic = topics.topic_name(k, topics.PREDICTIONS)
        self.labels_topic = topics.topic_name(k, topics.MODEL_LABELS)
        self.samples_topic = topics.topic_name(k, topics.SAMPLES)
        self.dead_letter_topic = topics.topic_name(k, topics.DEAD_LETTER)
        self.source = app.topic(self.predictions_topic, self.labels_topic)
        self.outputs = Outputs(k)
        self.states: PartitionStates[ModelMonitor] = PartitionStates(
            source_topic=self.predictions_topic,  # co-partitioned with the labels topic
            state_topic=topics.topic_name(k, topics.MODEL_STATE),
            bootstrap=k.bootstrap_servers,
            outputs=self.outputs,
            restore=self._restore,
            snapshot=_snapshot,
        )
        self._series: dict[str, SeriesRef] = {}
        self._last_wall: dict[tuple[int, int], float] = {}  # (partition, topic) -> monotonic
        self._ack: Ack | None = None  # the stream's, once the agent runs
        self._by_topic = {
            self.predictions_topic: self.metrics.messages.labels("predictions"),
            self.labels_topic: self.metrics.messages.labels("labels"),
        }
        app.agent(self.source, name="model_metrics")(self._run)
        app.timer(m.checkpoint_interval.total_seconds())(self._checkpoint_tick)
        app.timer(min(1.0, self._idle_s / 4))(self._idle_tick)
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]

    def health(self) -> dict[str, Any]:
        """For ``GET /healthz``."""
        slots = dict(self.states.slots)
        return {
            "status": "ok",
            "partitions": sorted(slots),
            "pending_joins": sum(s.state.pending for s in slots.values()),
            "unacked_messages": sum(len(s.pending) + len(s.unacked) for s in slots.values()),
        }

    # -- the stream ---------------------------------------------------------------
    async def _run(self, stream: StreamT) -> None:
        stream = stream.noack()  # type: ignore[attr-defined]
        self._ack = stream.ack
        async for event in stream.events():
            slot = await self.states.get(event.message.partition)
            async with self.states.lock:  # a checkpoint waits for the outputs
                await self._handle(event, slot)

    async def _handle(self, event: EventT, slot: Slot[ModelMonitor]) -> None:
        msg = event.message
        self.states.processed(slot, event)
        self._by_topic[msg.topic].inc()
        topic = 0 if msg.topic == self.predictions_topic else 1
        self._last_wall[(msg.partition, topic)] = slot.last_event_wall
        ev = await self._decode(event)
        if ev is None:
            return
        try:
            if isinstance(ev, Prediction):
                out = slot.state.apply_prediction(msg.offset, ev)
            else:
                out = slot.state.apply_label(msg.offset, ev)
        except Exception as e:  # a bug must not stop the stream: keep the input
            log.exception("model_event_failed", partition=msg.partition, offset=msg.offset)
            await self._dead_letter(event, "processing-error", repr(e))
            return
        if out is None:
            self.metrics.replayed.inc()
            return
        self.outputs.poll()
        await self._publish(out)

    async def _publish(self, out: list[Sample]) -> None:
        for s in out:
            await self.outputs.send(self.samples_topic, s.series.encode(), self._encode(s))
        self.metrics.samples.inc(len(out))

    async def _decode(self, event: EventT) -> Prediction | Label | None:
        topic = event.message.topic
        want = PREDICTION if topic == self.predictions_topic else LABEL
        try:
            decoded = self.codec.decode(event.value)
            if decoded.name != want:
                raise InvalidModelEvent("unexpected-record", f"{decoded.name} on {topic}")
            ev: Prediction | Label = (
                prediction_from_record(decoded.record)
                if want == PREDICTION
                else label_from_record(decoded.record)
            )
            check_point(ev.timestamp_ms, 0.0, int(time.time() * 1000), self.limits)
        except (DecodeError, InvalidModelEvent, InvalidSample) as e:
            await self._dead_letter(event, e.reason, str(e))
            return None
        except Exception as e:  # e.g. a record that breaks an assumption of the reader
            log.exception("model_event_undecodable", offset=event.message.offset)
            await self._dead_letter(event, "decode-error", repr(e))
            return None
        return ev

    async def _dead_letter(self, event: EventT, reason: str, detail: str) -> None:
        self.metrics.dead_letters.labels(reason).inc()
        await self.outputs.dead_letter(
            self.dead_letter_topic, event.message, reason, detail, "model_metrics"
        )

    def _encode(self, s: Sample) -> bytes:
        ref = self._series.get(s.series)
        if ref is None:
            if len(self._series) >= _SERIES_CACHE_MAX:
                self._series.clear()
            ref = self._series[s.series] = make_series(s.name, s.labels, s.kind, s.unit)
        return self.encoder.encode(ref, s.timestamp_ms, s.value)

    # -- state ---------------------------------------------------------------------
    def _restore(self, p: int, table: dict[bytes, bytes]) -> ModelMonitor:
        monitor = ModelMonitor(dataclasses.replace(self.config, partition=p))
        monitor.restore(table)
        log.info("model_metrics_restored", partition=p, pending=monitor.pending)
        return monitor

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        await self.states.on_assigned(assigned)

    async def _on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        # Checkpoint first: the next owner (perhaps this worker again) restores this
        # state and skips the messages it covers, so a rebalance emits no sample twice
        # (the samples are not idempotent downstream: a window counts each one).
        await self.states.checkpoint(self._ack, force=True)
        self.states.on_revoked(revoked)
        for tp in revoked:
            for t in (0, 1):
                self._last_wall.pop((tp.partition, t), None)

    async def _on_shutdown(self, sender: Any, **kwargs: Any) -> None:
        # Faust has stopped consuming: write the state of everything applied (no acks,
        # the consumer is gone), so a restart skips those messages instead of
        # emitting their samples again.
        await self.states.checkpoint(None, force=True)
        log.info("model_metrics_shutdown_checkpoint", partitions=sorted(self.states.slots))

    async def _idle_tick(self) -> None:
        """Publish the counts that wait for a topic quiet for the idle timeout (of a
        partition's two), then checkpoint at once (a close is the one step a replay may
        not repeat alike)."""
        now = time.monotonic()
        closed = False
        async with self.states.lock:
            for p, slot in list(self.states.slots.items()):
                # a restored partition gets a whole idle timeout for its replay
                since = [self._last_wall.setdefault((p, t), now) for t in (0, 1)]
                quiet = [t for t in (0, 1) if now - since[t] >= self._idle_s]
                if quiet and slot.state.waiting_for(quiet):
                    await self._publish(slot.state.close(quiet))
                    closed = True
        if closed:
            await self.states.checkpoint(self._ack, force=True)

    async def _checkpoint_tick(self) -> None:
        await self.states.checkpoint(self._ack)
        monitors = [s.state for s in self.states.slots.values()]
        self.metrics.pending.set(sum(m.pending for m in monitors))
        totals: dict[str, int] = {}
        for m in monitors:
            for kind, n in m.counts.items():
                totals[kind] = totals.get(kind, 0) + n
        for kind, n in totals.items():
            self.metrics.join.labels(kind).set(n)


def _snapshot(monitor: ModelMonitor) -> Records | None:
    return monitor.checkpoint() if monitor.has_changes else None
