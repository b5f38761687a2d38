"""The store process: consume samples and aggregates from Kafka into ClickHouse.

At-least-once with idempotent tables: offsets are committed synchronously only after
the buffered rows were inserted; a crash in between replays rows that
ReplacingMergeTree (read with FINAL) collapses. ``handle`` (one message) and
``maybe_flush`` are separate from the loop so that tests can drive them directly.

One bad row never stops the store: a record with an int its column cannot hold
(``rows.check_ranges``) is dead-lettered on decode (reason ``out-of-range``, the field
in ``x-error``), and a row a table still refuses is split out of its batch by the
writer and its message dead-lettered (``insert-rejected``) before the commit. Only
transient errors (connection, timeouts: ``writer.transient``) are retried, with
backoff, consumption paused (partitions assigned meanwhile too) and the buffer bounded
(``MAX_PENDING_BATCHES`` batches; beyond it the rest of a fetch is held, undecoded,
and consumption paused until a flush makes room). Commits name the offsets of the
messages handled, never the consumer's position, so a held message is never committed
unstored. (Seeking the rest of a fetch back, as this did before, lost the rest of some
partitions' backlogs in ``bench pipeline``: committed, never stored.)
Health turns not-ok while a flush keeps failing or hangs past ``FLUSH_STUCK_S``.

An embedded engine (chDB) that took a fatal signal answers every statement with Code
236 for ever while the process lives on (chDB's signal handler catches the abort):
the store sees it on a flush, or on a ``SELECT 1`` every ``ENGINE_PROBE_S`` while it
has nothing to flush, turns ``dead`` (liveness fails) and ``run`` raises
:class:`EngineDead`: the process exits non-zero for its supervisor to restart it.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaException,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from monitoring.alerts.commands import Acknowledge, CommandError, parse_command
from monitoring.api.guard import Guard
from monitoring.api.server import ApiServer
from monitoring.config import Settings, ms
from monitoring.log import get_logger
from monitoring.metrics.samples import BATCH, SAMPLE, InvalidSample, Limits, SampleDecoder
from monitoring.runtime import consume
from monitoring.runtime.outputs import DeadLetters
from monitoring.runtime.topics import (
    AGGREGATES,
    ALERT_COMMANDS,
    ALERTS,
    ANOMALIES,
    DEAD_LETTER,
    LOG_STORED,
    LOG_TEMPLATES,
    NOTIFY_DELIVERIES,
    SAMPLES,
    STORE_GROUP,
    group_name,
    topic_name,
)
from monitoring.sinks.clickhouse.rows import OutOfRange, check_ranges
from monitoring.sinks.clickhouse.writer import Writer, engine_dead, transient
from monitoring.wire.codec import AvroCodec, DecodeError
from monitoring.wire.metric_batch import MetricBatchDecoder
from monitoring.wire.metric_sample import MetricSampleDecoder

AGGREGATE = "monitoring.Aggregate"
ANOMALY = "monitoring.Anomaly"
DELIVERY = "monitoring.Delivery"
ALERT = "monitoring.Alert"
MAX_ACK_KEY = 4096  # characters of an acknowledged fingerprint or group key stored
STORED_LOG = "monitoring.StoredLog"
STORED_LOG_BATCH = "monitoring.StoredLogBatch"
LOG_TEMPLATE = "monitoring.LogTemplate"
MAX_BACKOFF_S = 30.0
# Buffered rows at most, in batches (storage.batch_size): past it, consumption pauses
# and the rest of a fetch is held (as fetched) until a successful flush makes room.
MAX_PENDING_BATCHES = 2
# Health is not ok while a flush has been running this long (an insert hanging) ...
FLUSH_STUCK_S = 60.0
# ... or rows have waited this long without a successful flush.
FLUSH_STALE_S = 120.0
DEAD_LETTER_FLUSH_S = 10.0
# With nothing to flush, the embedded engine is asked SELECT 1 this often (s)
ENGINE_PROBE_S = 5.0
T = TypeVar("T")


class EngineDead(RuntimeError):
    """The embedded ClickHouse engine refuses everything after a fatal error in this
    process: only a restart of the process brings it back."""


class Message(Protocol):
    """What the store reads of a Kafka record (confluent_kafka.Message); ``partition``
    and ``offset`` (its position to commit) and ``key`` (dead-lettered) if present."""

    def value(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def timestamp(self) -> tuple[int, int]: ...


_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:@/\s]*):[^@/\s]*@", re.I)
_SECRET_PARAM = re.compile(r"([?&](?:password|passwd|pwd|access_token|token)=)[^&\s]*", re.I)


def redact(text: str) -> str:
    """``text`` (a DSN, an error) with URL passwords and secret parameters masked.

    >>> redact("http://default:s3cret@ch:8123/db?password=x&send_receive_timeout=30")
    'http://default:***@ch:8123/db?password=***&send_receive_timeout=30'
    """
    return _SECRET_PARAM.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


class StartupHealth:
    """``GET /healthz`` -> 503 and ``state`` as JSON, on the query port while the store
    waits for ClickHouse and migrates (the query endpoint needs a client, so it starts
    after). Always 503, even once ClickHouse answered: until the query endpoint took the
    port over, nothing is served, and a client told ``ok`` would query a closed port."""

    def __init__(
        self, host: str, port: int, state: dict[str, Any], guard: Guard | None = None
    ) -> None:
        self.server = ApiServer(
            CollectorRegistry(), host, port, lambda: {**state, "status": "starting"}, guard=guard
        ).start()

    @property
    def port(self) -> int:
        return self.server.address[1]

    def stop(self) -> None:
        self.server.stop()


def open_with_retry(
    open_client: Callable[[], T],
    stop: threading.Event,
    dsn: str,
    state: dict[str, Any] | None = None,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> T | None:
    """``open_client()`` retried with backoff while it fails transiently (ClickHouse
    not up yet); each retry logged, ``state`` (served as health) updated. None if
    ``stop`` is set first; a non-transient error is raised."""
    log = get_logger("store")
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            client = open_client()
        except Exception as e:
            if not transient(e):
                raise
            error = redact(str(e).split("\n")[0])[:300]
            log.warning("clickhouse_unavailable", dsn=redact(dsn), attempt=attempt,
                        retry_in_s=delay, error=error)  # fmt: skip
            if state is not None:
                state.update(status="starting", clickhouse="unavailable",
                             attempts=attempt, last_error=error)  # fmt: skip
            if stop.wait(delay):
                return None
            delay = min(delay * 2, max_backoff_s)
            continue
        if state is not None:
            state.update(status="ok", clickhouse="connected", attempts=attempt)
        return client


def store_group(settings: Settings) -> str:
    """The store's consumer group: ``<prefix>store`` (``monitoring-store`` without a
    prefix)."""
    return group_name(settings.kafka, STORE_GROUP)


def consumer_config(settings: Settings, group: str | None = None) -> dict[str, Any]:
    """confluent-kafka settings of the store's consumer group (``store_group``)."""
    extra = {"auto.offset.reset": "earliest", "client.id": "monitoring-store"}
    return consume.config(settings.kafka, group or store_group(settings), **extra)


