"""Batched log contracts: ``LogBatch`` v1 in (shippers), ``StoredLogBatch`` v1 out (store).

One message carries many lines of one service and host as parallel arrays
(schemas/log_batch.v1.avsc, log_stored_batch.v1.avsc), so the log agent pays the
per-message costs (Kafka, Faust, Avro header, skip checks) once per batch. The hot
paths are written by hand as ``log_encoding`` does for single records: fastavro reads
arrays item by item through a file object (about 200 ns a long, 400 ns a string),
these slice one latin-1 view of the message instead. Each checks (``same_layout``)
that the schema still has the layout it handles and otherwise falls back to fastavro;
tests compare both with fastavro.

Invalid UTF-8 in a line's strings: that line is decoded with U+FFFD replacements and
listed in ``LogColumns.utf8_replaced`` (all lines if it is the service or host).

>>> codec = AvroCodec.from_directory()
>>> data = LogBatchEncoder(codec).encode(
...     "api", "h1", [(5, "info", "", "hi", "", "", "", {"k": "v"})])
>>> LogBatchDecoder(codec).decode(data).attributes
{0: {'k': 'v'}}
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, TypeGuard

import fastavro

from monitoring.logs.batch import LogColumns, StoredColumns
from monitoring.wire.avro_bytes import (
    Malformed,
    avro_long,
    avro_long_array,
    avro_string,
    avro_string_array,
    decode_utf8,
    read_long,
    read_long_array,
    read_string_array,
    read_texts,
    same_layout,
)
from monitoring.wire.codec import HEADER_LEN, AvroCodec, DecodeError

LOG_BATCH = "monitoring.LogBatch"
STORED_LOG_BATCH = "monitoring.StoredLogBatch"
# (timestamp_ms, level, logger, message, trace_id, span_id, exception, attributes)
BatchLine = tuple[int, str, str, str, str, str, str, Mapping[str, str]]

_STRS = {"type": "array", "items": "string"}
_LONGS = {"type": "array", "items": "long"}
_INTS = {"type": "array", "items": "int"}
_COLUMNS = ("levels", "loggers", "messages", "trace_ids", "span_ids", "exceptions")
_BATCH_LAYOUT: dict[str, Any] = {
    "type": "record", "name": "LogBatch", "namespace": "monitoring",
    "fields": [{"name": "service", "type": "string"}, {"name": "host", "type": "string"},
               {"name": "timestamp_ms", "type": "long"},
               {"name": "timestamp_offsets_ms", "type": _LONGS},
               *({"name": f, "type": _STRS} for f in _COLUMNS),
               {"name": "attribute_lines", "type": _INTS},
               {"name": "attribute_keys", "type": _STRS},
               {"name": "attribute_values", "type": _STRS}],
}  # fmt: skip
_STORED_LAYOUT: dict[str, Any] = {
    "type": "record", "name": "StoredLogBatch", "namespace": "monitoring",
    "fields": [{"name": "service", "type": "string"}, {"name": "host", "type": "string"},
               {"name": "observed_ms", "type": "long"}, {"name": "event_id_base", "type": "long"},
               {"name": "line_indexes", "type": _INTS}, {"name": "timestamp_ms", "type": "long"},
               {"name": "timestamp_offsets_ms", "type": _LONGS},
               {"name": "levels", "type": _STRS}, {"name": "severities", "type": _INTS},
               *({"name": f, "type": _STRS} for f in _COLUMNS[1:]),
               {"name": "template_ids", "type": _LONGS},
               {"name": "attribute_lines", "type": _INTS},
               {"name": "attribute_keys", "type": _STRS},
               {"name": "attribute_values", "type": _STRS}],
}  # fmt: skip


class RawArrays(NamedTuple):
    """The encoded parts of a decoded LogBatch message, for columns that pass through
    the agent unchanged: ``StoredLogBatchEncoder`` copies them when the stored column
    is the very list decoded from them (same layout in both schemas)."""

    cols: LogColumns
    time: bytes  # timestamp_ms and timestamp_offsets_ms
    loggers: bytes
    messages: bytes
    trace_ids: bytes
    span_ids: bytes
    exceptions: bytes
    attributes: bytes  # attribute_lines, attribute_keys, attribute_values


# -- reading ------------------------------------------------------------------------
class LogBatchDecoder:
    """Decodes LogBatch messages of any registered version into ``LogColumns``."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        versions = [v for v in codec.versions() if v.name == LOG_BATCH]
        self.headers = {v.header for v in versions}
        reader = codec.latest(LOG_BATCH)
        self._reader = reader
        v1 = [v for v in versions if v.version == 1]
        self._fast_header = (
            v1[0].header
            if v1 and reader.version == 1 and same_layout(_BATCH_LAYOUT, v1[0].parsed)
            else None
        )
        self._by_header = {v.header: v for v in versions}

    def accepts(self, data: Any) -> TypeGuard[bytes]:
        """Whether ``data`` is a LogBatch (of any registered version) by its header."""
        return isinstance(data, bytes) and data[:HEADER_LEN] in self.headers

    def decode(self, data: bytes) -> LogColumns:
        """Raises DecodeError: ``truncated``, ``trailing-bytes``, ``bad-body`` or
        ``bad-batch`` (arrays of different lengths, more than 4096 lines, ...)."""
        return self.decode_raw(data)[0]

    def decode_raw(self, data: bytes) -> tuple[LogColumns, RawArrays | None]:
        """``decode``, and the encoded arrays of the message for ``StoredLogBatchEncoder``
        to copy where a column passes through unchanged (None if it must not: another
        version, or invalid UTF-8 replaced)."""
        if data[:HEADER_LEN] == self._fast_header:
            try:
                cols, raw = self._decode_v1(data)
            except IndexError:
                raise DecodeError("truncated", "the LogBatch body ends early") from None
            except Malformed as e:
                raise DecodeError("bad-body", f"LogBatch: {e}") from None
        else:
            cols, raw = self._fallback(data), None
        problem = cols.check()
        if problem:
            raise DecodeError("bad-batch", f"LogBatch of service {cols.service[:80]!r}: {problem}")
        return cols, raw

    def _decode_v1(self, b: bytes) -> tuple[LogColumns, RawArrays | None]:
        text = b.decode("latin-1")
        ascii = text.isascii() or text[HEADER_LEN:].isascii()
        resource, i = read_texts(b, text, HEADER_LEN, 2)
        everywhere = bool(decode_utf8(resource, replace=True))
        service, host = resource
        at = [i]  # where each part starts: time, levels, loggers, ..., attributes
        base, i = read_long(b, i)
        offsets, i = read_long_array(b, i)
        timestamps = [base + d for d in offsets]
        at.append(i)
        levels, i = read_string_array(b, text, i)
        at.append(i)
        loggers, i = read_string_array(b, text, i)
        at.append(i)
        messages, i = read_string_array(b, text, i)
        at.append(i)
        traces, i = read_string_array(b, text, i)
        at.append(i)
        spans, i = read_string_array(b, text, i)
        at.append(i)
        exceptions, i = read_string_array(b, text, i)
        at.append(i)
        lines, i = read_long_array(b, i)
        keys, i = read_string_array(b, text, i)
        values, i = read_string_array(b, text, i)
        bad: list[int] = []  # lines with invalid UTF-8, decoded with U+FFFD
        bad_keys: list[int] = []
        bad_values: list[int] = []
        if not ascii:  # items that are not ASCII decoded again, as UTF-8
            for column in (levels, loggers, messages, traces, spans, exceptions):
                bad += decode_utf8(column, replace=True)
            bad_keys = decode_utf8(keys, replace=True)
            bad_values = decode_utf8(values, replace=True)
        if i != len(b):
            raise DecodeError("trailing-bytes", f"{len(b) - i} bytes after a LogBatch body")
        attrs = _attributes(service, lines, keys, values)
        replaced: frozenset[int] = frozenset()
        if everywhere:
            replaced = frozenset(range(len(timestamps)))
        elif bad or bad_keys or bad_values:
            replaced = frozenset(bad).union(lines[j] for j in bad_keys + bad_values)
        cols = LogColumns(
            service, host, timestamps, levels, loggers, messages, traces, spans, exceptions,
            attrs, replaced,
        )  # fmt: skip
        if replaced:
            return cols, None
        return cols, RawArrays(
            cols, b[at[0] : at[1]], b[at[2] : at[3]], b[at[3] : at[4]], b[at[4] : at[5]],
            b[at[5] : at[6]], b[at[6] : at[7]], b[at[7] : i],
        )  # fmt: skip

    def _fallback(self, data: bytes) -> LogColumns:
        """fastavro (another version, or another layout), resolved to the newest."""
        writer = self._by_header[data[:HEADER_LEN]]
        replaced = False
        rec: Any
        try:
            rec = self.codec.decode(data).record
        except DecodeError as e:
            if e.reason != "bad-body" or "UnicodeDecodeError" not in e.detail:
                raise
            buf = io.BytesIO(data)
            buf.seek(HEADER_LEN)
            rec = fastavro.schemaless_reader(
                buf, writer.parsed, self._reader.parsed, handle_unicode_errors="replace"
            )
            assert isinstance(rec, dict)
            replaced = True
        base = rec["timestamp_ms"]
        timestamps = [base + d for d in rec["timestamp_offsets_ms"]]
        n = len(timestamps)
        attrs = _attributes(
            rec["service"], rec["attribute_lines"], rec["attribute_keys"], rec["attribute_values"]
        )
        return LogColumns(
            rec["service"], rec["host"], timestamps, rec["levels"], rec["loggers"],
            rec["messages"], rec["trace_ids"], rec["span_ids"], rec["exceptions"],
            attrs, frozenset(range(n)) if replaced else frozenset(),
        )  # fmt: skip


