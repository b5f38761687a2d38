"""Hot-path Avro for logs: decode ``LogRecord`` v1, encode ``StoredLog`` v1 by hand.

The log agent decodes every shipped record and encodes every stored one; fastavro
costs 8-17 µs a record for each because of its per-call overhead, these about 3-5 µs.
Both check (``same_layout``) that the schemas still have the layout they handle and
otherwise fall back to fastavro; tests compare them with fastavro on random records.

Invalid UTF-8 in a string is decoded with U+FFFD replacement characters, and
``DecodedLog.utf8_replaced`` says so.

>>> codec = AvroCodec.from_directory()
>>> data = codec.encode(LOG_RECORD, {"timestamp_ms": 5, "service": "api", "message": "hi"})
>>> LogDecoder(codec).decode(data).record["service"]
'api'
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, NamedTuple

import fastavro

from monitoring.wire.avro_bytes import (
    SMALL_LONGS,
    Malformed,
    avro_long,
    avro_string,
    avro_string_map,
    decode_utf8,
    read_long,
    read_string_map,
    read_texts,
    same_layout,
)
from monitoring.wire.codec import HEADER_LEN, MARKER, AvroCodec, DecodeError

LOG_RECORD = "monitoring.LogRecord"
STORED_LOG = "monitoring.StoredLog"
LOG_TEMPLATE = "monitoring.LogTemplate"
_STRINGS = ("service", "host", "level", "logger", "message", "trace_id", "span_id", "exception")
_MAP = {"type": "map", "values": "string"}
_RECORD_LAYOUT: dict[str, Any] = {
    "type": "record", "name": "LogRecord", "namespace": "monitoring",
    "fields": [{"name": "timestamp_ms", "type": "long"},
               *({"name": f, "type": "string"} for f in _STRINGS),
               {"name": "attributes", "type": _MAP}],
}  # fmt: skip
_STORED_LAYOUT: dict[str, Any] = {
    "type": "record", "name": "StoredLog", "namespace": "monitoring",
    "fields": [*({"name": f, "type": "long"} for f in ("event_id", "timestamp_ms", "observed_ms")),
               *({"name": f, "type": "string"} for f in ("service", "host", "level")),
               {"name": "severity", "type": "int"},
               *({"name": f, "type": "string"}
                 for f in ("logger", "message", "trace_id", "span_id", "exception")),
               {"name": "attributes", "type": _MAP},
               {"name": "template_id", "type": "long"}],
}  # fmt: skip


class DecodedLog(NamedTuple):
    """A decoded LogRecord (as the newest reader version) and whether U+FFFD replaced bytes."""

    record: dict[str, Any]
    utf8_replaced: bool


def _decode_v1(b: bytes) -> DecodedLog:
    """Decode a v1 body: ``read_texts`` over one latin-1 view of the message, invalid
    UTF-8 decoded with U+FFFD."""
    text = b.decode("latin-1")
    ts, start = read_long(b, HEADER_LEN)
    strings, i = read_texts(b, text, start, 8)
    replaced = not text[start:i].isascii() and bool(decode_utf8(strings, replace=True))
    attrs, i, replaced_attrs = read_string_map(b, text, i, replace=True)
    if i != len(b):
        raise DecodeError("trailing-bytes", f"{len(b) - i} bytes after a LogRecord body")
    service, host, level, logger, message, trace_id, span_id, exception = strings
    rec = {"timestamp_ms": ts, "service": service, "host": host, "level": level,
           "logger": logger, "message": message, "trace_id": trace_id, "span_id": span_id,
           "exception": exception, "attributes": attrs}  # fmt: skip
    return DecodedLog(rec, replaced or replaced_attrs)


class LogDecoder:
    """Decodes LogRecord events of any registered version; v1 by hand."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        reader = codec.latest(LOG_RECORD)
        self._reader = reader
        v1 = [v for v in codec.versions() if v.name == LOG_RECORD and v.version == 1]
        self._fast_header = (
            v1[0].header
            if v1 and reader.version == 1 and same_layout(_RECORD_LAYOUT, v1[0].parsed)
            else None
        )
        self._by_fp = {v.fingerprint: v for v in codec.versions()}

    def decode(self, data: bytes | None) -> DecodedLog:
        """Raises DecodeError (reasons as ``AvroCodec.decode``, plus ``wrong-record``)."""
        if isinstance(data, bytes) and data[:HEADER_LEN] == self._fast_header:
            try:
                return _decode_v1(data)
            except IndexError:
                raise DecodeError("truncated", "the LogRecord body ends early") from None
            except Malformed as e:
                raise DecodeError("bad-body", f"LogRecord: {e}") from None
        try:
            decoded = self.codec.decode(data)
        except DecodeError as e:
            if e.reason != "bad-body" or "UnicodeDecodeError" not in e.detail:
                raise
            return DecodedLog(self._lenient(data), True)
        if decoded.name != LOG_RECORD:
            raise DecodeError("wrong-record", f"{decoded.name} is not a LogRecord")
        return DecodedLog(decoded.record, False)

    def _lenient(self, data: Any) -> dict[str, Any]:
        assert isinstance(data, bytes) and data[:2] == MARKER
        writer = self._by_fp[int.from_bytes(data[2:10], "little")]
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        rec = fastavro.schemaless_reader(
            buf, writer.parsed, self._reader.parsed, handle_unicode_errors="replace"
        )
        if not isinstance(rec, dict) or writer.name != LOG_RECORD:
            raise DecodeError("wrong-record", f"{writer.name} is not a LogRecord")
        return rec