LEGACY_STORE_GROUP = "monitoring-store"  # every deployment's store group before the prefix


def adopt_legacy_offsets(
    settings: Settings,
    stop: threading.Event | None = None,
    timeout_s: float = 10.0,
    wait_s: float = 30.0,
) -> int:
    """For a store upgraded from before consumer groups were under the topic prefix:
    when ``<prefix>store`` has no committed offset on the store's topics and the old
    fixed group ``monitoring-store`` has, copy the old group's offsets to the new one,
    so the store goes on where it stopped instead of re-reading the topics' retention.
    Waits for a broker at most ``wait_s`` (or until ``stop``). The number of partitions
    copied (0: nothing to copy, no broker, or not allowed: logged)."""
    group = store_group(settings)
    if group == LEGACY_STORE_GROUP:
        return 0
    log = get_logger("store")
    new = Consumer(consume.config(settings.kafka, group))
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                found = new.list_topics(timeout=2).topics
                break
            except KafkaException:
                if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                    log.warning("legacy_offsets_not_adopted", group=group, error="no broker")
                    return 0
        tps = [
            TopicPartition(t, p)
            for t in topics(settings)
            if t in found
            for p in sorted(found[t].partitions)
        ]
        if not tps or any(tp.offset >= 0 for tp in new.committed(tps, timeout=timeout_s)):
            return 0
        old = Consumer(consume.config(settings.kafka, LEGACY_STORE_GROUP))
        try:
            theirs = [tp for tp in old.committed(tps, timeout=timeout_s) if tp.offset >= 0]
        finally:
            old.close()
        # anyone who may read the topics may commit to that unprefixed group: an offset
        # outside the partition's records is not adopted (that partition starts afresh)
        theirs = [tp for tp in theirs if _within(new, tp, timeout_s)]
        if theirs:
            new.commit(offsets=theirs, asynchronous=False)
    except KafkaException as e:
        log.warning("legacy_offsets_not_adopted", group=group, error=redact(str(e))[:300])
        return 0
    finally:
        new.close()
    if theirs:
        log.info("legacy_offsets_adopted", source=LEGACY_STORE_GROUP, group=group,
                 partitions=len(theirs))  # fmt: skip
    return len(theirs)


