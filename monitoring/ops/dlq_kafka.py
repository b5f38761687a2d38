"""The dead-letter topic on the broker: bounded scans, the replay ledger, replays.

A scan never reads without bound: it starts at the offset ``offsets_for_times`` gives
for ``--since`` (or the selection's first offset), stops at the end offsets taken when
it started, and gives up after ``max_records`` records, ``max_bytes`` bytes or
``timeout_s`` seconds, saying so.

Replays are idempotent through a ledger, the compacted topic
``<prefix>dead-letter.replayed`` (created on first use), keyed by the dead letter's
``<partition>:<offset>``. A replay writes ``replaying`` for every record it is about to
send (a claim, with the run's id), flushes, reads the ledger back and keeps only the
claims it won, sends those records, flushes, then writes ``replayed`` with where each
landed. A later run skips every dead letter the ledger names, whichever state: a run
that stopped between the two leaves ``replaying`` entries, reported as in doubt (look
at the target, then ``--again``), never replayed twice by accident. Each replayed
record carries ``x-replayed-from: <dead-letter topic>:<partition>:<offset>``.

Two replays at once: the ledger has one partition, so its claims have one order. A
claim wins when it is the first claim of its dead letter after the ledger entry its run
read (or after the end of what it read, when there was none): of two runs that both
read the ledger before either claimed, the later claim sees the earlier one and loses
(``concurrent``: nothing sent), so a dead letter is sent by one of them only.

Replays write only to the deployment's input topics (:func:`replay_targets`), whatever a
dead letter's ``x-source-topic`` or ``--to-topic`` says: never a state topic (a forged
checkpoint), ``alerts.commands`` (a forged silence), the dead-letter topic or the ledger.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from monitoring.config import Settings
from monitoring.ops.deadletters import REPLAY_HEADER, DeadLetter, Filter, replay_verdict
from monitoring.runtime.admin import ensure_topics
from monitoring.runtime.outputs import consumer_config, producer_config
from monitoring.runtime.topics import (
    AGGREGATES,
    ALERTS,
    ANOMALIES,
    DEAD_LETTER,
    LOG_STORED,
    LOG_TEMPLATES,
    LOGS,
    MODEL_LABELS,
    NOTIFY_DELIVERIES,
    PREDICTIONS,
    SAMPLES,
    TopicSpec,
    topic_name,
)

LEDGER = "dead-letter.replayed"
# The topics whose consumers dead-letter what they cannot use: the only replay targets.
REPLAY_ROLES = (
    SAMPLES, AGGREGATES, LOGS, LOG_STORED, LOG_TEMPLATES, ANOMALIES, ALERTS,
    NOTIFY_DELIVERIES, PREDICTIONS, MODEL_LABELS,
)  # fmt: skip


class DlqError(RuntimeError):
    """The dead-letter topic could not be read or written; the message says why."""


@dataclass(frozen=True)
class ScanLimits:
    """Bounds of one scan of the dead-letter topic."""

    max_records: int = 10_000
    max_bytes: int = 64 << 20
    timeout_s: float = 30.0


@dataclass
class ScanResult:
    """What a scan kept, how much it read, and why it stopped early (empty: it read
    every record in range)."""

    letters: list[DeadLetter] = field(default_factory=list)
    read: int = 0
    bytes_read: int = 0
    stopped: str = ""


def ledger_spec(settings: Settings) -> TopicSpec:
    """The replay ledger: compacted, kept as long as dead letters are."""
    k = settings.kafka
    return TopicSpec(
        topic_name(k, LEDGER),
        1,
        {
            "cleanup.policy": "compact,delete",
            "retention.ms": str(int(k.dead_letter_retention.total_seconds() * 1000)),
            "max.message.bytes": str(k.max_message_bytes),
        },
    )


def _consumer(settings: Settings, **extra: Any) -> Consumer:
    return Consumer(
        consumer_config(
            settings.kafka,
            f"{settings.kafka.topic_prefix}dlq-cli-{uuid.uuid4().hex[:8]}",  # never commits
            **{
                "enable.partition.eof": True,
                "fetch.max.bytes": 8 << 20,
                "max.partition.fetch.bytes": 8 << 20,
                "socket.timeout.ms": 10_000,
                **extra,
            },
        )
    )


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    md = consumer.list_topics(topic, timeout=timeout_s)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        why = t.error if t is not None else "missing"
        raise DlqError(
            f"topic {topic!r} is not there ({why}): run `monitoring broker topics create`"
        )
    return sorted(t.partitions)


def _read(
    consumer: Consumer,
    topic: str,
    starts: dict[int, int],
    limits: ScanLimits,
    on_record: Callable[[Any], bool],
    result: ScanResult,
    stops: dict[int, int] | None = None,
) -> None:
    """Read ``topic`` from ``starts`` to the end offsets of now (or ``stops``, if
    lower), within ``limits``; ``on_record`` returns False to stop."""
    ends: dict[int, int] = {}
    for p in starts:
        _lo, hi = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=limits.timeout_s, cached=False
        )
        ends[p] = min(hi, (stops or {}).get(p, hi))
    todo = {p for p, s in starts.items() if s < ends[p]}
    if not todo:
        return
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(todo)])
    deadline = time.monotonic() + limits.timeout_s
    while todo:
        if time.monotonic() > deadline:
            result.stopped = f"time bound ({limits.timeout_s:g} s) reached"
            return
        msgs = consumer.consume(500, timeout=0.5)
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    todo.discard(m.partition())
                    continue
                raise DlqError(f"reading {topic}: {err}")
            part, off = int(m.partition() or 0), int(m.offset() or 0)
            if part not in todo or off >= ends[part]:
                todo.discard(part)
                continue
            result.read += 1
            result.bytes_read += len(m.value() or b"") + len(m.key() or b"")
            if off + 1 >= ends[part]:
                todo.discard(part)
            if not on_record(m):
                return
            if result.read >= limits.max_records:
                result.stopped = f"record bound ({limits.max_records}) reached"
                return
            if result.bytes_read >= limits.max_bytes:
                result.stopped = f"byte bound ({limits.max_bytes}) reached"
                return


def scan(
    settings: Settings,
    flt: Filter,
    limits: ScanLimits | None = None,
    max_matches: int | None = None,
) -> ScanResult:
    """The dead letters ``flt`` keeps, read within ``limits`` (see the module); stops
    once ``max_matches`` are kept (``show --limit``)."""
    limits = limits or ScanLimits()
    topic = topic_name(settings.kafka, DEAD_LETTER)
    result = ScanResult()
    consumer = _consumer(settings)
    try:
        parts = _partitions(consumer, topic, limits.timeout_s)
        starts: dict[int, int] = {}
        stops: dict[int, int] = {}
        if flt.since_ms is not None:
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, flt.since_ms) for p in parts], timeout=limits.timeout_s
            )
            for tp in found:
                if tp.error is not None:
                    raise DlqError(f"offsets_for_times on {topic}: {tp.error}")
                starts[tp.partition] = tp.offset  # -1: nothing that recent
        for p in parts:
            lo, hi = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=limits.timeout_s, cached=False
            )
            start = starts.get(p, lo)
            start = hi if start < 0 else max(start, lo)
            if not flt.selection.everything:
                first, last = flt.selection.first_offset(p), flt.selection.last_offset(p)
                start = hi if first is None else max(start, first)
                stops[p] = hi if last is None else last + 1
            starts[p] = start

        def keep(m: Any) -> bool:
            d = DeadLetter.from_record(
                m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers()
            )
            if flt.keeps(d):
                result.letters.append(d)
            return max_matches is None or len(result.letters) < max_matches

        _read(consumer, topic, starts, limits, keep, result, stops)
    finally:
        consumer.close()
    return result


# -- the ledger ---------------------------------------------------------------------


@dataclass
class Ledger:
    """The ledger as read: the newest entry of each key, its offset, and the end offset
    the read stopped at (the ledger has one partition)."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    end: int = 0


