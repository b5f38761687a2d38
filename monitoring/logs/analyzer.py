"""The log agent's logic for one logs partition: normalise, mine, count, checkpoint.

Pure Python, no I/O. ``PartitionLogs.process`` takes one decoded record and returns
the normalised entry with its template id, the template events it caused and the
counter samples of windows it closed. State is per service (a service lives on one
partition): its drain3 miner, counters, first-seen times of templates, and the offset
of the last message applied to it. ``checkpoint`` returns the changed services'
state and a partition record (``CHECKPOINT_KEY``) with the offset every message up to
which is covered; ``restore`` rebuilds from them. Replayed messages at or below the
checkpoint offset, or at or below a service's own applied offset (a checkpoint cut
short after some services' records), are skipped, so a restart mines and counts every
message once and gives the same template ids.

Template events: a template that is created or whose text changes, and the first
record of a template at level ERROR or above (``first_error``: "a template never
seen before at error level"), produce a ``TemplateEvent``.

>>> p = PartitionLogs(window_ms=10_000)
>>> r = p.process(0, {"timestamp_ms": 1_700_000_000_000, "service": "api",
...                   "level": "error", "message": "db timeout after 30 s"}, 1_700_000_000_000)
>>> r.template_id, [(e.change, e.first_error) for e in r.events]
(1, [('created', True)])
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from drain3.drain import LogCluster

from monitoring.logs.batch import LogColumns, StoredColumns
from monitoring.logs.counts import ServiceCounts
from monitoring.logs.levels import SEVERITY, normalise_level
from monitoring.logs.records import MIN_TIMESTAMP_MS, InvalidLog, LogEntry, LogLimits, normalise
from monitoring.logs.templates import ServiceTemplates
from monitoring.metrics.samples import Sample

CHECKPOINT_KEY = "\0checkpoint"
STATE_VERSION = 1
ERROR_SEVERITY = SEVERITY["ERROR"]
DEFAULT_LIMITS = LogLimits()


class TemplateEvent(NamedTuple):
    """A template created or changed, or seen at ERROR or above for the first time."""

    service: str
    template_id: int
    template: str
    change: str  # created, updated or none
    first_error: bool  # this record is the template's first at ERROR or above
    level: str  # level of the record that caused the event
    timestamp_ms: int  # event time of that record
    first_seen_ms: int
    first_error_ms: int  # 0 if never seen at ERROR or above
    size: int  # records of this template so far: orders a template's events


class Processed(NamedTuple):
    """Outcome of one record."""

    entry: LogEntry
    template_id: int
    events: list[TemplateEvent]
    samples: list[Sample]


class BatchProcessed(NamedTuple):
    """Outcome of a batch: the stored lines (None if none was kept), template events,
    counter samples, and the rejected lines' indexes with the reason."""

    stored: StoredColumns | None
    events: list[TemplateEvent]
    samples: list[Sample]
    rejected: list[tuple[int, InvalidLog]]


class _KnownLevels(dict[str, tuple[str, int]]):
    """raw level -> (canonical level, severity), for spellings ``normalise_level`` knows."""

    def __missing__(self, raw: str) -> tuple[str, int] | None:
        level, known = normalise_level(raw)
        if not known:
            return None
        if len(self) < 10_000:
            self[raw] = (level, SEVERITY[level])
        return (level, SEVERITY[level])


_KNOWN_LEVELS = _KnownLevels()


def _without(s: StoredColumns, bad: set[int]) -> StoredColumns:
    """``s`` without the lines at positions ``bad`` (positions are line indexes here)."""
    keep = [i for i in s.line_indexes if i not in bad]

    def pick(col: list[Any]) -> list[Any]:
        return [col[i] for i in keep]

    return StoredColumns(
        s.service, s.host, keep, pick(s.timestamps_ms), pick(s.levels), pick(s.severities),
        pick(s.loggers), pick(s.messages), pick(s.trace_ids), pick(s.span_ids),
        pick(s.exceptions), {p: s.attributes[i] for p, i in enumerate(keep) if i in s.attributes},
        pick(s.template_ids),
    )  # fmt: skip


