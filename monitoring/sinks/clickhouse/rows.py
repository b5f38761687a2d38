"""Rows for the ClickHouse tables, built column by column from decoded events.

``series_id`` is the table key of a series: the first 8 bytes of blake2b of the series
key, the same in every process and language (``hashlib.blake2b(key, digest_size=8)``,
big-endian).

>>> series_id('cpu_usage{host="a"}')
11714087398754349081
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from monitoring.metrics.samples import Sample, SampleBatch

SAMPLE_COLUMNS = ("series_id", "ts", "value")
SERIES_COLUMNS = (
    "series_id",
    "series",
    "name",
    "labels",
    "kind",
    "unit",
    "first_seen",
    "last_seen",
)
AGGREGATE_COLUMNS = (
    "series_id",
    "series",
    "name",
    "labels",
    "window_ms",
    "window_start",
    "window_end",
    "count",
    "sum",
    "min",
    "max",
    "mean",
    "last",
    "p50",
    "p90",
    "p99",
    "closed_by",
    "version",
    "first",
    "increase",
    "resets",
)
ANOMALY_COLUMNS = (
    "series_id",
    "series",
    "name",
    "labels",
    "window_ms",
    "ts",
    "value",
    "score",
    "threshold",
    "detector",
    "field",
    "signals",
    "expected",
    "lower",
    "upper",
    "components",
)
_AGG_FIELDS = ("count", "sum", "min", "max", "mean", "last", "p50", "p90", "p99")


# -- what a column can hold ------------------------------------------------------------
# Avro ints are signed 32 or 64 bits; the columns they feed (infra/clickhouse/migrations)
# are narrower or unsigned, and DateTime64(3) holds 1900-01-01 .. 2299-12-31 only (a
# value beyond is stored but breaks every read of it). Inclusive bounds:
UINT8 = ("UInt8", 0, 2**8 - 1)
UINT16 = ("UInt16", 0, 2**16 - 1)
UINT32 = ("UInt32", 0, 2**32 - 1)
UINT64 = ("UInt64", 0, 2**64 - 1)
DATETIME64 = ("DateTime64(3)", -2_208_988_800_000, 10_413_791_999_999)
# time_ms of a delivery is both its `time` and its UInt64 `version`
DATETIME64_VERSION = ("DateTime64(3) and UInt64", 0, DATETIME64[2])
Bound = tuple[str, int, int]

# record field -> bound, per record name, for every int field the store writes; an
# array field is checked element-wise. StoredLogBatch's derived values (timestamp +
# offsets, event_id_base | index) are checked by ``check_log_batch``.
RANGES: dict[str, dict[str, Bound]] = {
    "monitoring.Aggregate": {
        "window_ms": UINT32,
        "window_start_ms": DATETIME64,
        "window_end_ms": DATETIME64,
        "count": UINT64,
        "resets": UINT64,
    },
    "monitoring.Anomaly": {"window_ms": UINT32, "timestamp_ms": DATETIME64},
    "monitoring.Delivery": {
        "attempt": UINT16,
        "time_ms": DATETIME64_VERSION,
        "tier": UINT16,
        "http_status": UINT16,
    },
    "monitoring.Alert": {
        "starts_at_ms": DATETIME64,
        "ends_at_ms": DATETIME64,
        "evaluated_at_ms": DATETIME64,
    },
    "monitoring.StoredLog": {
        "event_id": UINT64,
        "timestamp_ms": DATETIME64,
        "observed_ms": DATETIME64,
        "severity": UINT8,
        "template_id": UINT32,
    },
    "monitoring.StoredLogBatch": {
        "observed_ms": DATETIME64,
        "event_id_base": UINT64,
        "line_indexes": UINT64,
        "severities": UINT8,
        "template_ids": UINT32,
    },
    "monitoring.LogTemplate": {
        "template_id": UINT32,
        "timestamp_ms": DATETIME64,
        "first_seen_ms": DATETIME64,
        "first_error_ms": DATETIME64,
        "size": UINT64,
    },
}


class OutOfRange(ValueError):
    """A field whose value its column cannot hold (reason ``out-of-range``).

    >>> str(OutOfRange("count", -1, UINT64))
    'count = -1 does not fit UInt64 [0, 18446744073709551615]'
    """

    reason = "out-of-range"

    def __init__(self, field: str, value: int, bound: Bound) -> None:
        kind, lo, hi = bound
        super().__init__(f"{field} = {value} does not fit {kind} [{lo}, {hi}]")
        self.field = field


def check_ranges(name: str, record: Mapping[str, Any]) -> None:
    """Raise OutOfRange for the first int field of ``record`` (an Avro record called
    ``name``) that its column cannot hold; records without int columns pass."""
    for field, bound in RANGES.get(name, {}).items():
        value = record.get(field)
        if value is None:  # a null of a nullable column
            continue
        _, lo, hi = bound
        if isinstance(value, list):
            if value and not (lo <= min(value) and max(value) <= hi):
                bad = next(v for v in value if not lo <= v <= hi)
                raise OutOfRange(f"{field}[{value.index(bad)}]", bad, bound)
        elif not lo <= value <= hi:
            raise OutOfRange(field, value, bound)
    if name == "monitoring.StoredLogBatch":
        check_log_batch(record)


def check_log_batch(record: Mapping[str, Any]) -> None:
    """The columns a StoredLogBatch's rows derive: timestamp_ms + each offset, and
    event_id_base | each line index."""
    base, offsets = record["timestamp_ms"], record["timestamp_offsets_ms"]
    _, lo, hi = DATETIME64
    stamps = [base + d for d in offsets] if offsets else []
    if stamps and not (lo <= min(stamps) and max(stamps) <= hi):
        i = next(i for i, t in enumerate(stamps) if not lo <= t <= hi)
        raise OutOfRange(f"timestamp_ms + timestamp_offsets_ms[{i}]", stamps[i], DATETIME64)


def series_id(series_key: str) -> int:
    """Stable unsigned 64-bit id of a series key (blake2b, digest_size=8, big-endian)."""
    return int.from_bytes(hashlib.blake2b(series_key.encode(), digest_size=8).digest(), "big")


class Columns:
    """Column-oriented buffer of one table: ``add`` appends a row, ``take`` empties it.

    ``mark(source)`` attributes the rows added since the last mark to ``source`` (the
    message they came from), which ``source_of(row)`` gives back: a row the table
    refuses is dead-lettered as its message.

    >>> b = Columns(("a",))
    >>> b.add(1); b.mark("m1"); b.add(2); b.add(3); b.mark("m2")
    >>> [b.source_of(i) for i in range(3)], b.rows(1, 3)
    (['m1', 'm2', 'm2'], [[2, 3]])
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)
        self.data: list[list[Any]] = [[] for _ in self.names]
        self.ends: list[int] = []  # row count after each marked source
        self.sources: list[Any] = []

    def __len__(self) -> int:
        return len(self.data[0])

    def add(self, *row: Any) -> None:
        for col, v in zip(self.data, row, strict=True):
            col.append(v)

    def mark(self, source: Any) -> None:
        """The rows added since the last mark came from ``source``."""
        n = len(self)
        if n > (self.ends[-1] if self.ends else 0):
            self.ends.append(n)
            self.sources.append(source)

    def source_of(self, row: int) -> Any:
        """The source marked for ``row``; None if it was never marked."""
        i = bisect.bisect_right(self.ends, row)
        return self.sources[i] if i < len(self.sources) else None

    def rows(self, lo: int, hi: int) -> list[Any]:
        """Rows ``lo`` to ``hi`` (excluded) in the form of ``columns()``."""
        return [c[lo:hi] for c in self.columns()]

    def _swap(self) -> list[list[Any]]:
        data, self.data = self.data, [[] for _ in self.names]
        return data

    def take(self) -> list[list[Any]]:
        self.ends, self.sources = [], []
        return self._swap()

    def columns(self) -> list[Any]:
        """The buffered columns as ``Client.insert(column_oriented=True)`` takes them."""
        return self.data