def _ledger_limits() -> ScanLimits:
    return ScanLimits(max_records=5_000_000, max_bytes=1 << 30, timeout_s=60.0)


def _entry(m: Any) -> dict[str, Any] | None:
    if m.value() is None:
        return None
    try:
        entry = json.loads(m.value()[:4096])
    except (ValueError, RecursionError):  # 4 KB of "[" recurses past json's limit
        entry = {"state": "unreadable"}
    return entry if isinstance(entry, dict) else {"state": "unreadable"}


def _scan_ledger(
    settings: Settings,
    limits: ScanLimits,
    start: int = OFFSET_BEGINNING,
    on_entry: Callable[[int, str, dict[str, Any] | None], None] | None = None,
) -> Ledger:
    """The ledger from ``start`` to its end offset of now, read whole (DlqError if not)."""
    topic = ledger_spec(settings).name
    ledger = Ledger()
    result = ScanResult()
    consumer = _consumer(settings)
    try:
        parts = _partitions(consumer, topic, limits.timeout_s)
        ends = {}
        for p in parts:
            _lo, ends[p] = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=limits.timeout_s, cached=False
            )
        ledger.end = max(ends.values(), default=0)

        def add(m: Any) -> bool:
            key = (m.key() or b"").decode("utf-8", "replace")[:64]
            entry = _entry(m)
            if on_entry is not None:
                on_entry(int(m.offset()), key, entry)
            if entry is None:
                ledger.entries.pop(key, None)
                ledger.offsets.pop(key, None)
            else:
                ledger.entries[key], ledger.offsets[key] = entry, int(m.offset())
            return True

        _read(consumer, topic, dict.fromkeys(parts, start), limits, add, result, ends)
        if result.stopped:
            raise DlqError(f"the replay ledger {topic} was not read whole: {result.stopped}")
    finally:
        consumer.close()
    return ledger


