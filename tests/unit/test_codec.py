"""Avro single-object encoding: header, fingerprints, schema evolution, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import given
from hypothesis import strategies as st

from monitoring.wire.codec import MARKER, AvroCodec, DecodeError, rabin_fingerprint

CODEC = AvroCodec.from_directory()
SAMPLE = "monitoring.MetricSample"


def test_rabin_fingerprint_matches_the_spec_vector_and_fastavro() -> None:
    # The Avro spec's CRC-64-AVRO of the canonical form of "int"
    assert rabin_fingerprint(b'"int"') == 0x7275D51A3F395C8F
    for v in CODEC.versions():
        canonical = to_parsing_canonical_form(v.parsed)
        # fastavro prints the little-endian bytes as hex
        assert fingerprint(canonical, "CRC-64-AVRO") == v.fingerprint.to_bytes(8, "little").hex()


def test_header_is_marker_plus_little_endian_fingerprint() -> None:
    data = CODEC.encode(SAMPLE, {"name": "up", "value": 1.0, "timestamp_ms": 5})
    latest = CODEC.latest(SAMPLE)
    assert data[:2] == MARKER == b"\xc3\x01"
    assert int.from_bytes(data[2:10], "little") == latest.fingerprint


def test_event_written_with_v1_is_read_as_the_current_version() -> None:
    v1 = next(v for v in CODEC.versions() if v.name == SAMPLE and v.version == 1)
    assert CODEC.latest(SAMPLE).version > 1
    data = CODEC.encode(
        SAMPLE, {"name": "up", "value": 2.5, "timestamp_ms": 7, "labels": {"a": "b"}}, version=1
    )
    assert int.from_bytes(data[2:10], "little") == v1.fingerprint
    decoded = CODEC.decode(data)
    assert decoded.version == 1  # the writer's version
    # resolved to the newest schema: the fields v1 lacks take their defaults
    assert decoded.record == {
        "name": "up", "value": 2.5, "timestamp_ms": 7, "labels": {"a": "b"},
        "kind": "GAUGE", "unit": "", "source": "",
    }  # fmt: skip


def test_a_writer_in_another_language_needs_only_the_avsc(tmp_path: Path) -> None:
    """Encode from the .avsc with plain fastavro, as any Avro library would."""
    raw = json.loads((Path(__file__).parents[2] / "schemas" / "aggregate.v1.avsc").read_text())
    parsed = fastavro.parse_schema(raw)
    fp = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    rec = {
        "series": "up", "name": "up", "labels": {}, "window_ms": 10, "window_start_ms": 0,
        "window_end_ms": 10, "count": 1, "sum": 1.0, "min": 1.0, "max": 1.0, "mean": 1.0,
        "last": 1.0, "p50": 1.0, "p90": 1.0, "p99": 1.0, "closed_by": "idle",
    }  # fmt: skip
    path = tmp_path / "event.bin"
    with path.open("wb") as f:
        f.write(b"\xc3\x01" + bytes.fromhex(fp))
        fastavro.schemaless_writer(f, parsed, rec)
    # resolved to the newest version: the fields v1 lacks (Aggregate v2's) are null
    nulls = {"first": None, "increase": None, "resets": None}
    assert CODEC.decode(path.read_bytes()).record == {**rec, **nulls}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "not-bytes"),
        (b"", "truncated"),
        (b"\xc3\x01abc", "truncated"),
        (b"\x00\x01" + bytes(8) + b"x", "bad-marker"),
        (b"\xc3\x01" + bytes(8) + b"x", "unknown-fingerprint"),
    ],
)
def test_bad_headers_name_the_problem(data: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as e:
        CODEC.decode(data)
    assert e.value.reason == reason


def test_truncated_and_padded_bodies() -> None:
    good = CODEC.encode(SAMPLE, {"name": "up", "value": 1.0, "timestamp_ms": 5})
    with pytest.raises(DecodeError) as e:
        CODEC.decode(good[:-3])
    assert e.value.reason == "bad-body"
    with pytest.raises(DecodeError) as e:
        CODEC.decode(good + b"\x00")
    assert e.value.reason == "trailing-bytes"


@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        CODEC.decode(MARKER + CODEC.latest(SAMPLE).header[2:] + data)
    except DecodeError as e:
        assert e.reason in {"bad-body", "trailing-bytes"}


@given(
    st.text(max_size=30),
    st.floats(allow_nan=True),
    st.integers(-(2**63), 2**63 - 1),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5),
)
def test_round_trip(name: str, value: float, ts: int, labels: dict[str, str]) -> None:
    rec = {"name": name, "value": value, "timestamp_ms": ts, "labels": labels,
           "kind": "COUNTER", "unit": "s", "source": "x"}  # fmt: skip
    out = CODEC.decode(CODEC.encode(SAMPLE, rec)).record
    got = out.pop("value")
    assert got == value or (math.isnan(value) and math.isnan(got))
    rec.pop("value")
    assert out == rec