class SampleColumns(Columns):
    """The samples table's buffer: rows added one at a time (``data``, as ``Columns``)
    and numpy chunks of whole batches (``add_chunk``), kept in arrival order.

    >>> out = SampleColumns()
    >>> out.add(7, 1_000, 0.5)
    >>> out.add_chunk(np.array([9], np.uint64), np.array([2_000]), np.array([1.5]))
    >>> sid, ts, val = out.columns()
    >>> len(out), sid.tolist(), ts, val.tolist()
    (2, [7, 9], [1000, 2000], [0.5, 1.5])
    """

    def __init__(self) -> None:
        super().__init__(SAMPLE_COLUMNS)
        self.chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.chunk_rows = 0

    def __len__(self) -> int:
        return self.chunk_rows + len(self.data[0])

    def add_chunk(self, series_ids: np.ndarray, timestamps_ms: np.ndarray,
                  values: np.ndarray) -> None:  # fmt: skip
        """Append rows as uint64, int64 and float64 arrays of one length (not copied)."""
        if len(self.data[0]):
            self._seal()
        self.chunks.append((series_ids, timestamps_ms, values))
        self.chunk_rows += len(series_ids)

    def _seal(self) -> None:
        """Turn the rows added one at a time into a chunk (after the earlier chunks)."""
        sid, ts, val = self._swap()
        self.chunks.append(
            (np.array(sid, np.uint64), np.array(ts, np.int64), np.array(val, np.float64))
        )
        self.chunk_rows += len(sid)

    def columns(self) -> list[Any]:
        """Lists while no chunk was added (as ``Columns``); else series_id and value as
        numpy arrays and ts as a list of ints (what clickhouse-connect's DateTime64
        writer takes), every row in the order it was added."""
        if not self.chunks:
            return self.data
        if len(self.data[0]):
            self._seal()
        if len(self.chunks) > 1:  # once: a retried flush reuses the joined chunk
            sid, ts, val = (np.concatenate(c) for c in zip(*self.chunks, strict=True))
            self.chunks = [(sid, ts, val)]
        sid, ts, val = self.chunks[0]
        return [sid, ts.tolist(), val]

    def take(self) -> list[list[Any]]:
        """Empty the buffer; returns the rows added one at a time since the last chunk."""
        self.chunks, self.chunk_rows = [], 0
        return super().take()