def read_ledger(settings: Settings, limits: ScanLimits | None = None) -> dict[str, dict[str, Any]]:
    """``{"<partition>:<offset>": entry}`` of every dead letter replayed (or in doubt).

    Raises DlqError when the ledger cannot be read whole: without it a replay could
    repeat records.
    """
    return _scan_ledger(settings, limits or _ledger_limits()).entries


def won_claims(
    entries: list[tuple[int, str, dict[str, Any] | None]], after: dict[str, int], run: str
) -> set[str]:
    """The keys of ``after`` whose first claim (a ``replaying`` entry) at or after
    ``after[key]`` is run ``run``'s: entries are ``(offset, key, entry)`` in ledger order.

    >>> claim = lambda r: {"state": "replaying", "run": r}
    >>> won_claims([(5, "0:1", claim("b")), (6, "0:1", claim("a")), (7, "0:2", claim("a"))],
    ...            {"0:1": 5, "0:2": 5}, "a")
    {'0:2'}
    >>> won_claims([(5, "0:1", claim("b")), (6, "0:1", claim("a"))], {"0:1": 6}, "a")
    {'0:1'}
    """
    first: dict[str, str] = {}
    for offset, key, entry in entries:
        if entry is None or entry.get("state") != "replaying" or key in first:
            continue
        if offset >= after.get(key, offset + 1):
            first[key] = str(entry.get("run", ""))
    return {k for k, r in first.items() if r == run}


# -- replay -------------------------------------------------------------------------


@dataclass
class ReplayItem:
    """What happened to one selected dead letter."""

    letter: DeadLetter
    action: str  # replayed | would-replay | refused | already | in-doubt | concurrent | failed
    why: str = ""
    target: str = ""
    partition: int | None = None
    offset: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dead_letter": self.letter.coordinates,
            "reason": self.letter.reason,
            "source": f"{self.letter.source_topic}:{self.letter.source_partition}:"
            f"{self.letter.source_offset}",
            "action": self.action,
            "why": self.why,
            "target": self.target,
            "partition": self.partition,
            "offset": self.offset,
        }


def digest(d: DeadLetter) -> str:
    """A short SHA-256 of a dead letter's key and value: a ledger entry names the record
    it was written for, so a recreated dead-letter topic (offsets from 0 again) is not
    mistaken for the replayed one."""
    h = hashlib.sha256()
    for part in (d.key, d.value):
        h.update(len(part or b"").to_bytes(8, "little") + (part or b""))
    return h.hexdigest()[:32]


