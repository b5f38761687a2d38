"""Rows for the ClickHouse tables, built column by column from decoded events.

``series_id`` is the table key of a series: the first 8 bytes of blake2b of the series
key, the same in every process and language (``hashlib.blake2b(key, digest_size=8)``,
big-endian).

>>> series_id('cpu_usage{host="a"}')
11714087398754349081
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from monitoring.metrics.samples import Sample

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
)
_AGG_FIELDS = ("count", "sum", "min", "max", "mean", "last", "p50", "p90", "p99")


def series_id(series_key: str) -> int:
    """Stable unsigned 64-bit id of a series key (blake2b, digest_size=8, big-endian)."""
    return int.from_bytes(hashlib.blake2b(series_key.encode(), digest_size=8).digest(), "big")


class Columns:
    """Column-oriented buffer of one table: ``add`` appends a row, ``take`` empties it."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)
        self.data: list[list[Any]] = [[] for _ in self.names]

    def __len__(self) -> int:
        return len(self.data[0])

    def add(self, *row: Any) -> None:
        for col, v in zip(self.data, row, strict=True):
            col.append(v)

    def take(self) -> list[list[Any]]:
        data, self.data = self.data, [[] for _ in self.names]
        return data


class SeriesIds:
    """Memoised series key -> series_id, remembering which series were written."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.written: set[int] = set()

    def __call__(self, key: str) -> int:
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = series_id(key)
        return sid


def add_samples(
    samples: Iterable[Sample], ids: SeriesIds, out: Columns, series_out: Columns
) -> int:
    """Append samples (and first sightings of their series); return how many."""
    sid_col, ts_col, val_col = out.data
    written = ids.written
    n = 0
    for s in samples:
        sid = ids(s.series)
        sid_col.append(sid)
        ts_col.append(s.timestamp_ms)
        val_col.append(s.value)
        n += 1
        if sid not in written:
            written.add(sid)
            series_out.add(
                sid,
                s.series,
                s.name,
                dict(s.labels),
                s.kind,
                s.unit,
                s.timestamp_ms,
                s.timestamp_ms,
            )
    return n


def add_aggregate(record: Mapping[str, Any], version: int, ids: SeriesIds, out: Columns) -> None:
    """Append one decoded Aggregate record; ``version`` orders re-emissions of a window."""
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
    )


def add_anomaly(record: Mapping[str, Any], ids: SeriesIds, out: Columns) -> None:
    """Append one decoded Anomaly record."""
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