class SeriesIds:
    """Memoised series key -> series_id, and when each series' row is due again.

    A series row (``series`` table: first and last seen) is written for the first sample
    of a series this process sees, and again for its first sample at least
    ``refresh_ms`` (event time) after the last row written, with the latest timestamp
    of its batch as ``last_seen``: the table's ``max(last_seen)`` then lags a live
    series by at most ``refresh_ms`` plus a batch. Both maps are emptied when they pass
    ``max_bytes`` (estimated): a forgotten id is hashed again, a forgotten series row
    written again (the ``series`` table merges it).
    """

    def __init__(self, max_bytes: int = 64 << 20, refresh_ms: int = 60_000) -> None:
        self._ids: dict[str, int] = {}
        self.due: dict[int, int] = {}  # series_id -> event time its row is due again
        self.max_bytes = max_bytes
        self.refresh_ms = refresh_ms
        self._bytes = 0

    def __call__(self, key: str) -> int:
        sid = self._ids.get(key)
        if sid is None:
            cost = 200 + len(key)  # the entry and its key, the id in ``due``
            if self._bytes + cost > self.max_bytes:
                self._ids.clear()
                self.due.clear()
                self._bytes = 0
            sid = self._ids[key] = series_id(key)
            self._bytes += cost
        return sid

    def many(self, keys: Iterable[str]) -> list[int]:
        """The ids of ``keys``, in order."""
        get = self._ids.get
        return [get(k) or self(k) for k in keys]


def add_samples(
    samples: Iterable[Sample], ids: SeriesIds, out: Columns, series_out: Columns
) -> int:
    """Append samples (and the series rows due, as ``add_sample_batch`` writes them:
    see ``SeriesIds``); return how many."""
    sid_col, ts_col, val_col = out.data
    span: dict[int, list[Any]] = {}  # series_id -> [first sample, min ts, max ts]
    n = 0
    for s in samples:
        sid = ids(s.series)
        ts = s.timestamp_ms
        sid_col.append(sid)
        ts_col.append(ts)
        val_col.append(s.value)
        n += 1
        seen = span.get(sid)
        if seen is None:
            span[sid] = [s, ts, ts]
        elif ts < seen[1]:
            seen[1] = ts
        elif ts > seen[2]:
            seen[2] = ts
    due = ids.due
    for sid, (s, lo, hi) in span.items():
        d = due.get(sid)
        if d is None or hi >= d:
            due[sid] = hi + ids.refresh_ms
            series_out.add(sid, s.series, s.name, dict(s.labels), s.kind, s.unit, lo, hi)
    return n