class _Service:
    __slots__ = ("applied_offset", "counts", "first_error", "first_seen", "templates")

    def __init__(self, templates: ServiceTemplates, counts: ServiceCounts) -> None:
        self.templates = templates
        self.counts = counts
        self.first_seen: dict[int, int] = {}
        self.first_error: dict[int, int] = {}
        self.applied_offset = -1


class PartitionLogs:
    """State and processing of one logs partition."""

    def __init__(self, window_ms: int = 10_000, limits: LogLimits = DEFAULT_LIMITS) -> None:
        self.window_ms = window_ms
        self.limits = limits
        self.services: dict[str, _Service] = {}
        self.checkpoint_offset = -1
        self.last_offset = -1
        self._changed: set[str] = set()

    @property
    def has_changes(self) -> bool:
        return bool(self._changed) or self.last_offset > self.checkpoint_offset

    def skip(self, offset: int) -> bool:
        """Whether a message at ``offset`` is already in the restored state."""
        return offset <= self.checkpoint_offset

    def seen(self, offset: int) -> None:
        """Record that the message at ``offset`` was handled (even if it was invalid)."""
        if offset > self.last_offset:
            self.last_offset = offset

    def process(
        self,
        offset: int,
        record: Mapping[str, Any],
        received_ms: int,
        utf8_replaced: bool = False,
    ) -> Processed | None:
        """Normalise, mine and count one record; None if already applied (replay).

        Raises ``records.InvalidLog`` for a record that cannot be kept.
        """
        if offset <= self.checkpoint_offset:
            return None
        self.last_offset = max(self.last_offset, offset)
        entry = normalise(record, received_ms, self.limits, utf8_replaced)
        svc = self.services.get(entry.service)
        if svc is None:
            svc = self.services[entry.service] = _Service(
                ServiceTemplates(), ServiceCounts(entry.service, self.window_ms)
            )
        elif offset <= svc.applied_offset:
            return None
        svc.applied_offset = offset
        self._changed.add(entry.service)
        e = entry
        cluster = svc.templates.cluster_of(e.message or e.exception)
        tid = cluster.cluster_id
        event = self._event(svc, e.service, tid, svc.templates.change, cluster.size,
                            e.timestamp_ms, e.level, e.severity)  # fmt: skip
        samples = svc.counts.add(e.timestamp_ms, e.level, tid)
        return Processed(entry, tid, [event] if event else [], samples)

    def process_batch(
        self, offset: int, batch: LogColumns, received_ms: int
    ) -> BatchProcessed | None:
        """``process`` for every line of a batch (one message at ``offset``); None if
        already applied. Lines that cannot be kept are in ``rejected`` with the reason
        (``normalise`` decides, exactly as for single records); the rest are stored.

        A line that needs no normalisation but its level's spelling (a known level,
        a plausible timestamp, short texts, few attributes, valid UTF-8) takes a fast
        path with the same result as ``normalise``; any other goes through it.
        """
        if offset <= self.checkpoint_offset:
            return None
        self.last_offset = max(self.last_offset, offset)
        n, service = batch.lines, batch.service
        if not service.strip():
            err = InvalidLog("missing-service", "the batch has no service name")
            return BatchProcessed(None, [], [], [(i, err) for i in range(n)])
        svc = self.services.get(service)
        if svc is None:
            svc = self.services[service] = _Service(
                ServiceTemplates(), ServiceCounts(service, self.window_ms)
            )
        elif offset <= svc.applied_offset:
            return None
        svc.applied_offset = offset
        self._changed.add(service)
        limits = self.limits
        lo, hi = MIN_TIMESTAMP_MS, received_ms + limits.max_future_skew_ms
        max_chars, max_attrs = limits.max_message_bytes // 4, limits.max_attributes
        timestamps, messages, exceptions = batch.timestamps_ms, batch.messages, batch.exceptions
        raw_levels, attrs, replaced = batch.levels, batch.attributes, batch.utf8_replaced
        known = _KNOWN_LEVELS
        levels: list[str] = []
        severities: list[int] = []
        texts: list[str] = []  # what each kept line is mined by
        rejected: list[tuple[int, InvalidLog]] = []
        copied = False  # timestamps, messages, exceptions, attrs copied before a change
        for i in range(n):
            ts, msg, exc = timestamps[i], messages[i], exceptions[i]
            lv = known[raw_levels[i]]
            if (
                lv is not None and (msg or exc) and lo <= ts <= hi and len(msg) <= max_chars
                and len(exc) <= max_chars and (i not in attrs or len(attrs[i]) <= max_attrs)
                and i not in replaced
            ):  # fmt: skip
                level, severity = lv
            else:
                try:
                    e = normalise(batch.record(i), received_ms, limits, i in replaced)
                except InvalidLog as err:
                    rejected.append((i, err))
                    levels.append("")
                    severities.append(0)
                    continue
                if not copied:
                    timestamps, messages = list(timestamps), list(messages)
                    exceptions, attrs, copied = list(exceptions), dict(attrs), True
                ts = timestamps[i] = e.timestamp_ms
                msg = messages[i] = e.message
                exc = exceptions[i] = e.exception
                if e.attributes:
                    attrs[i] = e.attributes
                level, severity = e.level, e.severity
            levels.append(level)
            severities.append(severity)
            texts.append(msg or exc)
        gone = {i for i, _ in rejected}
        kept: list[int] = []
        if gone:
            kept = [i for i in range(n) if i not in gone]
            k_ts, k_levels = [timestamps[i] for i in kept], [levels[i] for i in kept]
            k_sevs = [severities[i] for i in kept]
        else:
            k_ts, k_levels, k_sevs = timestamps, levels, severities
        k_tids, events = self._mine_batch(svc, service, texts, k_ts, k_levels, k_sevs)
        samples = svc.counts.add_many(k_ts, k_levels, k_tids)
        tids = k_tids
        if gone:
            tids = [0] * n
            for i, tid in zip(kept, k_tids, strict=True):
                tids[i] = tid
        if len(rejected) == n:
            return BatchProcessed(None, events, samples, rejected)
        stored = StoredColumns(
            service, batch.host, list(range(n)), timestamps, levels, severities, batch.loggers,
            messages, batch.trace_ids, batch.span_ids, exceptions, attrs, tids,
        )  # fmt: skip
        if gone:
            stored = _without(stored, gone)
        return BatchProcessed(stored, events, samples, rejected)

    def _mine_batch(
        self, svc: _Service, service: str, texts: list[str], timestamps: Sequence[int],
        levels: Sequence[str], severities: Sequence[int],
    ) -> tuple[list[int], list[TemplateEvent]]:  # fmt: skip
        """Template ids and template events of normalised records, as ``_event`` after
        each would give them. One mask call for all; the lines the cache knows are
        mined in runs (drain changes nothing there, so one check covers a run), each
        line it does not know alone."""
        templates = svc.templates
        masked = templates.masked(texts)
        clusters: list[LogCluster] = []
        events: list[TemplateEvent] = []
        first_seen, first_error = svc.first_seen, svc.first_error
        start, n = 0, len(masked)
        while start < n:
            end = templates.clusters_from(masked, start, clusters)
            if any(
                clusters[p].cluster_id not in first_seen
                or (severities[p] >= ERROR_SEVERITY and clusters[p].cluster_id not in first_error)
                for p in range(start, end)
            ):  # a line of the run gives an event: each line's template size at its turn
                sizes, later = [0] * (end - start), dict[int, int]()
                for p in range(end - 1, start - 1, -1):
                    c = clusters[p]
                    sizes[p - start] = c.size - later.get(c.cluster_id, 0)
                    later[c.cluster_id] = later.get(c.cluster_id, 0) + 1
                for p in range(start, end):
                    tid = clusters[p].cluster_id
                    event = self._event(svc, service, tid, "none", sizes[p - start],
                                        timestamps[p], levels[p], severities[p])  # fmt: skip
                    if event is not None:
                        events.append(event)
            if end < n:  # a line the cache does not know: drain's tree search
                c = templates.mine_masked(masked[end])
                clusters.append(c)
                event = self._event(svc, service, c.cluster_id, templates.change, c.size,
                                    timestamps[end], levels[end], severities[end])  # fmt: skip
                if event is not None:
                    events.append(event)
                end += 1
            start = end
        return [c.cluster_id for c in clusters], events

    def _event(
        self, svc: _Service, service: str, tid: int, change: str, size: int, ts: int,
        level: str, severity: int,
    ) -> TemplateEvent | None:  # fmt: skip
        """After mining a record into ``tid`` (``change``: what drain changed, ``size``:
        the template's count then): first-seen bookkeeping and the template event, if
        the template is new or changed or first seen at error level."""
        first_error = False
        if tid not in svc.first_seen:
            svc.first_seen[tid] = ts
        if severity >= ERROR_SEVERITY and tid not in svc.first_error:
            svc.first_error[tid] = ts
            first_error = True
        if change == "none" and not first_error:
            return None
        return TemplateEvent(
            service, tid, svc.templates.template(tid) or "", change, first_error, level, ts,
            svc.first_seen[tid], svc.first_error.get(tid, 0), size,
        )  # fmt: skip

    def close_services(self, services: Iterable[str]) -> list[Sample]:
        """Emit the open window of these services now (they went idle)."""
        out: list[Sample] = []
        for name in services:
            svc = self.services.get(name)
            if svc is not None and svc.counts.has_changes:
                out += svc.counts.close()
                self._changed.add(name)
        return out

    def pending_services(self) -> list[str]:
        """Services with counts not yet emitted."""
        return [n for n, s in self.services.items() if s.counts.has_changes]

    # -- state ----------------------------------------------------------------------
    def checkpoint(self) -> tuple[list[tuple[str, bytes]], bytes]:
        """State records of the services changed since the last checkpoint, and the
        partition record (write it last)."""
        records = [(name, self._pack(name, self.services[name])) for name in sorted(self._changed)]
        self._changed.clear()
        self.checkpoint_offset = max(self.checkpoint_offset, self.last_offset)
        meta = json.dumps({"v": STATE_VERSION, "offset": self.checkpoint_offset}).encode()
        return records, meta

    def _pack(self, name: str, svc: _Service) -> bytes:
        return json.dumps(
            {
                "v": STATE_VERSION,
                "applied_offset": svc.applied_offset,
                "counts": svc.counts.state(),
                "first_seen": {str(k): v for k, v in svc.first_seen.items()},
                "first_error": {str(k): v for k, v in svc.first_error.items()},
                "drain": svc.templates.snapshot().decode("ascii"),
            }
        ).encode()

    def restore(self, meta: bytes | None, records: Iterable[tuple[str, bytes]]) -> None:
        """Rebuild from ``checkpoint`` output (latest record per service)."""
        if meta is not None:
            m = json.loads(meta)
            _check_version(m)
            self.checkpoint_offset = self.last_offset = int(m["offset"])
        for name, raw in records:
            st = json.loads(raw)
            _check_version(st)
            svc = _Service(
                ServiceTemplates.restore(st["drain"].encode("ascii")),
                ServiceCounts.from_state(name, self.window_ms, st["counts"]),
            )
            svc.applied_offset = int(st["applied_offset"])
            svc.first_seen = {int(k): int(v) for k, v in st["first_seen"].items()}
            svc.first_error = {int(k): int(v) for k, v in st["first_error"].items()}
            self.services[name] = svc
            self.last_offset = max(self.last_offset, svc.applied_offset)


def _check_version(state: dict[str, Any]) -> None:
    if state.get("v") != STATE_VERSION:
        raise ValueError(f"log agent state version {state.get('v')!r}, expected {STATE_VERSION}")