class StoredLogEncoder:
    """``encode(fields) -> bytes`` of a StoredLog record, fastavro's bytes exactly."""

    def __init__(self, codec: AvroCodec) -> None:
        sv = codec.latest(STORED_LOG)
        self.header = sv.header
        self.fast = same_layout(_STORED_LAYOUT, sv.parsed)
        self.codec = codec
        self._middle: dict[tuple[str, str, str, int, str], bytes] = {}
        self._maps: dict[tuple[tuple[str, str], ...], bytes] = {}

    def _map(self, attributes: Mapping[str, str]) -> bytes:
        """Bytes of an attribute map; small maps repeat a lot and are cached."""
        if len(attributes) > 4:
            return avro_string_map(attributes)
        key = tuple(attributes.items())
        b = self._maps.get(key)
        if b is None:
            if len(self._maps) > 10_000:
                self._maps.clear()
            b = self._maps[key] = avro_string_map(attributes)
        return b

    def encode(self, rec: Mapping[str, Any]) -> bytes:
        """Encode a StoredLog record (a mapping with every field)."""
        return self.encode_entry(
            rec["event_id"], rec["observed_ms"], rec["template_id"], rec["timestamp_ms"],
            rec["service"], rec["host"], rec["level"], rec["severity"], rec["logger"],
            rec["message"], rec["trace_id"], rec["span_id"], rec["exception"], rec["attributes"],
        )  # fmt: skip

    def encode_entry(
        self,
        event_id: int,
        observed_ms: int,
        template_id: int,
        timestamp_ms: int,
        service: str,
        host: str,
        level: str,
        severity: int,
        logger: str,
        message: str,
        trace_id: str,
        span_id: str,
        exception: str,
        attributes: Mapping[str, str],
    ) -> bytes:
        """Encode from fields: ``encode_entry(id, observed, template, *log_entry)``."""
        if not self.fast:
            return self.codec.encode(
                STORED_LOG,
                {"event_id": event_id, "observed_ms": observed_ms, "template_id": template_id,
                 "timestamp_ms": timestamp_ms, "service": service, "host": host, "level": level,
                 "severity": severity, "logger": logger, "message": message,
                 "trace_id": trace_id, "span_id": span_id, "exception": exception,
                 "attributes": dict(attributes)},
            )  # fmt: skip
        ident = (service, host, level, severity, logger)
        middle = self._middle.get(ident)
        if middle is None:
            if len(self._middle) > 10_000:
                self._middle.clear()
            middle = self._middle[ident] = b"".join(
                (avro_string(ident[0]), avro_string(ident[1]), avro_string(ident[2]),
                 avro_long(ident[3]), avro_string(ident[4]))
            )  # fmt: skip
        return b"".join(
            (
                self.header,
                avro_long(event_id),
                avro_long(timestamp_ms),
                avro_long(observed_ms),
                middle,
                avro_string(message),
                avro_string(trace_id),
                avro_string(span_id),
                avro_string(exception),
                self._map(attributes) if attributes else b"\x00",
                SMALL_LONGS[template_id] if 0 <= template_id < 64 else avro_long(template_id),
            )
        )
