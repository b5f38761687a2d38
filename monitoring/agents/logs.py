"""Log agent: logs topic -> normalised, templated records, template events, counters.

The pure parts around ``monitoring.logs.analyzer.PartitionLogs`` and
``agents.log_processing.LogProcessor``, run by ``monitoring.runtime``: per assigned
logs partition, decode each
message (bad ones to the dead-letter topic with the reason in headers), normalise and
mine it, and publish

* the ``StoredLog`` record (or, for a ``LogBatch`` message, one ``StoredLogBatch`` of
  its kept lines) to ``logs.stored`` (the store writes the logs table); a line of a
  batch that cannot be kept goes alone to the dead-letter topic, with ``x-batch-index``,
  and the rest of the batch is kept,
* ``LogTemplate`` events to ``logs.templates`` (templates table; a template's first
  record at ERROR or above is one of them, ``first_error = true``),
* ``log_events_total`` / ``log_template_events_total`` counters as ``MetricSample`` to
  the samples topic, where the aggregation agent treats them like any series.

State: the changed services' drain3 snapshots and counters go to the compacted
``logs.state`` topic (same partition), then the partition record. A service's state is
written in chunks under a generation and a manifest (``logs.analyzer``), each record
well under ``kafka.max_message_bytes``; templates are bounded per service
(``logs.max_templates``, least recently matched evicted, ``logs_templates_evicted``),
services per partition too (``logs.max_services``), and per worker
(``logs.max_services_per_worker``, every partition it holds). A state record the producer
refuses fails that checkpoint (counted, tried again at the next tick; see
``runtime.driver``).
Replayed messages are skipped by offset, so template ids and counts survive restarts.
Services whose counts wait for a later record are closed on the wall clock after
``logs.idle_timeout``.

The worker process runs this agent next to the aggregation agent on the same Faust
app (one consumer group): the partitions of both topics are spread over the workers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitoring.agents.log_processing import Encoded, LogProcessor
from monitoring.config import Settings, ms
from monitoring.log import get_logger
from monitoring.logs.analyzer import CHECKPOINT_KEY, PartitionLogs
from monitoring.logs.records import InvalidLog, LogLimits
from monitoring.metrics.budget import SeriesBudget
from monitoring.runtime import topics
from monitoring.runtime.agent import Emit, Record, Records, StreamAgent
from monitoring.wire.codec import AvroCodec, DecodeError

log = get_logger("logs")
_CHECKPOINT_KEY = CHECKPOINT_KEY.encode()


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lines = Counter("logs_lines", "Log lines processed (a batch holds many)",
                             registry=registry)  # fmt: skip
        self.templates = Counter(
            "logs_template_events", "Template events published", ["change"], registry=registry
        )
        self.error_templates = Counter(
            "logs_new_error_templates", "Templates seen at ERROR or above for the first time",
            registry=registry,
        )  # fmt: skip
        self.samples = Counter(
            "logs_counter_samples", "Counter samples published", registry=registry
        )
        self.evicted = Counter(
            "logs_templates_evicted", "Templates evicted (logs.max_templates per service)",
            registry=registry,
        )  # fmt: skip
        self.state_record_bytes = Gauge(
            "logs_state_largest_record_bytes", "Largest state record (key + value) written",
            registry=registry,
        )  # fmt: skip
        self.restore_errors = Counter(
            "logs_state_restore_errors", "Services whose state could not be restored",
            registry=registry,
        )  # fmt: skip


@dataclass
class LogState:
    """A logs partition: its analyzer and when each service last had a record."""

    logs: PartitionLogs
    last_wall: dict[str, float] = field(default_factory=dict)  # service -> clock
    evictions: int = 0  # of logs.evictions, those already counted in the metric


class LogAgent(StreamAgent[LogState]):
    """Log records to stored logs, templates and counters, per logs partition."""

    name = "logs"

    def __init__(
        self, settings: Settings, registry: CollectorRegistry, codec: AvroCodec | None = None
    ) -> None:
        self.settings = settings
        self.processor = LogProcessor(
            codec or AvroCodec.from_directory(),
            settings.kafka.samples_partitions,
            settings.kafka.max_message_bytes,
        )
        self.metrics = _Metrics(registry)
        cfg = settings.logs
        self.window_ms = ms(cfg.window)
        self.limits = LogLimits(
            max_message_bytes=cfg.max_message_bytes,
            max_attributes=cfg.max_attributes,
            # as samples: a record's time may be ahead of its Kafka timestamp by the
            # small skew only, or one record from the future would move the service's
            # open window ahead and hold its counts back for up to an hour (issue 13)
            max_future_skew_ms=ms(settings.aggregation.max_record_skew),
        )
        self.idle_timeout_s = cfg.idle_timeout.total_seconds()
        self.checkpoint_interval_s = cfg.checkpoint_interval.total_seconds()
        k = settings.kafka
        self.max_templates = cfg.max_templates
        # logs.max_services_per_worker: every partition this worker holds
        self.budget = SeriesBudget(cfg.max_services_per_worker)
        self.max_template_chars = cfg.max_template_chars
        # chunks well under the message limit: room for the key (a service name is at
        # most 256 bytes) and the record's framing
        self.state_chunk_bytes = min(512 * 1024, k.max_message_bytes // 4)
        self.sources = (topics.topic_name(k, topics.LOGS),)
        self.state_topic = topics.topic_name(k, topics.LOG_STATE)
        self.stored_topic = topics.topic_name(k, topics.LOG_STORED)
        self.templates_topic = topics.topic_name(k, topics.LOG_TEMPLATES)
        self.samples_topic = topics.topic_name(k, topics.SAMPLES)
        self._largest_state_record = 0

    def health(self, states: Mapping[int, LogState]) -> dict[str, Any]:
        """The number of services of the assigned partitions, and the worker's bound."""
        return {
            "services": sum(len(x.logs.services) for x in states.values()),
            "services_limit_per_worker": self.budget.limit,
            "services_refused_by_worker_limit": self.budget.refused,
        }

    # -- the stream ---------------------------------------------------------------
    def handle(self, msg: Record, state: LogState, out: Emit) -> int:
        """Mine one record or batch; the number of lines it held."""
        kafka_ms = int(msg.timestamp * 1000) if msg.timestamp else int(time.time() * 1000)
        try:
            enc = self.processor.handle(state.logs, msg.partition, msg.offset, msg.value, kafka_ms)
        except (DecodeError, InvalidLog) as e:
            out.dead_letter(e.reason, str(e))
            return 0
        if enc is None:
            out.skip_replayed()
            return 0
        self._count_evictions(state)
        if enc.oversized:  # mined and counted, but the stored rows cannot be sent
            out.dead_letter(
                "oversized", f"stored output of {enc.oversized} bytes exceeds the limit"
            )
        for bad in enc.rejected:  # lines of a batch: the rest is kept
            out.dead_letter_part(
                bad.reason, bad.detail, bad.value, [("x-batch-index", str(bad.line).encode())]
            )
        if enc.service in state.logs.services:  # not a refused one
            state.last_wall[enc.service] = self.clock()
        self.metrics.lines.inc(enc.lines)
        self._publish(out, enc)
        return enc.lines

    def _publish(self, out: Emit, enc: Encoded) -> None:
        if enc.stored is not None:
            out.send(self.stored_topic, *enc.stored)
        out.send_many(self.templates_topic, enc.templates)
        out.send_many(self.samples_topic, enc.samples)
        for ev in enc.events:
            self.metrics.templates.labels(ev.change).inc()
            if ev.first_error:
                self.metrics.error_templates.inc()
        self.metrics.samples.inc(len(enc.samples))

    def _count_evictions(self, st: LogState) -> None:
        n = st.logs.evictions - st.evictions
        if n:
            self.metrics.evicted.inc(n)
            st.evictions = st.logs.evictions

    # -- idleness: per service -----------------------------------------------------
    def tick(self, partition: int, state: LogState, out: Emit) -> None:
        """Publish the counts of services that have had no record for ``idle_timeout``."""
        now, idle_s = self.clock(), self.idle_timeout_s or 0.0
        idle = [
            s for s in state.logs.pending_services()
            if now - state.last_wall.get(s, 0.0) >= idle_s
        ]  # fmt: skip
        if idle:
            samples = state.logs.close_services(idle)
            out.send_many(self.samples_topic, self.processor.encode_samples(samples))
            self.metrics.samples.inc(len(samples))

    # -- state ---------------------------------------------------------------------
    def restore(self, partition: int, table: dict[bytes, bytes]) -> LogState:
        """The analyzer of ``partition``; services that do not restore start afresh."""
        logs = PartitionLogs(
            self.window_ms, self.limits, self.max_templates, self.max_template_chars,
            self.state_chunk_bytes, self.settings.logs.max_services, self.budget,
        )  # fmt: skip
        table = dict(table)
        meta = table.pop(_CHECKPOINT_KEY, None)
        logs.restore(meta, ((k.decode(), v) for k, v in table.items()))
        self.budget.join(partition, logs)  # restored services are kept, and count
        for error in logs.restore_errors:
            self.metrics.restore_errors.inc()
            log.error("logs_state_restore_failed", partition=partition, error=error[:300])
        log.info(
            "logs_partition_restored", partition=partition, services=len(logs.services),
            checkpoint_offset=logs.checkpoint_offset, records=len(table),
            bytes=sum(len(k) + len(v) for k, v in table.items()),
        )  # fmt: skip
        # restored services get a whole idle timeout for their replayed records before
        # the idle timer may close their open windows
        st = LogState(logs, dict.fromkeys(logs.services, self.clock()))
        self._count_evictions(st)  # a lower max_templates than the state's
        return st

    def release(self, partition: int, state: LogState) -> None:
        """A revoked partition's services no longer count against the worker's bound."""
        self.budget.leave(partition, state.logs)

    def snapshot(self, state: LogState) -> Records | None:
        """The changed services' records, then the partition record (written last)."""
        if not state.logs.has_changes:
            return None
        records, meta = state.logs.checkpoint()
        out: Records = [(k.encode(), v) for k, v in records]
        out.append((_CHECKPOINT_KEY, meta))
        largest = max(len(k) + len(v or b"") for k, v in out)
        if largest > self._largest_state_record:
            self._largest_state_record = largest
            self.metrics.state_record_bytes.set(largest)
        return out

    def checkpointed(self, state: LogState) -> None:
        """Chunks the written generation superseded may be tombstoned at the next one."""
        state.logs.confirm()