def _attributes(
    service: str, lines: list[int], keys: list[str], values: list[str]
) -> dict[int, dict[str, str]]:
    if not (len(lines) == len(keys) == len(values)):
        raise DecodeError(
            "bad-batch",
            f"LogBatch of service {service[:80]!r}: {len(lines)} attribute_lines, "
            f"{len(keys)} attribute_keys, {len(values)} attribute_values",
        )
    attrs: dict[int, dict[str, str]] = {}
    for line, k, v in zip(lines, keys, values, strict=True):
        a = attrs.get(line)
        if a is None:
            attrs[line] = {k: v}
        else:
            a[k] = v
    return attrs


# -- writing ------------------------------------------------------------------------
def _enc_attributes(attrs: Mapping[int, Mapping[str, str]]) -> bytes:
    """The three sparse attribute arrays, lines ascending."""
    lines, keys, values = _sparse_lists(attrs)
    if not lines:
        return b"\x00\x00\x00"
    return b"".join((avro_long_array(lines), avro_string_array(keys), avro_string_array(values)))


class LogBatchEncoder:
    """``encode(service, host, lines) -> bytes`` of a LogBatch, fastavro's bytes exactly."""

    def __init__(self, codec: AvroCodec) -> None:
        sv = codec.latest(LOG_BATCH)
        self.header = sv.header
        self.fast = same_layout(_BATCH_LAYOUT, sv.parsed)
        self.codec = codec

    def encode(self, service: str, host: str, lines: Iterable[BatchLine]) -> bytes:
        """``lines``: (timestamp_ms, level, logger, message, trace_id, span_id,
        exception, attributes) each."""
        rows = list(lines)
        columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)] if rows else []
        ts, levels, loggers, messages, traces, spans, excs, attrs = columns or [[]] * 8
        sparse = {i: a for i, a in enumerate(attrs) if a}
        base = ts[0] if ts else 0
        offsets = [t - base for t in ts]
        if not self.fast:
            lines_, keys, values = _sparse_lists(sparse)
            return self.codec.encode(
                LOG_BATCH,
                {"service": service, "host": host, "timestamp_ms": base,
                 "timestamp_offsets_ms": offsets, "levels": levels,
                 "loggers": loggers, "messages": messages, "trace_ids": traces,
                 "span_ids": spans, "exceptions": excs, "attribute_lines": lines_,
                 "attribute_keys": keys, "attribute_values": values},
            )  # fmt: skip
        return b"".join(
            (self.header, avro_string(service), avro_string(host), avro_long(base),
             avro_long_array(offsets),
             avro_string_array(levels), avro_string_array(loggers), avro_string_array(messages),
             avro_string_array(traces), avro_string_array(spans), avro_string_array(excs),
             _enc_attributes(sparse))
        )  # fmt: skip


