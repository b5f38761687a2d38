"""Store backfill: re-consume a time range of the store's topics into ClickHouse.

``monitoring store backfill --from T --to T [--topic ...]`` finds, per partition, the
first offset whose record timestamp is at or after ``--from`` and the first at or after
``--to`` (Kafka's ``offsets_for_times``, as ``kafka-consumer-groups --reset-offsets
--to-datetime`` does), assigns those partitions to a consumer of its own (a throwaway
group id that never commits: the store's group ``<prefix>store`` is not touched) and
runs the records through the store's own ``Store.handle`` and ``Writer``, so decoding,
validation and rows are exactly the store's.

Idempotent because the tables are: every row collapses on its key under ``FINAL``
(samples on (series_id, ts, value), aggregates on (window_ms, series_id, window_start)
with the record's timestamp as version, which a re-read gives again...), and the
``series`` table aggregates with min/max/any. A backfill over rows already stored, or
run twice, changes no result of a ``FINAL`` query.

Records the store would dead-letter are counted, not dead-lettered again (the store
did that when it first read them).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from monitoring.config import Settings, ms, parse_duration
from monitoring.log import get_logger
from monitoring.runtime.outputs import consumer_config
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.store import topics as store_topics
from monitoring.sinks.clickhouse.writer import Writer

MAX_TIME_MS = 2**63 - 1
_EPOCH_MS = re.compile(r"[0-9]{10,16}")


class BackfillError(RuntimeError):
    """A backfill that cannot start or did not finish (the reason is the message)."""


def parse_time(text: str, now_ms: int | None = None) -> int:
    """A point in time as epoch milliseconds: ``now``, a duration ago (``2h``, ``30m``),
    epoch milliseconds (10-16 digits) or ISO 8601 (no zone means UTC).

    >>> parse_time("2026-01-02T03:04:05Z")
    1767323045000
    >>> parse_time("1h", now_ms=7_200_000)
    3600000
    >>> parse_time("1767323045000")
    1767323045000
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    value = text.strip()
    if not value or len(value) > 64:
        raise ValueError(f"invalid time {text[:64]!r}")
    if value == "now":
        return now
    if _EPOCH_MS.fullmatch(value):
        return int(value)
    try:
        return now - ms(parse_duration(value))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"invalid time {value!r}: use ISO 8601 (2026-01-02T03:04:05Z), epoch "
            "milliseconds, a duration ago (2h) or now"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition to re-read."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def records(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class BackfillResult:
    """What a backfill read and wrote."""

    ranges: list[PartitionRange]
    messages: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    complete: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "complete": self.complete,
            "messages": self.messages,
            "rows": self.rows,
            "rejected": self.rejected,
            "elapsed_s": round(self.elapsed_s, 3),
            "ranges": [
                {"topic": r.topic, "partition": r.partition, "start": r.start, "end": r.end}
                for r in self.ranges
                if r.records
            ],
        }


def resolve_topics(settings: Settings, names: Sequence[str]) -> list[str]:
    """The store's topics named (with or without the prefix); all of them if none."""
    known = store_topics(settings)
    if not names:
        return known
    prefix = settings.kafka.topic_prefix
    out = []
    for n in names:
        full = n if n in known else prefix + n
        if full not in known:
            short = ", ".join(t.removeprefix(prefix) for t in known)
            raise BackfillError(f"{n!r} is not a topic the store reads ({short})")
        if full not in out:
            out.append(full)
    return out


def plan(
    consumer: Any, topics: Sequence[str], from_ms: int, to_ms: int, timeout_s: float
) -> list[PartitionRange]:
    """Per partition of ``topics``: the offsets of the first records at or after
    ``from_ms`` and ``to_ms`` (the high watermark where none is)."""
    if to_ms <= from_ms:
        raise BackfillError("--to must be after --from")
    tps = []
    for topic in topics:
        md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if md is None or md.error is not None:
            raise BackfillError(f"topic {topic!r} is not there: {md.error if md else 'missing'}")
        tps += [TopicPartition(topic, p) for p in sorted(md.partitions)]
    marks = {
        (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=timeout_s)
        for tp in tps
    }

    def at(ts: int) -> dict[tuple[str, int], int]:
        query = [TopicPartition(tp.topic, tp.partition, min(ts, MAX_TIME_MS)) for tp in tps]
        found = consumer.offsets_for_times(query, timeout=timeout_s)
        out = {}
        for tp in found:
            if tp.error is not None:
                raise BackfillError(f"offsets_for_times {tp.topic}[{tp.partition}]: {tp.error}")
            # -1: no record at or after ts: the range ends at the high watermark
            out[(tp.topic, tp.partition)] = (
                tp.offset if tp.offset >= 0 else marks[(tp.topic, tp.partition)][1]
            )
        return out

    starts, ends = at(from_ms), at(to_ms)
    return [
        PartitionRange(t, p, starts[(t, p)], max(starts[(t, p)], ends[(t, p)])) for (t, p) in marks
    ]