def replay_targets(settings: Settings) -> frozenset[str]:
    """The topics a replay may write: the deployment's input topics, whose consumers
    dead-letter what they cannot use (never a state topic, ``alerts.commands``, the
    dead-letter topic or the ledger)."""
    return frozenset(topic_name(settings.kafka, r) for r in REPLAY_ROLES)


def _target(
    settings: Settings, d: DeadLetter, to_topic: str | None, topics: dict[str, int]
) -> tuple[str, int | None, str]:
    """(topic, partition or None for key placement, refusal) for one dead letter."""
    own = replay_targets(settings)
    if to_topic:
        prefixed = topic_name(settings.kafka, to_topic)
        name = prefixed if to_topic not in own and prefixed in own else to_topic
        if name not in own:
            return name, None, (
                f"--to-topic {name[:80]!r} is not an input topic of this deployment (a "
                f"replay writes only to {', '.join(sorted(own))})"
            )  # fmt: skip
    else:
        name = d.source_topic
        if name not in own:
            return name, None, (
                f"x-source-topic {name[:80]!r} is not a topic of this deployment's inputs "
                "(a replay writes only to those; --to-topic names one)"
            )  # fmt: skip
    if name not in topics:
        return name, None, f"topic {name[:80]!r} does not exist"
    p = d.source_partition
    if name == d.source_topic and p is not None and p < topics[name]:
        return name, p, ""
    return name, None, ""