def _sparse_lists(
    attrs: Mapping[int, Mapping[str, str]],
) -> tuple[list[int], list[str], list[str]]:
    lines, keys, values = [], [], []
    for line in sorted(attrs):
        for k, v in attrs[line].items():
            lines.append(line)
            keys.append(k)
            values.append(v)
    return lines, keys, values


class StoredLogBatchEncoder:
    """``encode(stored, event_id_base, observed_ms) -> bytes`` of a StoredLogBatch."""

    def __init__(self, codec: AvroCodec) -> None:
        sv = codec.latest(STORED_LOG_BATCH)
        self.header = sv.header
        self.fast = same_layout(_STORED_LAYOUT, sv.parsed)
        self.codec = codec
        self._strings: dict[tuple[str, str], bytes] = {}

    def encode(
        self,
        s: StoredColumns,
        event_id_base: int,
        observed_ms: int,
        source: RawArrays | None = None,
    ) -> bytes:
        """The StoredLogBatch of ``s``; a column that is the very list decoded from
        ``source`` is copied from its bytes rather than encoded again."""
        ts = s.timestamps_ms
        if not self.fast:
            base = ts[0] if ts else 0
            lines, keys, values = _sparse_lists(s.attributes)
            return self.codec.encode(
                STORED_LOG_BATCH,
                {"service": s.service, "host": s.host, "observed_ms": observed_ms,
                 "event_id_base": event_id_base, "line_indexes": s.line_indexes,
                 "timestamp_ms": base, "timestamp_offsets_ms": [t - base for t in ts],
                 "levels": s.levels, "severities": s.severities, "loggers": s.loggers,
                 "messages": s.messages, "trace_ids": s.trace_ids, "span_ids": s.span_ids,
                 "exceptions": s.exceptions, "template_ids": s.template_ids,
                 "attribute_lines": lines, "attribute_keys": keys, "attribute_values": values},
            )  # fmt: skip
        resource = self._strings.get((s.service, s.host))
        if resource is None:
            if len(self._strings) > 10_000:
                self._strings.clear()
            resource = avro_string(s.service) + avro_string(s.host)
            self._strings[(s.service, s.host)] = resource
        c = source.cols if source is not None else None
        if source is not None and ts is source.cols.timestamps_ms:
            time_bytes = source.time
        else:
            base = ts[0] if ts else 0
            time_bytes = avro_long(base) + avro_long_array([t - base for t in ts])

        def strings(name: str, values: list[str]) -> bytes:
            if source is not None and values is getattr(c, name):
                return getattr(source, name)
            return avro_string_array(values)

        return b"".join(
            (self.header, resource, avro_long(observed_ms), avro_long(event_id_base),
             avro_long_array(s.line_indexes), time_bytes, avro_string_array(s.levels),
             avro_long_array(s.severities), strings("loggers", s.loggers),
             strings("messages", s.messages), strings("trace_ids", s.trace_ids),
             strings("span_ids", s.span_ids), strings("exceptions", s.exceptions),
             avro_long_array(s.template_ids),
             source.attributes if source is not None and s.attributes is source.cols.attributes
             else _enc_attributes(s.attributes))
        )  # fmt: skip