def add_sample_batch(
    batch: SampleBatch, ids: SeriesIds, out: SampleColumns, series_out: Columns
) -> int:
    """``add_samples`` for a batch as columns: the same rows, with a series id looked up
    once per series of the batch, not once per sample; return how many samples."""
    index = batch.series_index
    if not len(index):
        return 0
    used = np.zeros(len(batch.series), bool)
    used[index] = True
    slots = np.flatnonzero(used).tolist()
    infos = [info for s in slots if (info := batch.series[s]) is not None]
    if len(infos) != len(slots):
        slot = next(s for s in slots if batch.series[s] is None)
        at = int(np.flatnonzero(index == slot)[0])
        raise ValueError(f"sample {at} points at series {slot}, which is not valid")
    sid_list = ids.many([info.key for info in infos])
    sids = np.zeros(len(batch.series), np.uint64)
    sids[slots] = np.array(sid_list, np.uint64)
    stamps = np.asarray(batch.timestamps_ms, np.int64)
    due = ids.due
    dues = [due.get(sid) for sid in sid_list]
    latest = int(stamps.max())
    if any(d is None or latest >= d for d in dues):  # series rows due, by first sample
        first = np.unique(index, return_index=True)[1]  # per slot of ``slots``
        lo = np.full(len(batch.series), np.iinfo(np.int64).max)
        hi = np.full(len(batch.series), np.iinfo(np.int64).min)
        np.minimum.at(lo, index, stamps)
        np.maximum.at(hi, index, stamps)
        span: dict[int, list[int]] = {}  # series_id -> [k, min ts, max ts], first seen first
        for k in np.argsort(first).tolist():  # a key listed twice in a batch: one series
            sid, slot = sid_list[k], slots[k]
            seen = span.get(sid)
            if seen is None:
                span[sid] = [k, int(lo[slot]), int(hi[slot])]
            else:
                seen[1], seen[2] = min(seen[1], int(lo[slot])), max(seen[2], int(hi[slot]))
        for sid, (k, first_ts, last) in span.items():
            d = due.get(sid)
            if d is None or last >= d:
                due[sid] = last + ids.refresh_ms
                info = infos[k]
                series_out.add(sid, info.key, info.name, dict(info.labels), info.kind,
                               info.unit, first_ts, last)  # fmt: skip
    out.add_chunk(sids[index], stamps, np.asarray(batch.values, np.float64))
    return len(index)


def add_aggregate(record: Mapping[str, Any], version: int, ids: SeriesIds, out: Columns) -> None:
    """Append one decoded Aggregate record; ``version`` orders re-emissions of a window.
    The counter fields (v2) are None (NULL) in a v1 record the codec resolved, or absent."""
    key = record["series"]
    out.add(
        ids(key),
        key,
        record["name"],
        dict(record["labels"]),
        record["window_ms"],
        record["window_start_ms"],
        record["window_end_ms"],
        *(record[f] for f in _AGG_FIELDS),
        record["closed_by"],
        version,
        record.get("first"),
        record.get("increase"),
        record.get("resets"),
    )


def add_anomaly(record: Mapping[str, Any], ids: SeriesIds, out: Columns) -> None:
    """Append one decoded Anomaly record (any version: the codec resolves older ones to
    the newest, whose defaults give an old event no band and no components)."""
    key = record["series"]
    out.add(
        ids(key),
        key,
        record["name"],
        dict(record["labels"]),
        record["window_ms"],
        record["timestamp_ms"],
        record["value"],
        record["score"],
        record["threshold"],
        record["detector"],
        record["field"],
        dict(record["signals"]),
        record["expected"],
        record["lower"],
        record["upper"],
        list(record["components"]),
    )


DELIVERY_COLUMNS = (
    "delivery_id",
    "attempt",
    "time",
    "receiver",
    "integration",
    "channel",
    "target",
    "group_key",
    "tier",
    "status",
    "fingerprints",
    "outcome",
    "http_status",
    "error",
    "duration_ms",
    "version",
)


