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

Bounded state: a partition holds at most ``max_services`` services; a record of a new
service beyond it raises ``InvalidLog("cardinality")`` (the agent dead-letters it) and
makes no state. A service keeps its place for good (its templates are state): places
come back only with a higher limit. A ``budget`` (``metrics.budget.SeriesBudget``,
``logs.max_services_per_worker``) bounds the services of every partition a worker holds
the same way (restored services are kept, and count). Each service keeps at most ``max_templates``
templates (the least recently matched is evicted, ``templates.TemplateLRU``); an evicted template's
first-seen times and counter go with it (``counts.ServiceCounts.evict``), and
``evictions`` counts them. A service's state is one JSON blob (drain3's snapshot,
counters, first-seen times), written as records of at most ``state_chunk_bytes``
(the agent keeps them well under the message limit) plus their key:

* ``\\0s\\0<service>\\0<gen>\\0<i>``: chunk ``i`` of generation ``gen`` of the blob;
* ``<service>``: the manifest (``gen``, chunk count, size and CRC-32 of the blob,
  the service's applied offset);
* ``\\0checkpoint``: the partition record, written last.

A checkpoint writes a changed service's chunks under a new generation, then its
manifest. Chunks of older generations are tombstoned only once a later manifest is
known to be written (``confirm``, after the broker acknowledged a checkpoint), not in
the same checkpoint: ``PartitionStates`` retries an unacknowledged checkpoint merged
into the next one, where a key written again moves to the end, so a tombstone could
otherwise land before the manifest that replaces the one it breaks. So whatever
prefix of the records reaches the topic, every manifest in it points at chunks that
are there: a restore reads one consistent snapshot per service (and checks its size
and CRC). Chunks no manifest points at (a checkpoint cut short) are tombstoned at the
next checkpoint, and generations are never reused. Version-1 records (the whole state
under ``<service>``) are still read.

>>> p = PartitionLogs(window_ms=10_000)
>>> r = p.process(0, {"timestamp_ms": 1_700_000_000_000, "service": "api",
...                   "level": "error", "message": "db timeout after 30 s"}, 1_700_000_000_000)
>>> r.template_id, [(e.change, e.first_error) for e in r.events]
(1, [('created', True)])
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from drain3.drain import LogCluster

from monitoring.logs.batch import LogColumns, StoredColumns
from monitoring.logs.counts import ServiceCounts
from monitoring.logs.levels import SEVERITY, normalise_level
from monitoring.logs.records import (
    MIN_TIMESTAMP_MS,
    InvalidLog,
    LogEntry,
    LogLimits,
    check_service,
    normalise,
)
from monitoring.logs.templates import ServiceTemplates
from monitoring.metrics.budget import SeriesBudget
from monitoring.metrics.samples import Sample

CHECKPOINT_KEY = "\0checkpoint"
CHUNK_PREFIX = "\0s\0"  # + service \0 generation \0 index
STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)
DEFAULT_MAX_TEMPLATES = 1000
DEFAULT_MAX_SERVICES = 1000
DEFAULT_CHUNK_BYTES = 512 * 1024
StateRecords = list[tuple[str, bytes | None]]  # (key, value); None deletes
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


def chunk_key(service: str, gen: int, index: int) -> str:
    """Key of chunk ``index`` of generation ``gen`` of a service's state."""
    return f"{CHUNK_PREFIX}{service}\0{gen}\0{index}"


def parse_chunk_key(key: str) -> tuple[str, int, int] | None:
    """(service, generation, index) of a chunk key, None for another key.

    >>> parse_chunk_key(chunk_key("api", 3, 0))
    ('api', 3, 0)
    """
    if not key.startswith(CHUNK_PREFIX):
        return None
    try:
        service, gen, index = key[len(CHUNK_PREFIX) :].rsplit("\0", 2)
        return service, int(gen), int(index)
    except ValueError:
        return None


class _Service:
    __slots__ = ("applied_offset", "chunks", "counts", "deletable", "first_error",
                 "first_seen", "gen", "next_gen", "superseded", "templates")  # fmt: skip

    def __init__(self, templates: ServiceTemplates, counts: ServiceCounts) -> None:
        self.templates = templates
        self.counts = counts
        self.first_seen: dict[int, int] = {}
        self.first_error: dict[int, int] = {}
        self.applied_offset = -1
        self.gen = -1  # generation of the last manifest written (-1: none)
        self.chunks = 0  # its chunk count
        self.next_gen = 0
        self.superseded: list[str] = []  # chunk keys of older generations, to confirm
        self.deletable: list[str] = []  # chunk keys no written manifest points at