def _within(c: Consumer, tp: TopicPartition, timeout_s: float) -> bool:
    low, high = c.get_watermark_offsets(
        TopicPartition(tp.topic, tp.partition), timeout=timeout_s, cached=False
    )
    return bool(low <= tp.offset <= high)


def topics(settings: Settings) -> list[str]:
    """The topics the store consumes."""
    roles = (SAMPLES, AGGREGATES, ANOMALIES, NOTIFY_DELIVERIES, LOG_STORED, LOG_TEMPLATES,
             ALERTS, ALERT_COMMANDS)  # fmt: skip
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
        group_id: str | None = None,
        dead_letters: DeadLetters | None = None,
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
        self.group_id = group_id or store_group(settings)
        self.log = get_logger("store")
        self.uncommitted = 0
        # (topic, partition) -> offset after the last message handled, to commit
        self.positions = consume.Positions()
        self.held: list[Message] = []  # fetched, not handled: the buffer was full
        self.last_flush = clock()
        self.last_success = time.time()
        self.backoff = 0.0
        self.retry_at = 0.0
        self.paused = False
        self.dead_letters = dead_letters  # made by ``run`` when not given
        self.max_pending = MAX_PENDING_BATCHES * settings.storage.batch_size
        self.flush_started: float | None = None  # wall time of the flush in progress
        self.failing_since: float | None = None  # wall time of the first failed flush
        self.last_error = ""
        # chDB runs in this process: its death is ours (a server restarts by itself)
        self.embedded = settings.storage.dsn.startswith("chdb://")
        self.engine_error = ""  # set once the embedded engine is dead
        self.last_probe = clock()
        k = settings.kafka
        self.expected = {  # what each topic carries; anything else is rejected
            topic_name(k, SAMPLES): frozenset({SAMPLE, BATCH}),
            topic_name(k, AGGREGATES): frozenset({AGGREGATE}),
            topic_name(k, ANOMALIES): frozenset({ANOMALY}),
            topic_name(k, NOTIFY_DELIVERIES): frozenset({DELIVERY}),
            topic_name(k, LOG_STORED): frozenset({STORED_LOG, STORED_LOG_BATCH}),
            topic_name(k, LOG_TEMPLATES): frozenset({LOG_TEMPLATE}),
            topic_name(k, ALERTS): frozenset({ALERT}),
        }
        self.worker_checked = {topic_name(k, SAMPLES), topic_name(k, AGGREGATES)}
        # JSON commands (monitoring.alerts.commands), read by the notifier, which
        # dead-letters bad ones: the store keeps the acknowledgements and counts the rest
        self.commands_topic = topic_name(k, ALERT_COMMANDS)

    # -- one message ---------------------------------------------------------------
    def handle(self, msg: Message) -> None:
        """Decode one message and buffer its rows; bad input is counted and skipped."""
        self.uncommitted += 1
        self.positions.advance(msg)
        self.metrics.messages.labels(msg.topic() or "").inc()
        self.writer.source = msg
        data = msg.value()
        if msg.topic() == self.commands_topic:
            self._handle_command(msg, data)
            return
        kinds = self.expected.get(msg.topic() or "")
        samples_topic = kinds is None or SAMPLE in kinds  # fast paths: samples topic only
        if samples_topic and self.sample_decoder.accepts(data):  # as the worker reads them
            try:
                sample = self.sample_decoder.decode(data, int(time.time() * 1000))
            except (DecodeError, InvalidSample) as e:
                self.metrics.invalid.labels(e.reason).inc()
                return
            self.writer.add_samples([sample])
            return
        if samples_topic and self.batch_decoder.accepts(data):
            self._handle_batch(data)
            return
        try:
            decoded = self.codec.decode(data)
        except DecodeError as e:
            self._reject(msg, e.reason, str(e))
            return
        if kinds is not None and decoded.name not in kinds:
            self._reject(msg, "unexpected-record", f"{decoded.name} on {msg.topic()}")
            return
        try:
            check_ranges(decoded.name, decoded.record)
        except OutOfRange as e:
            self.metrics.invalid.labels(e.reason).inc()
            self.dead_letter(msg, e.reason, f"{decoded.name}: {e}")
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
        elif decoded.name == ALERT:
            self.writer.add_alert_event(decoded.record)
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

    def _handle_command(self, msg: Message, data: bytes | None) -> None:
        """An ``acknowledge`` command of the commands topic as an ``alert_acks`` row, at
        its record's time; other commands are not stored, bad ones only counted."""
        try:
            command = parse_command(data or b"")
        except CommandError:
            self.metrics.invalid.labels("bad-command").inc()
            return
        if not isinstance(command, Acknowledge):
            return
        fingerprint, group_key = command.fingerprint or "", command.group_key or ""
        if len(fingerprint) > MAX_ACK_KEY or len(group_key) > MAX_ACK_KEY:
            self.metrics.invalid.labels("bad-command").inc()
            return
        ts_type, ts = msg.timestamp()
        now_ms = int(time.time() * 1000)
        at = ts if ts_type != TIMESTAMP_NOT_AVAILABLE and 0 < ts <= now_ms + 3_600_000 else now_ms
        self.writer.add_ack(at, fingerprint, group_key, command.by, command.comment)

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

    def _reject(self, msg: Message, reason: str, detail: str) -> None:
        """Count a record that is not what its topic carries; dead-letter it unless a
        worker reads that topic too and dead-letters it already (samples, aggregates)."""
        self.metrics.invalid.labels(reason).inc()
        if (msg.topic() or "") not in self.worker_checked:
            self.dead_letter(msg, reason, detail)

    def dead_letter(self, msg: Message, reason: str, detail: str) -> None:
        """Send ``msg`` to the dead-letter topic with why; never raises (a failure is
        logged and counted)."""
        self.metrics.dead_letters.labels(reason).inc()
        if self.dead_letters is None:  # no producer (tests driving ``handle``)
            self.log.warning("dead_letter_dropped", reason=reason, error=detail[:200])
            return
        if not consume.dead_letter(self.dead_letters, msg, reason, detail):
            self.metrics.dead_letter_failures.inc()

    def handle_many(self, msgs: Sequence[Message]) -> int:
        """``handle`` the held messages, then ``msgs``, while the buffer has room; past
        ``max_pending`` rows, hold the rest (handled after the next successful flush)
        and pause consumption. Returns how many were handled."""
        if self.held:
            msgs, self.held = [*self.held, *msgs], []
        bounded = self.consumer is not None
        for i, msg in enumerate(msgs):
            if bounded and self.writer.pending >= self.max_pending:
                self.held = list(msgs[i:])
                self.log.info("buffer_full", pending=self.writer.pending, held=len(self.held))
                self._pause(True)
                return i
            self.handle(msg)
        return len(msgs)

    # -- flush and commit ----------------------------------------------------------
    def due(self) -> bool:
        """A flush is due: a full batch, or buffered work older than flush_interval."""
        if self.writer.pending >= self.settings.storage.batch_size:
            return True
        waited = self.clock() - self.last_flush
        busy = self.uncommitted or self.writer.pending
        return bool(busy) and waited >= self.settings.storage.flush_interval.total_seconds()

    def flush_and_commit(self) -> None:
        """Insert the buffers, dead-letter the rows refused, then commit consumed offsets
        synchronously. Raises on a transient failure."""
        self.flush_started = time.time()
        try:
            self.writer.flush()
        finally:
            self.flush_started = None
        refused = self.writer.take_rejected()
        seen: set[int] = set()
        for r in refused:
            if r.source is None:  # a row no message was marked for: nothing to send
                self.log.error("row_rejected", table=r.table, error=r.error[:300])
            elif id(r.source) not in seen:
                seen.add(id(r.source))
                self.metrics.invalid.labels("insert-rejected").inc()
                self.dead_letter(r.source, "insert-rejected", f"{r.table}: {r.error}")
        if self.dead_letters is not None and self.dead_letters.sent:
            self.dead_letters.flush(DEAD_LETTER_FLUSH_S)
        self.last_flush = self.clock()
        self.last_success = time.time()
        if self.consumer is not None and self.uncommitted:
            self.positions.commit(self.consumer)  # what was handled, not the held messages
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
            self._check_engine(e)
            self.backoff = min(MAX_BACKOFF_S, self.backoff * 2 or 0.5)
            self.retry_at = now + self.backoff
            self.failing_since = self.failing_since or time.time()
            self.last_error = redact(str(e))[:500]
            self.log.error(
                "flush_failed",
                error=self.last_error,
                retry_in_s=self.backoff,
                pending=self.writer.pending,
            )
            self._pause(True)
            return False
        if self.backoff:
            self.log.info("flush_recovered", pending=self.writer.pending)
        self.backoff = self.retry_at = 0.0
        self.failing_since = None
        self.last_error = ""
        self._pause(False)
        return True

    def _check_engine(self, e: BaseException) -> None:
        """Raise EngineDead (health ``dead`` from now on) when ``e`` says the embedded
        engine died; any other error returns."""
        if not (self.embedded and engine_dead(e)):
            return
        self.engine_error = redact(str(e).split("\n")[0])[:300]
        self.log.critical("engine_dead", error=self.engine_error, pending=self.writer.pending)
        raise EngineDead(
            f"the embedded ClickHouse engine died ({self.engine_error}); the process "
            "must be restarted (rows not committed are read again from Kafka)"
        ) from e

    def probe_engine(self) -> None:
        """With nothing buffered, ask the embedded engine ``SELECT 1`` every
        ``ENGINE_PROBE_S``: a dead engine raises EngineDead even when no rows come."""
        now = self.clock()
        if not self.embedded or self.writer.pending or now - self.last_probe < ENGINE_PROBE_S:
            return
        self.last_probe = now
        try:
            self.writer.client.command("SELECT 1")
        except Exception as e:
            self._check_engine(e)  # anything else shows on the next flush

    def _pause(self, pause: bool) -> None:
        # While ClickHouse is down, stop fetching but keep polling (group membership).
        if self.consumer is None or pause == self.paused:
            return
        parts = self.consumer.assignment()
        (self.consumer.pause if pause else self.consumer.resume)(parts)
        self.paused = pause

    def health(self) -> dict[str, Any]:
        """Health summary for /healthz (served from another thread): ``stuck`` while a
        flush has run longer than FLUSH_STUCK_S, ``degraded`` while flushes fail,
        ``stalled`` when rows waited FLUSH_STALE_S without a successful flush."""
        now = time.time()
        started, failing = self.flush_started, self.failing_since
        in_flush = 0.0 if started is None else now - started
        since = now - self.last_success
        if self.engine_error:
            status = "dead"  # not alive: only a restart helps (api/health.py)
        elif in_flush > FLUSH_STUCK_S:
            status = "stuck"
        elif self.backoff or failing is not None:
            status = "degraded"
        elif since > FLUSH_STALE_S and self.writer.pending:
            status = "stalled"
        else:
            status = "ok"
        out = {
            "status": status,
            "pending_rows": self.writer.pending,
            "seconds_since_flush": round(since, 3),
            "retry_backoff_s": self.backoff,
            "flush_running_s": round(in_flush, 3),
            "failing_for_s": 0.0 if failing is None else round(now - failing, 3),
            "paused": self.paused,
        }
        if self.last_error:
            out["last_error"] = self.last_error
        if self.engine_error:
            out["engine_error"] = self.engine_error
        return out

    # -- the loop ------------------------------------------------------------------
    def on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions given by a rebalance: paused too while ClickHouse is failing."""
        consumer.assign(partitions)
        if self.paused and partitions:
            consumer.pause(partitions)
            self.log.info("assigned_paused", partitions=len(partitions))

    def on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Before partitions move to another store: flush and commit what we have; their
        held messages are dropped (the next owner reads them from the commit)."""
        try:
            self.flush_and_commit()
        except Exception as e:
            self.log.warning("revoke_flush_failed", error=redact(str(e))[:300])
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.held = [m for m in self.held if consume.where(m)[:2] not in gone]
        self.positions.drop(gone)

    def run(self, stop: threading.Event, shutdown_timeout: float = 30.0) -> None:
        """Consume until ``stop`` is set, then flush, commit and close the consumer."""
        consumer = self.consumer
        if consumer is None:
            if self.group_id == store_group(self.settings):
                adopt_legacy_offsets(self.settings, stop)
            if stop.is_set():  # stopped before a broker answered: nothing read yet
                self.log.info("store_stopped", pending=self.writer.pending)
                return
            consumer = self.consumer = Consumer(consumer_config(self.settings, self.group_id))
        if self.dead_letters is None:
            k = self.settings.kafka
            self.dead_letters = DeadLetters(k, topic_name(k, DEAD_LETTER), "store")
        consumer.subscribe(
            topics(self.settings), on_assign=self.on_assign, on_revoke=self.on_revoke
        )
        self.log.info(
            "store_started",
            topics=topics(self.settings),
            batch_size=self.settings.storage.batch_size,
            flush_interval_ms=ms(self.settings.storage.flush_interval),
        )
        try:
            while not stop.is_set():
                if self.held and self.writer.pending < self.max_pending:
                    self.handle_many([])  # room again: the held messages first
                else:
                    self.handle_many(consume.fetch(consumer, 5000, 0.2, self.settings.kafka))
                self.maybe_flush()
                self.probe_engine()
            self._drain(shutdown_timeout)
        finally:
            consumer.close()
            if self.dead_letters is not None:
                self.dead_letters.close()
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
                        error=redact(str(e))[:300],
                        uncommitted_rows_replay_on_restart=self.writer.pending,
                    )
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
