"""Aggregate v2 (schemas/aggregate.v2.avsc): the counter fields, and compatibility both
ways with v1.

A v1 record (checked in as bytes, as the v1 writer wrote it) decodes with the counter
fields None, through the codec and the hand decoder, and lands in the store's row layout
with NULLs. A v2 record read with the v1 schema as the reader schema (a consumer built
against v1 that was given the v2 .avsc to find the writer by fingerprint) is exactly the
v1 record: Avro schema resolution skips the added fields.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest

from monitoring.metrics.aggregator import Aggregate
from monitoring.sinks.clickhouse.rows import AGGREGATE_COLUMNS, Columns, add_aggregate
from monitoring.wire.aggregate_encoding import AGGREGATE, AggregateDecoder, AggregateEncoder
from monitoring.wire.codec import HEADER_LEN, AvroCodec, DecodeError

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CODEC = AvroCodec.from_directory()
# CODEC.encode(AGGREGATE, V1_RECORD, version=1): what a v1 writer put on the topic
V1_EVENT = bytes.fromhex(
    "c301e5110f41ba2a08013e687474705f72657175657374735f746f74616c7b636f64653d22323030227d26"
    "687474705f72657175657374735f746f74616c0208636f64650632303000a09c0180a0abfef962a0bcacfe"
    "f96206000000000080734000000000000059400000000000805b400000000000005a400000000000805b40"
    "00000000008059400000000000805b400000000000805b401277617465726d61726b"
)
V1_RECORD = {
    "series": 'http_requests_total{code="200"}', "name": "http_requests_total",
    "labels": {"code": "200"}, "window_ms": 10_000, "window_start_ms": 1_700_000_000_000,
    "window_end_ms": 1_700_000_010_000, "count": 3, "sum": 312.0, "min": 100.0, "max": 110.0,
    "mean": 104.0, "last": 110.0, "p50": 102.0, "p90": 110.0, "p99": 110.0,
    "closed_by": "watermark",
}  # fmt: skip
COUNTERS = {"first": 100.0, "increase": 14.5, "resets": 1}


def parsed(version: int) -> object:
    return fastavro.parse_schema(json.loads((SCHEMAS / f"aggregate.v{version}.avsc").read_text()))


def test_v2_is_the_newest_and_v1_is_kept() -> None:
    assert CODEC.latest(AGGREGATE).version == 2
    assert {v.version for v in CODEC.versions() if v.name == AGGREGATE} == {1, 2}
    assert CODEC.encode(AGGREGATE, V1_RECORD, version=1) == V1_EVENT  # v1 unchanged


def test_a_v1_record_reads_with_no_counter_fields() -> None:
    dec = CODEC.decode(V1_EVENT)
    assert dec.version == 1
    assert dec.record == {**V1_RECORD, "first": None, "increase": None, "resets": None}
    a = AggregateDecoder(CODEC).decode(V1_EVENT)
    assert a == Aggregate(**V1_RECORD)
    assert (a.first, a.increase, a.resets) == (None, None, None)


def test_a_v1_record_is_stored_with_nulls() -> None:
    cols = Columns(AGGREGATE_COLUMNS)
    add_aggregate(CODEC.decode(V1_EVENT).record, 5, lambda key: 7, cols)
    row = dict(zip(AGGREGATE_COLUMNS, [c[0] for c in cols.data], strict=True))
    assert (row["first"], row["increase"], row["resets"]) == (None, None, None)
    assert (row["series_id"], row["last"], row["version"]) == (7, 110.0, 5)


def test_a_v2_record_reads_as_v1_for_a_v1_reader() -> None:
    data = AggregateEncoder(CODEC).encode(Aggregate(**V1_RECORD, **COUNTERS))
    assert data[:HEADER_LEN] == CODEC.latest(AGGREGATE).header
    old = fastavro.schemaless_reader(io.BytesIO(data[HEADER_LEN:]), parsed(2), parsed(1))
    assert old == V1_RECORD


def test_a_v2_record_round_trips_its_counter_fields() -> None:
    a = Aggregate(**V1_RECORD, **COUNTERS)
    data = AggregateEncoder(CODEC).encode(a)
    assert CODEC.decode(data).record == {**V1_RECORD, **COUNTERS}
    assert AggregateDecoder(CODEC).decode(data) == a
    cols = Columns(AGGREGATE_COLUMNS)
    add_aggregate(CODEC.decode(data).record, 5, lambda key: 7, cols)
    row = dict(zip(AGGREGATE_COLUMNS, [c[0] for c in cols.data], strict=True))
    assert (row["first"], row["increase"], row["resets"]) == (100.0, 14.5, 1)


@pytest.mark.parametrize("tag", [b"\x04", b"\x01"])
def test_a_bad_union_branch_is_a_bad_body(tag: bytes) -> None:
    data = AggregateEncoder(CODEC).encode(Aggregate(**V1_RECORD))
    assert data.endswith(b"\x00\x00\x00")
    with pytest.raises(DecodeError) as e:
        AggregateDecoder(CODEC).decode(data[:-1] + tag)
    assert e.value.reason == "bad-body"


def test_a_varint_cut_in_the_usual_tail_is_a_bad_body() -> None:
    data = AggregateEncoder(CODEC).encode(Aggregate(**V1_RECORD, **COUNTERS))
    assert data[-20:-19] == b"\x02" and data[-1:] == b"\x02"  # the usual tail, resets 1
    with pytest.raises(DecodeError) as e:
        AggregateDecoder(CODEC).decode(data[:-1] + b"\x82")  # continued past the end
    assert e.value.reason == "bad-body"
    with pytest.raises(DecodeError):
        CODEC.decode(data[:-1] + b"\x82")  # fastavro agrees