class PartitionLogs:
    """State and processing of one logs partition."""

    def __init__(
        self,
        window_ms: int = 10_000,
        limits: LogLimits = DEFAULT_LIMITS,
        max_templates: int | None = DEFAULT_MAX_TEMPLATES,
        max_template_chars: int = 1000,
        state_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_services: int | None = DEFAULT_MAX_SERVICES,
        budget: SeriesBudget | None = None,
    ) -> None:
        self.window_ms = window_ms
        self.max_services = max_services
        self.budget = budget  # the worker's bound, shared with its other partitions
        self.limits = limits
        self.max_templates = max_templates
        self.max_template_chars = max_template_chars
        self.state_chunk_bytes = state_chunk_bytes
        self.services: dict[str, _Service] = {}
        self.checkpoint_offset = -1
        self.last_offset = -1
        self.evictions = 0  # templates evicted so far (max_templates)
        self.restore_errors: list[str] = []  # services whose state could not be read
        self._changed: set[str] = set()
        self._orphans: list[str] = []  # chunk keys of services without a manifest
        self._gen_floor: dict[str, int] = {}  # first generation free for such a service

    @property
    def has_changes(self) -> bool:
        return (
            bool(self._changed)
            or self.last_offset > self.checkpoint_offset
            or bool(self._orphans)
            or any(s.deletable for s in self.services.values())
        )

    def _admit(self, name: str) -> None:
        """Raise ``InvalidLog("cardinality")`` if a new service would pass ``max_services``."""
        if self.max_services is not None and len(self.services) >= self.max_services:
            raise InvalidLog(
                "cardinality",
                f"service {name[:100]!r} would be service {len(self.services) + 1} of this "
                f"partition, at most {self.max_services} (logs.max_services)",
            )
        if self.budget is not None and self.budget.room() <= 0:
            self.budget.refused += 1
            raise InvalidLog(
                "cardinality",
                f"service {name[:100]!r}: the worker holds {self.budget.used} services, "
                f"at most {self.budget.limit} (logs.max_services_per_worker)",
            )

    @property
    def series_count(self) -> int:
        """Services holding state (what a worker's budget counts)."""
        return len(self.services)

    def _new_service(self, name: str) -> _Service:
        svc = self.services[name] = _Service(
            ServiceTemplates(None, self.max_template_chars, self.max_templates),
            ServiceCounts(name, self.window_ms),
        )
        svc.next_gen = self._gen_floor.pop(name, 0)
        return svc

    def _evicted(self, svc: _Service) -> None:
        """Forget what the miner evicted (after the record's counting)."""
        gone = svc.templates.take_evicted()
        if gone:
            for tid in gone:
                svc.first_seen.pop(tid, None)
                svc.first_error.pop(tid, None)
            svc.counts.evict(gone)
            self.evictions += len(gone)

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
            self._admit(entry.service)
            svc = self._new_service(entry.service)
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
        self._evicted(svc)
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
        svc = self.services.get(service)
        try:
            if svc is None:
                check_service(service, self.limits)
                self._admit(service)
        except InvalidLog as err:
            return BatchProcessed(None, [], [], [(i, err) for i in range(n)])
        if svc is None:
            svc = self._new_service(service)
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
        self._evicted(svc)
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
    def checkpoint(self) -> tuple[StateRecords, bytes]:
        """State records (in write order) of the services changed since the last
        checkpoint and tombstones of chunks no written manifest needs, and the
        partition record (write it last). Every record is at most
        ``state_chunk_bytes`` plus its key and a small manifest."""
        records: StateRecords = []
        for name in sorted(self._changed):
            records += self._pack(name, self.services[name])
        self._changed.clear()
        for svc in self.services.values():
            if svc.deletable:
                records += [(k, None) for k in svc.deletable]
                svc.deletable = []
        records += [(k, None) for k in self._orphans]
        self._orphans = []
        self.checkpoint_offset = max(self.checkpoint_offset, self.last_offset)
        meta = json.dumps({"v": STATE_VERSION, "offset": self.checkpoint_offset}).encode()
        return records, meta

    def confirm(self) -> None:
        """Every checkpoint so far reached the topic: the chunks their manifests
        superseded may go (tombstoned by the next ``checkpoint``)."""
        for svc in self.services.values():
            if svc.superseded:
                svc.deletable += svc.superseded
                svc.superseded = []

    def _pack(self, name: str, svc: _Service) -> StateRecords:
        blob = json.dumps(
            {
                "v": STATE_VERSION,
                "counts": svc.counts.state(),
                "first_seen": {str(k): v for k, v in svc.first_seen.items()},
                "first_error": {str(k): v for k, v in svc.first_error.items()},
                "drain": svc.templates.snapshot().decode("ascii"),
            }
        ).encode()
        gen, size = svc.next_gen, self.state_chunk_bytes
        parts = [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]
        out: StateRecords = [(chunk_key(name, gen, i), p) for i, p in enumerate(parts)]
        manifest = {
            "v": STATE_VERSION, "gen": gen, "chunks": len(parts), "bytes": len(blob),
            "crc32": zlib.crc32(blob), "applied_offset": svc.applied_offset,
        }  # fmt: skip
        out.append((name, json.dumps(manifest).encode()))
        svc.superseded += [chunk_key(name, svc.gen, i) for i in range(svc.chunks)]
        svc.gen, svc.chunks, svc.next_gen = gen, len(parts), gen + 1
        return out

    def restore(self, meta: bytes | None, records: Iterable[tuple[str, bytes]]) -> None:
        """Rebuild from ``checkpoint`` output (the latest record per key, tombstoned
        keys absent). A service whose chunks do not match its manifest (which the
        write order rules out) starts empty and is named in ``restore_errors``."""
        if meta is not None:
            m = json.loads(meta)
            _check_version(m)
            self.checkpoint_offset = self.last_offset = int(m["offset"])
        manifests: dict[str, bytes] = {}
        chunks: dict[str, dict[tuple[int, int], bytes]] = {}
        for key, raw in records:
            parsed = parse_chunk_key(key)
            if parsed is None:
                manifests[key] = raw
            else:
                chunks.setdefault(parsed[0], {})[parsed[1:]] = raw
        for name, raw in manifests.items():
            st = json.loads(raw)
            _check_version(st)
            mine = chunks.pop(name, {})
            gens = [g for g, _ in mine]
            try:
                svc = self._restore_service(name, st, mine)
            except (ValueError, KeyError) as e:
                self.restore_errors.append(f"{name}: {e}")
                svc = self._new_service(name)
                svc.applied_offset = int(st.get("applied_offset", -1))
            svc.deletable = [chunk_key(name, g, i) for g, i in mine if g != svc.gen]
            svc.next_gen = max([svc.gen, *gens]) + 1
            self.services[name] = svc
            # not last_offset: a service's applied offset covers its own messages only
            # (a checkpoint cut short); raising the partition's from it made the next
            # checkpoint claim the other services' messages below it before they were
            # replayed, and they were skipped for good
        for name, mine in chunks.items():  # no manifest: a first checkpoint cut short
            self._orphans += [chunk_key(name, g, i) for g, i in mine]
            self._gen_floor[name] = max(g for g, _ in mine) + 1

    def _restore_service(
        self, name: str, st: dict[str, Any], chunks: dict[tuple[int, int], bytes]
    ) -> _Service:
        gen = -1
        if st["v"] >= 2:
            gen, n = int(st["gen"]), int(st["chunks"])
            blob = b"".join(chunks[(gen, i)] for i in range(n))
            if len(blob) != st["bytes"] or zlib.crc32(blob) != st["crc32"]:
                raise ValueError(f"generation {gen}: {len(blob)} bytes, CRC does not match")
            data = json.loads(blob)
            data["applied_offset"] = st["applied_offset"]
        else:
            data = st
        svc = _Service(
            ServiceTemplates.restore(
                data["drain"].encode("ascii"), self.max_template_chars, self.max_templates
            ),
            ServiceCounts.from_state(name, self.window_ms, data["counts"]),
        )
        svc.applied_offset = int(data["applied_offset"])
        svc.first_seen = {int(k): int(v) for k, v in data["first_seen"].items()}
        svc.first_error = {int(k): int(v) for k, v in data["first_error"].items()}
        if gen >= 0:
            svc.gen, svc.chunks = gen, int(st["chunks"])
        self._evicted(svc)  # a lower max_templates than the snapshot's
        return svc


def _check_version(state: dict[str, Any]) -> None:
    if state.get("v") not in READABLE_VERSIONS:
        raise ValueError(f"log agent state version {state.get('v')!r}, expected {STATE_VERSION}")
