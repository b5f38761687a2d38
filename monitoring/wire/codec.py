"""Avro single-object encoding with fastavro, resolving writer schemas by fingerprint.

Wire format (Avro specification, "Single-object encoding"): the two marker bytes
``C3 01``, the writer schema's 64-bit CRC-64-AVRO (Rabin) fingerprint of its Parsing
Canonical Form in little-endian order, then the binary-encoded body. Every version of
every schema in ``schemas/`` is registered, so a reader finds the writer schema of
any event by its fingerprint and resolves it to the newest version of that record
(the reader schema). Producers in any language need only the .avsc files.

>>> codec = AvroCodec.from_directory()
>>> data = codec.encode("monitoring.LogRecord", {"timestamp_ms": 1, "service": "api",
...                                              "message": "hi"})
>>> data[:2]
b'\\xc3\\x01'
>>> codec.decode(data).record["service"]
'api'
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
from fastavro.schema import to_parsing_canonical_form

MARKER = b"\xc3\x01"
HEADER_LEN = 10
_VERSIONED = re.compile(r"^(?P<stem>.+)\.v(?P<version>\d+)\.avsc$", re.ASCII)

_EMPTY64 = 0xC15D213AA4D7A795
_FP_TABLE: list[int] = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY64 & -(_fp & 1))
    _FP_TABLE.append(_fp)


def rabin_fingerprint(canonical: bytes) -> int:
    """CRC-64-AVRO of a schema's Parsing Canonical Form, as the spec defines it.

    Written out (eight lines, from the specification) so the wire header does not
    depend on how a library prints fingerprints; a test checks it against fastavro.
    """
    fp = _EMPTY64
    for b in canonical:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ b) & 0xFF]
    return fp


class DecodeError(ValueError):
    """An event could not be decoded; ``reason`` is a short machine-friendly cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SchemaVersion:
    """One registered schema version."""

    name: str
    version: int
    fingerprint: int
    parsed: Any
    path: Path

    @property
    def header(self) -> bytes:
        return MARKER + self.fingerprint.to_bytes(8, "little")


class Decoded(NamedTuple):
    """A decoded event: the record's full name, the writer version, and the record."""

    name: str
    version: int
    record: dict[str, Any]


def default_schema_dir() -> Path:
    """The project's ``schemas/`` folder (next to the package)."""
    return Path(__file__).resolve().parents[2] / "schemas"


class AvroCodec:
    """Encodes with the newest version of a record; decodes any registered version."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_fp: dict[int, SchemaVersion] = {}
        self._latest: dict[str, SchemaVersion] = {}
        for v in versions:
            if v.fingerprint in self._by_fp:
                other = self._by_fp[v.fingerprint]
                raise ValueError(f"{v.path} has the same canonical form as {other.path}")
            self._by_fp[v.fingerprint] = v
            cur = self._latest.get(v.name)
            if cur is None or v.version > cur.version:
                self._latest[v.name] = v

    @classmethod
    def from_directory(cls, directory: Path | None = None) -> AvroCodec:
        """Register every ``<stem>.v<N>.avsc`` file in ``directory``."""
        directory = directory or default_schema_dir()
        versions = []
        for path in sorted(directory.glob("*.avsc")):
            m = _VERSIONED.match(path.name)
            if not m:
                raise ValueError(f"{path}: schema files are named <stem>.v<N>.avsc")
            raw = json.loads(path.read_text())
            parsed: Any = fastavro.parse_schema(raw)
            canonical = to_parsing_canonical_form(parsed).encode()
            versions.append(
                SchemaVersion(
                    name=parsed["name"],
                    version=int(m.group("version")),
                    fingerprint=rabin_fingerprint(canonical),
                    parsed=parsed,
                    path=path,
                )
            )
        return cls(versions)

    def latest(self, name: str) -> SchemaVersion:
        """The newest registered version of record ``name`` (e.g. ``monitoring.Aggregate``)."""
        try:
            return self._latest[name]
        except KeyError:
            raise KeyError(f"no schema registered for {name!r}") from None

    def versions(self) -> list[SchemaVersion]:
        return list(self._by_fp.values())

    def encode(self, name: str, record: dict[str, Any], version: int | None = None) -> bytes:
        """Single-object encode ``record`` with the newest (or the given) version of ``name``."""
        sv = self.latest(name)
        if version is not None and version != sv.version:
            sv = next(v for v in self._by_fp.values() if v.name == name and v.version == version)
        buf = io.BytesIO()
        buf.write(sv.header)
        fastavro.schemaless_writer(buf, sv.parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes | None) -> Decoded:
        """Decode one event, resolving its writer schema to the newest reader version.

        Raises DecodeError with reason ``not-bytes`` (a null Kafka value),
        ``truncated``, ``bad-marker``, ``unknown-fingerprint``, ``bad-body`` or
        ``trailing-bytes``.
        """
        if not isinstance(data, bytes):
            raise DecodeError("not-bytes", f"value is {type(data).__name__}, not bytes")
        if len(data) < HEADER_LEN:
            raise DecodeError("truncated", f"{len(data)} bytes, header needs {HEADER_LEN}")
        if data[:2] != MARKER:
            raise DecodeError("bad-marker", f"first bytes {data[:2].hex()} are not c301")
        fp = int.from_bytes(data[2:10], "little")
        writer = self._by_fp.get(fp)
        if writer is None:
            raise DecodeError("unknown-fingerprint", f"{fp:016x} is in no kept schema version")
        reader = self._latest[writer.name]
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            record = fastavro.schemaless_reader(
                buf, writer.parsed, None if reader is writer else reader.parsed
            )
        except Exception as e:  # fastavro raises many types on corrupt input
            raise DecodeError("bad-body", f"{writer.name} v{writer.version}: {e!r}") from e
        if buf.tell() != len(data):
            raise DecodeError(
                "trailing-bytes", f"{len(data) - buf.tell()} bytes after a {writer.name} body"
            )
        if not isinstance(record, dict):
            raise DecodeError("bad-body", f"{writer.name} did not decode to a record")
        return Decoded(writer.name, writer.version, record)