class _NoCommit:
    """The backfill consumer as the store sees it: commits are dropped (the store's
    group keeps its offsets; the backfill's own group must not matter either)."""

    def __init__(self, consumer: Any) -> None:
        self._c = consumer

    def commit(self, *args: Any, **kwargs: Any) -> None:
        return None

    def assignment(self) -> Any:
        return self._c.assignment()

    def pause(self, parts: Any) -> None:
        self._c.pause(parts)

    def resume(self, parts: Any) -> None:
        self._c.resume(parts)


def make_consumer(settings: Settings) -> Consumer:
    """A consumer with a throwaway group that never commits."""
    group = f"{settings.kafka.topic_prefix}store-backfill-{uuid.uuid4().hex[:8]}"
    return Consumer(
        consumer_config(
            settings.kafka, group, **{"auto.offset.reset": "earliest", "client.id": group}
        )
    )


def backfill(
    settings: Settings,
    writer: Writer,
    from_ms: int,
    to_ms: int,
    topics: Sequence[str] = (),
    timeout_s: float = 600.0,
    stop: threading.Event | None = None,
    consumer: Any = None,
    on_progress: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """Re-read ``[from_ms, to_ms)`` of the store's ``topics`` into ``writer``'s tables.

    Returns when every partition reached its end offset and the last rows were
    inserted (``complete``), or raises ``BackfillError`` after ``timeout_s`` or when
    ``stop`` is set, with what was done so far stored (it is all idempotent)."""
    log = get_logger("backfill")
    stop = stop or threading.Event()
    names = resolve_topics(settings, topics)
    own = consumer is None
    consumer = consumer or make_consumer(settings)
    started = time.monotonic()
    try:
        ranges = plan(consumer, names, from_ms, to_ms, min(timeout_s, 30.0))
        result = BackfillResult(ranges)
        todo = {(r.topic, r.partition): r.end for r in ranges if r.records}
        log.info("backfill_started", partitions=len(todo),
                 records=sum(r.records for r in ranges), topics=names)  # fmt: skip
        store = Store(settings, writer, consumer=_NoCommit(consumer))
        before = _counts(writer)
        if todo:
            consumer.assign(
                [TopicPartition(r.topic, r.partition, r.start) for r in ranges if r.records]
            )
        deadline = started + timeout_s
        while todo or store.held or store.writer.pending or store.uncommitted:
            if stop.is_set() or time.monotonic() > deadline:
                why = "stopped" if stop.is_set() else f"timed out after {timeout_s:.0f} s"
                left = {f"{t}[{p}]": end for (t, p), end in todo.items()}
                raise BackfillError(f"backfill {why}; partitions not finished: {left}")
            if store.held and store.writer.pending < store.max_pending:
                result.messages += store.handle_many([])
            elif todo:
                msgs = _in_range(consumer.consume(num_messages=5000, timeout=0.5), todo)
                done = [tp for tp in todo if _reached(consumer, tp, todo[tp])]
                for tp in done:
                    del todo[tp]
                if done:
                    consumer.pause([TopicPartition(t, p) for t, p in done])
                result.messages += store.handle_many(msgs)
            if not todo and not store.held:
                store.last_flush = -1e18  # the end: flush now
            store.maybe_flush()
            if store.backoff:
                time.sleep(min(store.backoff, 1.0))
            if on_progress is not None:
                on_progress(result)
        after = _counts(writer)
        result.rows = {k: after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)}
        result.rejected = _rejected(writer)
        result.complete = True
        result.elapsed_s = time.monotonic() - started
        return result
    finally:
        if own:
            consumer.close()
        elapsed = time.monotonic() - started
        log.info("backfill_finished", elapsed_s=round(elapsed, 3))


def _in_range(msgs: Sequence[Any], ends: dict[tuple[str, int], int]) -> list[Any]:
    """The messages before their partition's end offset (a fetch reads past it)."""
    out = []
    for m in msgs:
        if m.error() is not None:
            if m.error().code() != KafkaError._PARTITION_EOF:
                raise BackfillError(f"consume: {m.error()}")
            continue
        end = ends.get((m.topic(), m.partition()))
        if end is not None and m.offset() < end:
            out.append(m)
    return out


def _reached(consumer: Any, tp: tuple[str, int], end: int) -> bool:
    """The consumer's position on ``tp`` is at or past ``end``."""
    pos = consumer.position([TopicPartition(tp[0], tp[1])])[0].offset
    return bool(pos >= end)


def _counts(writer: Writer) -> dict[str, int]:
    """Rows inserted so far per table (the writer's counter)."""
    out: dict[str, int] = {}
    for metric in writer.metrics.rows.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                out[s.labels.get("table", "")] = int(s.value)
    return out


def _rejected(writer: Writer) -> dict[str, int]:
    out: dict[str, int] = {}
    for metric in writer.metrics.invalid.collect():
        for s in metric.samples:
            if s.name.endswith("_total") and s.value:
                out[s.labels.get("reason", "")] = int(s.value)
    return out