def replay(
    settings: Settings,
    letters: list[DeadLetter],
    to_topic: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    again: bool = False,
    timeout_s: float = 30.0,
) -> list[ReplayItem]:
    """Replay ``letters`` to their original topics (or ``to_topic``), idempotently
    through the ledger (see the module). ``again`` replays ledgered ones once more."""
    dlq = topic_name(settings.kafka, DEAD_LETTER)
    if not dry_run:
        ensure_topics(settings, [ledger_spec(settings)], timeout=timeout_s)
    try:
        read = _scan_ledger(settings, _ledger_limits())
    except DlqError:
        if not dry_run:
            raise
        read = Ledger()
    ledger = read.entries
    probe = _consumer(settings)
    try:
        md = probe.list_topics(timeout=timeout_s)
    finally:
        probe.close()
    topics = {n: len(t.partitions) for n, t in md.topics.items() if t.error is None}
    items: list[ReplayItem] = []
    todo: list[tuple[ReplayItem, int | None]] = []
    for d in letters:
        entry = ledger.get(d.coordinates)
        if entry is not None and entry.get("digest", digest(d)) != digest(d):
            entry = None  # another record at that offset: the dead-letter topic was recreated
        if entry is not None and not again:
            state = str(entry.get("state", ""))
            where = ":".join(str(entry.get(k, "")) for k in ("topic", "partition", "offset"))
            if state == "replayed":
                items.append(ReplayItem(d, "already", f"replayed before to {where}"))
            else:
                why = "a replay stopped before the broker confirmed it: check the target"
                items.append(ReplayItem(d, "in-doubt", why + ", then --again"))
            continue
        verdict = replay_verdict(d, force)
        if not verdict.allowed:
            items.append(ReplayItem(d, "refused", verdict.why))
            continue
        name, part, refusal = _target(settings, d, to_topic, topics)
        if refusal:
            items.append(ReplayItem(d, "refused", refusal, name))
            continue
        item = ReplayItem(d, "would-replay" if dry_run else "replaying", target=name)
        items.append(item)
        todo.append((item, part))
    if dry_run or not todo:
        return items

    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    # every delivery reported: a replay records where each record landed
    producer = Producer(
        {**producer_config(settings.kafka, on_delivery), "delivery.report.only.error": False}
    )
    ledger_topic = ledger_spec(settings).name

    def write_ledger(entries: list[tuple[str, dict[str, Any]]]) -> None:
        for key, entry in entries:
            producer.produce(ledger_topic, json.dumps(entry).encode(), key.encode())
        if producer.flush(timeout_s) or failures:
            raise DlqError(f"the replay ledger was not written: {failures[:3] or 'timeout'}")

    now = int(time.time() * 1000)
    run = uuid.uuid4().hex
    write_ledger(
        [(i.letter.coordinates, {"state": "replaying", "topic": i.target, "at_ms": now,
          "digest": digest(i.letter), "run": run}) for i, _ in todo]
    )  # fmt: skip
    todo = _keep_won(settings, read, todo, run, write_ledger)

    landed: dict[int, tuple[int, int]] = {}

    def record(i: int) -> Callable[[KafkaError | None, Any], None]:
        def done(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failures.append(str(err))
            else:
                landed[i] = (msg.partition(), msg.offset())

        return done

    for i, (item, part) in enumerate(todo):
        d = item.letter
        headers = [(REPLAY_HEADER, f"{dlq}:{d.partition}:{d.offset}".encode())]
        kwargs: dict[str, Any] = {"headers": headers, "on_delivery": record(i)}
        if part is not None:
            kwargs["partition"] = part
        producer.produce(item.target, d.value, d.key, **kwargs)
        producer.poll(0)
    producer.flush(timeout_s)  # what is not confirmed by now is reported as failed
    done_entries = []
    for i, (item, _) in enumerate(todo):
        if i in landed:
            item.action, (item.partition, item.offset) = "replayed", landed[i]
            done_entries.append(
                (item.letter.coordinates, {"state": "replayed", "topic": item.target,
                 "partition": item.partition, "offset": item.offset, "at_ms": now,
                 "digest": digest(item.letter)})
            )  # fmt: skip
        else:
            item.action = "failed"
            item.why = (failures[:1] or ["not confirmed by the broker in time"])[0]
    failures_before = list(failures)
    failures.clear()
    if done_entries:
        write_ledger(done_entries)
    failures.extend(failures_before)
    return items


def _keep_won(
    settings: Settings,
    read: Ledger,
    todo: list[tuple[ReplayItem, int | None]],
    run: str,
    write_ledger: Callable[[list[tuple[str, dict[str, Any]]]], None],
) -> list[tuple[ReplayItem, int | None]]:
    """The part of ``todo`` whose claims run ``run`` won (see the module); the rest is
    marked ``concurrent``. A lost claim written after the winner's ``replayed`` entry
    is followed by that entry again, so the ledger's newest state stays the winner's
    (before it, the winner's own ``replayed`` comes later anyway)."""
    after = {
        i.letter.coordinates: read.offsets[i.letter.coordinates] + 1
        if i.letter.coordinates in read.offsets
        else read.end
        for i, _ in todo
    }
    seen: list[tuple[int, str, dict[str, Any] | None]] = []

    def keep(offset: int, key: str, entry: dict[str, Any] | None) -> None:
        if key in after:
            seen.append((offset, key, entry))

    _scan_ledger(settings, _ledger_limits(), min(after.values()), keep)
    won = won_claims(seen, after, run)
    newest: dict[str, dict[str, Any] | None] = {}
    others: dict[str, dict[str, Any]] = {}
    for offset, key, entry in seen:
        if offset < after[key]:
            continue
        newest[key] = entry
        if entry is not None and entry.get("run") != run:
            others[key] = entry
    restore = []
    kept = []
    for item, part in todo:
        key = item.letter.coordinates
        if key in won:
            kept.append((item, part))
            continue
        item.action = "concurrent"
        item.why = "another dlq replay claimed it at the same time: it sends it, this one did not"
        mine = newest.get(key)
        final = others.get(key, {}).get("state") == "replayed"  # else the winner writes it
        if mine is not None and mine.get("run") == run and final:
            restore.append((key, others[key]))
    if restore:
        write_ledger(restore)
    return kept


def iter_actions(items: list[ReplayItem]) -> Iterator[tuple[str, int]]:
    """(action, count) in a stable order."""
    order = [
        "replayed", "would-replay", "already", "in-doubt", "concurrent", "refused", "failed",
    ]  # fmt: skip
    for a in order:
        n = sum(1 for i in items if i.action == a)
        if n:
            yield a, n
