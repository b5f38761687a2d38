"""``monitoring status``'s reads from the broker: heartbeats, lag, dead letters.

Every read is bounded: the status topic is read from its start to the end offsets
taken when the read began, at most ``MAX_STATUS_RECORDS`` records and ``timeout_s``;
the dead letters of the last hour through ``ops.dlq_kafka.scan`` within its limits.
What cannot be read becomes an error line of the report, not an exception.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from monitoring.config import Settings, ms
from monitoring.ops import dlq_kafka
from monitoring.ops import lag as lag_probe
from monitoring.ops.deadletters import Filter
from monitoring.ops.status import (
    Heartbeat,
    InvalidHeartbeat,
    StatusLimits,
    StatusReport,
    parse_heartbeat,
    series_of,
)
from monitoring.runtime.admin import admin_client
from monitoring.runtime.outputs import consumer_config
from monitoring.runtime.topics import DEAD_LETTER, STATUS, topic_name
from monitoring.sinks.clickhouse.store import store_group

MAX_STATUS_RECORDS = 100_000
MAX_PROCESSES = 1_000  # heartbeats kept (distinct process ids), at most
DEAD_LETTER_WINDOW_MS = 3_600_000
MAX_DEAD_LETTERS = 50_000


def limits_of(settings: Settings) -> StatusLimits:
    """The verdict's bounds from the ``health`` settings."""
    h = settings.health
    return StatusLimits(
        stale_after_ms=ms(h.stale_after),
        max_lag=h.max_lag,
        max_close_delay_ms=ms(h.max_close_delay),
    )


def _consumer(settings: Settings, what: str) -> Consumer:
    group = f"{settings.kafka.topic_prefix}{what}-{uuid.uuid4().hex[:8]}"  # never commits
    return Consumer(consumer_config(settings.kafka, group, **{"enable.partition.eof": True}))


def read_heartbeats(
    settings: Settings, timeout_s: float = 10.0, max_records: int = MAX_STATUS_RECORDS
) -> tuple[list[Heartbeat], dict[str, int]]:
    """The latest heartbeat of every process on the status topic, and the records
    skipped by reason (``InvalidHeartbeat.reason``); tombstones remove a process."""
    topic = topic_name(settings.kafka, STATUS)
    c = _consumer(settings, "status-cli")
    latest: dict[bytes, Heartbeat | None] = {}
    skipped: Counter[str] = Counter()
    try:
        md = c.list_topics(topic, timeout=timeout_s)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            raise KafkaException(f"topic {topic} is missing: run `monitoring broker topics create`")
        ends: dict[int, int] = {}
        for p in t.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if hi > lo:
                ends[p] = hi
        if not ends:
            return [], {}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        read = 0
        while ends and time.monotonic() < deadline and read < max_records:
            for m in c.consume(500, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ends.pop(m.partition() or 0, None)
                        continue
                    raise KafkaException(err)
                read += 1
                p, off = m.partition() or 0, m.offset() or 0
                if off + 1 >= ends.get(p, 0):
                    ends.pop(p, None)
                key = m.key()
                if (key or b"") not in latest and len(latest) >= MAX_PROCESSES:
                    skipped[f"over {MAX_PROCESSES} processes"] += 1
                    continue
                try:
                    latest[key or b""] = parse_heartbeat(key, m.value())
                except InvalidHeartbeat as e:
                    if e.reason == "tombstone":
                        latest[key or b""] = None
                    else:
                        skipped[e.reason] += 1
        if ends:
            skipped["unread (bound reached)"] += sum(ends.values())
    finally:
        c.close()
    beats = sorted((hb for hb in latest.values() if hb is not None), key=lambda h: (h.kind, h.id))
    return beats, dict(skipped)


def forget(settings: Settings, process_id: str, timeout_s: float = 10.0) -> None:
    """A tombstone for ``process_id``: it leaves the status (a process gone for good)."""
    from confluent_kafka import Producer

    from monitoring.runtime.outputs import producer_config

    errors: list[Any] = []
    conf = producer_config(settings.kafka, lambda err, _m: errors.append(err) if err else None)
    p = Producer(conf)
    p.produce(topic_name(settings.kafka, STATUS), None, process_id.encode())
    if p.flush(timeout_s) or errors:
        raise KafkaException(f"the tombstone was not acknowledged: {errors or 'timed out'}")


def dead_letters_total(settings: Settings, timeout_s: float) -> int:
    """Every dead letter the topic ever took (its end offsets, summed): a counter."""
    topic = topic_name(settings.kafka, DEAD_LETTER)
    c = _consumer(settings, "status-dlq")
    try:
        md = c.list_topics(topic, timeout=timeout_s)
        parts = md.topics[topic].partitions if topic in md.topics else {}
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in parts
        )
    finally:
        c.close()


def gather(settings: Settings, timeout_s: float = 10.0, now_ms: int | None = None) -> StatusReport:
    """Heartbeats, every project group's lag, and the last hour's dead letters."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    report = StatusReport(now_ms=now)
    limits = limits_of(settings)
    prefix = settings.kafka.topic_prefix
    try:
        report.heartbeats, report.skipped = read_heartbeats(settings, timeout_s)
    except KafkaException as e:
        report.errors.append(f"heartbeats: {e}")
    admin = admin_client(settings.kafka)
    offsets = lag_probe.CommittedOffsets(settings.kafka)
    try:
        groups = lag_probe.list_groups(admin, [prefix, store_group(settings)], timeout_s)
        report.lag = lag_probe.lag(admin, groups, timeout_s, topic_prefix=prefix, offsets=offsets)
    except lag_probe.LagUnavailable as e:
        report.errors.append(f"lag: {e}")
    finally:
        offsets.close()
    try:
        scan = dlq_kafka.scan(
            settings,
            Filter(since_ms=now - DEAD_LETTER_WINDOW_MS),
            dlq_kafka.ScanLimits(max_records=MAX_DEAD_LETTERS, timeout_s=timeout_s),
        )
        reasons: Counter[str] = Counter(d.reason for d in scan.letters)
        report.dead_letters = dict(reasons.most_common(50))
        recent = now - limits.dead_letters_recent_ms
        report.dead_letters_recent = sum(1 for d in scan.letters if d.timestamp_ms >= recent)
        report.dead_letters_partial = scan.stopped
    except (dlq_kafka.DlqError, KafkaException) as e:
        report.errors.append(f"dead letters: {e}")
    return report


def export(collector: Any, report: StatusReport, settings: Settings, timeout_s: float) -> int:
    """Record the report's series (``ops.status.series_of``) on a ``MetricsCollector``
    at the report's time and flush; the number of samples."""
    try:
        total = dead_letters_total(settings, timeout_s)
    except KafkaException:
        total = -1
    n = 0
    for name, labels, value, kind in series_of(report, limits_of(settings), max(total, 0)):
        if name == "monitoring_dead_letters_total" and total < 0:
            continue  # unknown: a 0 would read as a counter reset
        collector.record(name, value, labels, timestamp_ms=report.now_ms, kind=kind)
        n += 1
    collector.flush(timeout_s)
    return n