def add_delivery(record: Mapping[str, Any], out: Columns) -> None:
    """Append one decoded Delivery record (the notifier's delivery log)."""
    out.add(
        *(record[c] for c in DELIVERY_COLUMNS[:2]),
        record["time_ms"],
        *(record[c] for c in DELIVERY_COLUMNS[3:11]),
        record["outcome"],
        record["http_status"],
        record["error"],
        record["duration_ms"],
        record["time_ms"],
    )


ALERT_EVENT_COLUMNS = (
    "fingerprint",
    "status",
    "alertname",
    "labels",
    "annotations",
    "starts_at",
    "ends_at",
    "evaluated_at",
    "severity",
    "value",
    "rule",
)


def add_alert_event(record: Mapping[str, Any], out: Columns) -> None:
    """Append one decoded Alert record (a state change of the ``alerts`` topic)."""
    labels = dict(record["labels"])
    out.add(
        record["fingerprint"],
        record["status"],
        labels.get("alertname", ""),
        labels,
        dict(record["annotations"]),
        record["starts_at_ms"],
        record["ends_at_ms"],
        record["evaluated_at_ms"],
        record["severity"],
        record["value"],
        record["rule"],
    )


ACK_COLUMNS = ("time", "fingerprint", "group_key", "by", "comment")


def add_ack(
    time_ms: int, fingerprint: str, group_key: str, by: str, comment: str, out: Columns
) -> None:
    """Append one acknowledgement (an ``acknowledge`` command, at its record's time)."""
    out.add(time_ms, fingerprint, group_key, by, comment)


LOG_COLUMNS = (
    "service",
    "timestamp",
    "event_id",
    "observed",
    "host",
    "level",
    "severity",
    "logger",
    "message",
    "trace_id",
    "span_id",
    "exception",
    "attributes",
    "template_id",
)
LOG_TEMPLATE_COLUMNS = (
    "service",
    "template_id",
    "template",
    "change",
    "level",
    "last_event",
    "first_seen",
    "first_error",
    "size",
)


def add_log(record: Mapping[str, Any], out: Columns) -> None:
    """Append one decoded StoredLog record (the log agent's output)."""
    out.add(
        record["service"],
        record["timestamp_ms"],
        record["event_id"],
        record["observed_ms"],
        record["host"],
        record["level"],
        record["severity"],
        record["logger"],
        record["message"],
        record["trace_id"],
        record["span_id"],
        record["exception"],
        dict(record["attributes"]),
        record["template_id"],
    )


_LOG_BATCH_COLUMNS = ("levels", "severities", "loggers", "messages", "trace_ids", "span_ids",
                      "exceptions")  # fmt: skip


def add_log_batch(record: Mapping[str, Any], out: Columns) -> None:
    """Append the rows of one decoded StoredLogBatch (one row per kept line; see
    schemas/log_stored_batch.v1.avsc). Raises ValueError if its arrays disagree."""
    n = len(record["line_indexes"])
    for f in ("timestamp_offsets_ms", "template_ids", *_LOG_BATCH_COLUMNS):
        if len(record[f]) != n:
            raise ValueError(f"StoredLogBatch: {len(record[f])} {f} for {n} rows")
    attrs: dict[int, dict[str, str]] = {}
    for line, k, v in zip(
        record["attribute_lines"], record["attribute_keys"], record["attribute_values"],
        strict=True,
    ):  # fmt: skip
        attrs.setdefault(line, {})[k] = v
    base, ids = record["timestamp_ms"], record["event_id_base"]
    data = out.data  # LOG_COLUMNS order
    data[0] += [record["service"]] * n
    data[1] += [base + d for d in record["timestamp_offsets_ms"]]
    data[2] += [ids | i for i in record["line_indexes"]]
    data[3] += [record["observed_ms"]] * n
    data[4] += [record["host"]] * n
    for col, f in zip(data[5:12], _LOG_BATCH_COLUMNS, strict=True):
        col += record[f]
    data[12] += [attrs.get(i, {}) for i in range(n)]
    data[13] += record["template_ids"]


def add_log_template(record: Mapping[str, Any], out: Columns) -> None:
    """Append one decoded LogTemplate event."""
    out.add(
        *(record[c] for c in LOG_TEMPLATE_COLUMNS[:5]),
        record["timestamp_ms"],
        record["first_seen_ms"],
        record["first_error_ms"],
        record["size"],
    )
