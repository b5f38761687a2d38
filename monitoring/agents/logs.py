"""Log agent: logs topic -> normalised, templated records, template events, counters.

Thin wiring around ``monitoring.logs.analyzer.PartitionLogs`` through
``streams.log_processing.LogProcessor``: per assigned logs partition, decode each
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

The aggregation agent's pattern for state (``streams.partition_state``): a timer
checkpoints (outputs flushed, then the changed services' drain3 snapshots and counters
to the compacted ``logs.state`` topic, same partition, then the partition record), and
only then are the source messages acked; on assignment the partition's state is read
back first. A service's state is written in chunks under a generation and a manifest
(``logs.analyzer``), each record well under ``kafka.max_message_bytes``; templates
are bounded per service (``logs.max_templates``, least recently matched evicted,
``logs_templates_evicted``). A state record the producer refuses (a produce error)
is logged and counted (``logs_state_write_failures``) and the checkpoint, kept
whole, is tried again at the next tick; nothing is acked meanwhile. A record the
broker fails for good still stops the worker (``OutputsLost``: its sources must be
replayed).
Replayed messages are skipped by offset, so template ids and counts survive restarts.
Services whose counts wait for a later record are closed on the wall clock after
``logs.idle_timeout``.

The worker process runs this agent next to the aggregation agent on the same Faust
app (one consumer group): the partitions of both topics are spread over the workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP, EventT, StreamT
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.config import Settings, ms
from monitoring.log import get_logger
from monitoring.logs.analyzer import CHECKPOINT_KEY, PartitionLogs
from monitoring.logs.records import InvalidLog, LogLimits
from monitoring.streams import topics
from monitoring.streams.codec import AvroCodec, DecodeError
from monitoring.streams.log_processing import Encoded, LogProcessor, Rejected
from monitoring.streams.outputs import Outputs, OutputsLost, dead_letter_headers
from monitoring.streams.partition_state import Ack, PartitionStates, Records

log = get_logger("logs")
_CHECKPOINT_KEY = CHECKPOINT_KEY.encode()


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter("logs_messages", "Log messages processed", registry=registry)
        self.lines = Counter("logs_lines", "Log lines processed (a batch holds many)",
                             registry=registry)  # fmt: skip
        self.dead_letters = Counter(
            "logs_dead_letters", "Log messages sent to the dead-letter topic", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.skipped = Counter(
            "logs_replayed_messages", "Messages skipped as already in the restored state",
            registry=registry,
        )  # fmt: skip
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
        self.checkpoint_seconds = Histogram(
            "logs_checkpoint_seconds", "Time to flush outputs and write a checkpoint",
            registry=registry,
        )  # fmt: skip
        self.partitions = Gauge("logs_partitions", "Assigned logs partitions", registry=registry)
        self.evicted = Counter(
            "logs_templates_evicted", "Templates evicted (logs.max_templates per service)",
            registry=registry,
        )  # fmt: skip
        self.state_failures = Counter(
            "logs_state_write_failures", "Checkpoints whose state records could not be sent",
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
class _State:
    logs: PartitionLogs
    last_wall: dict[str, float] = field(default_factory=dict)  # service -> last record
    evictions: int = 0  # of logs.evictions, those already counted in the metric


class LogAgent:
    """Registers the log agent, its timers and rebalance hooks on ``app``."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        registry: CollectorRegistry,
        codec: AvroCodec | None = None,
    ) -> None:
        self.app = app
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
            max_future_skew_ms=ms(settings.aggregation.max_future_skew),
        )
        self._idle_s = cfg.idle_timeout.total_seconds()
        k = settings.kafka
        self.max_templates = cfg.max_templates
        self.max_template_chars = cfg.max_template_chars
        # chunks well under the message limit: room for the key (a service name is at
        # most 256 bytes) and the record's framing
        self.state_chunk_bytes = min(512 * 1024, k.max_message_bytes // 4)
        self.logs_topic = app.topic(topics.topic_name(k, topics.LOGS))
        self.stored_topic = topics.topic_name(k, topics.LOG_STORED)
        self.templates_topic = topics.topic_name(k, topics.LOG_TEMPLATES)
        self.samples_topic = topics.topic_name(k, topics.SAMPLES)
        self.state_topic = topics.topic_name(k, topics.LOG_STATE)
        self.dead_letter_topic = topics.topic_name(k, topics.DEAD_LETTER)
        self.outputs = Outputs(k)
        self.states: PartitionStates[_State] = PartitionStates(
            source_topic=self.logs_topic.get_topic_name(),
            state_topic=self.state_topic,
            bootstrap=k.bootstrap_servers,
            outputs=self.outputs,
            restore=self._restore,
            snapshot=self._snapshot,
        )
        self._ack: Ack | None = None  # the stream's, once the agent runs
        self._largest_state_record = 0
        app.agent(self.logs_topic, name="logs")(self._run)
        app.timer(min(1.0, self._idle_s / 4))(self._idle_tick)
        app.timer(cfg.checkpoint_interval.total_seconds())(self._checkpoint_tick)
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]

    def health(self) -> dict[str, Any]:
        """For ``GET /healthz``."""
        parts = dict(self.states.slots)
        return {
            "status": "ok",
            "partitions": sorted(parts),
            "services": sum(len(x.state.logs.services) for x in parts.values()),
            "unacked_messages": sum(len(x.pending) + len(x.unacked) for x in parts.values()),
        }

    # -- the stream ---------------------------------------------------------------
    async def _run(self, stream: StreamT) -> None:
        stream = stream.noack()  # type: ignore[attr-defined]
        self._ack = stream.ack
        async for event in stream.events():
            msg = event.message
            part = await self.states.get(msg.partition)
            async with self.states.lock:  # outputs enqueued before a checkpoint sees the state
                self.states.processed(part, event)
                self.metrics.messages.inc()
                kafka_ms = int(msg.timestamp * 1000) if msg.timestamp else int(time.time() * 1000)
                try:
                    out = self.processor.handle(
                        part.state.logs, msg.partition, msg.offset, event.value, kafka_ms
                    )
                except (DecodeError, InvalidLog) as e:
                    await self._dead_letter(event, e.reason, str(e))
                    continue
                except Exception as e:  # a bug must not stop the stream: keep the input
                    log.exception("log_processing_failed", offset=msg.offset)
                    await self._dead_letter(event, "processing-error", repr(e))
                    continue
                if out is None:
                    self.metrics.skipped.inc()
                    continue
                self._count_evictions(part.state)
                if out.oversized:  # mined and counted, but the stored rows cannot be sent
                    detail = f"stored output of {out.oversized} bytes exceeds the limit"
                    await self._dead_letter(event, "oversized", detail)
                for bad in out.rejected:  # lines of a batch: the rest is kept
                    await self._dead_letter_line(event, bad)
                if out.service in part.state.logs.services:  # not a refused one
                    part.state.last_wall[out.service] = time.monotonic()
                self.metrics.lines.inc(out.lines)
                await self._publish(out)
            self.outputs.poll()

    async def _publish(self, out: Encoded) -> None:
        send = self.outputs.send
        if out.stored is not None:
            await send(self.stored_topic, *out.stored)
        for key, value in out.templates:
            await send(self.templates_topic, key, value)
        for key, value in out.samples:
            await send(self.samples_topic, key, value)
        for ev in out.events:
            self.metrics.templates.labels(ev.change).inc()
            if ev.first_error:
                self.metrics.error_templates.inc()
        self.metrics.samples.inc(len(out.samples))

    def _count_evictions(self, st: _State) -> None:
        n = st.logs.evictions - st.evictions
        if n:
            self.metrics.evicted.inc(n)
            st.evictions = st.logs.evictions

    async def _dead_letter(self, event: EventT, reason: str, detail: str) -> None:
        self.metrics.dead_letters.labels(reason).inc()
        await self.outputs.dead_letter(
            self.dead_letter_topic, event.message, reason, detail, "logs"
        )

    async def _dead_letter_line(self, event: EventT, bad: Rejected) -> None:
        """One rejected line of a batch: the line alone as a LogRecord, with the reason
        and its index in the batch (``x-batch-index``)."""
        msg = event.message
        self.metrics.dead_letters.labels(bad.reason).inc()
        log.warning(
            "dead_letter", stage="logs", reason=bad.reason, error=bad.detail[:200],
            topic=msg.topic, partition=msg.partition, offset=msg.offset, line=bad.line,
        )  # fmt: skip
        headers = dead_letter_headers(
            bad.reason, bad.detail, msg.topic, msg.partition, msg.offset, "logs"
        )
        headers.append(("x-batch-index", str(bad.line).encode()))
        key = msg.key.encode() if isinstance(msg.key, str) else msg.key
        await self.outputs.send_dead_letter(self.dead_letter_topic, key, bad.value, headers)

    # -- state: restore on assignment, checkpoint on the timer ----------------------
    def _restore(self, p: int, table: dict[bytes, bytes]) -> _State:
        logs = PartitionLogs(
            self.window_ms, self.limits, self.max_templates, self.max_template_chars,
            self.state_chunk_bytes, self.settings.logs.max_services,
        )  # fmt: skip
        meta = table.pop(_CHECKPOINT_KEY, None)
        logs.restore(meta, ((k.decode(), v) for k, v in table.items()))
        for error in logs.restore_errors:
            self.metrics.restore_errors.inc()
            log.error("logs_state_restore_failed", partition=p, error=error[:300])
        log.info(
            "logs_partition_restored", partition=p, services=len(logs.services),
            checkpoint_offset=logs.checkpoint_offset, records=len(table),
            bytes=sum(len(k) + len(v) for k, v in table.items()),
        )  # fmt: skip
        # restored services get a whole idle timeout for their replayed records before
        # the idle timer may close their open windows
        st = _State(logs, dict.fromkeys(logs.services, time.monotonic()))
        self._count_evictions(st)  # a lower max_templates than the state's
        return st

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        await self.states.on_assigned(assigned)
        self.metrics.partitions.set(len(self.states.slots))

    async def _on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        self.states.on_revoked(revoked)
        self.metrics.partitions.set(len(self.states.slots))

    async def _idle_tick(self) -> None:
        """Publish the counts of services that have seen no record for idle_timeout."""
        now = time.monotonic()
        async with self.states.lock:
            for part in list(self.states.slots.values()):
                st = part.state
                idle = [
                    s for s in st.logs.pending_services()
                    if now - st.last_wall.get(s, 0.0) >= self._idle_s
                ]  # fmt: skip
                if not idle:
                    continue
                samples = st.logs.close_services(idle)
                for key, value in self.processor.encode_samples(samples):
                    await self.outputs.send(self.samples_topic, key, value)
                self.metrics.samples.inc(len(samples))

    async def _checkpoint_tick(self) -> None:
        """Outputs flushed, then state written, then sources acked (see module doc)."""
        started = time.monotonic()
        try:
            written = await self.states.checkpoint(self._ack)
        except OutputsLost:
            raise  # delivery failed for good: stop, so that a restart replays
        except Exception as e:  # a record refused at produce: the next tick tries again
            self.metrics.state_failures.inc()
            log.error("logs_checkpoint_failed", error=repr(e)[:300])
            return
        if written:
            self.metrics.checkpoint_seconds.observe(time.monotonic() - started)
            for slot in self.states.slots.values():  # superseded chunks may go now
                slot.state.logs.confirm()

    def _snapshot(self, st: _State) -> Records | None:
        """The changed services' records, then the partition record (written last)."""
        if not st.logs.has_changes:
            return None
        records, meta = st.logs.checkpoint()
        out: Records = [(k.encode(), v) for k, v in records]
        out.append((_CHECKPOINT_KEY, meta))
        largest = max(len(k) + len(v or b"") for k, v in out)
        if largest > self._largest_state_record:
            self._largest_state_record = largest
            self.metrics.state_record_bytes.set(largest)
        return out
