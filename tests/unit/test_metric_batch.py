"""MetricBatchDecoder (numpy columns) against fastavro: random records, hand-made
multi-block and negative-count arrays, every prefix, malformed bodies, fallbacks."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitoring.wire.avro_bytes import avro_long, avro_string
from monitoring.wire.codec import HEADER_LEN, AvroCodec, DecodeError, default_schema_dir
from monitoring.wire.metric_batch import (
    KIND_SYMBOLS,
    MetricBatchDecoder,
    MetricColumns,
)

BATCH = "monitoring.MetricBatch"
CODEC = AvroCodec.from_directory()
DECODER = MetricBatchDecoder(CODEC)
HEADER = CODEC.latest(BATCH).header
I64 = st.integers(-(2**63), 2**63 - 1)


def widths(k: int) -> st.SearchStrategy[int]:
    """Integers whose zig-zag varint takes exactly ``k`` bytes (1-10)."""
    lo = 0 if k == 1 else 1 << (7 * (k - 1))
    hi = (1 << min(7 * k, 64)) - 1
    return st.integers(lo, hi).map(lambda z: (z >> 1) ^ -(z & 1))


def long_lists(max_size: int = 150) -> st.SearchStrategy[list[int]]:
    """Any longs, or all of one varint width (the decoder's uniform-width path), or
    realistic ms timestamps."""
    return st.one_of(
        st.lists(I64, max_size=max_size),
        st.integers(1, 10).flatmap(lambda k: st.lists(widths(k), max_size=max_size)),
        st.lists(st.integers(1_600_000_000_000, 1_900_000_000_000), max_size=max_size),
        st.lists(st.integers(-5000, 5000), max_size=max_size),
    )


records = st.fixed_dictionaries(
    {
        "source": st.text(max_size=20),
        "series": st.lists(st.text(max_size=70), max_size=80),
        "kinds": st.one_of(
            st.lists(st.sampled_from(KIND_SYMBOLS), max_size=80),
            st.integers(0, 80).flatmap(
                lambda n: st.sampled_from(KIND_SYMBOLS).map(lambda k: [k] * n)
            ),
        ),
        "units": st.lists(st.sampled_from(["", "", "seconds", "bytes", "µs"]), max_size=80),
        "series_index": st.one_of(
            st.lists(st.integers(-(2**31), 2**31 - 1), max_size=150),
            st.lists(st.integers(0, 9000), max_size=150),
        ),
        "timestamps_ms": long_lists(),
        "values": st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=150),
    }
)


def assert_columns(cols: MetricColumns, rec: dict[str, Any]) -> None:
    """``cols`` holds exactly ``rec`` (doubles compared bit for bit)."""
    assert isinstance(cols, MetricColumns)
    assert cols.source == rec["source"]
    assert cols.series == rec["series"]
    assert cols.kinds == rec["kinds"]
    assert cols.units == rec["units"]
    for name, dtype in (("series_index", np.int64), ("timestamps_ms", np.int64)):
        arr = getattr(cols, name)
        assert arr.dtype == dtype and arr.ndim == 1
        assert arr.tolist() == rec[name], name
    assert cols.values.dtype == np.float64 and cols.values.flags.c_contiguous
    expected = np.array(rec["values"], dtype=np.float64)
    assert cols.values.view(np.uint64).tolist() == expected.view(np.uint64).tolist()


def slow_decoder(codec: AvroCodec = CODEC) -> MetricBatchDecoder:
    d = MetricBatchDecoder(codec)
    d._fast_header = None  # as if the layout had changed: fastavro
    return d


def test_the_current_schema_takes_the_hand_written_path() -> None:
    assert DECODER._fast_header == HEADER


@settings(max_examples=examples(300), deadline=None)
@given(records)
@example(
    {"source": "", "series": [], "kinds": [], "units": [], "series_index": [],
     "timestamps_ms": [], "values": []}
)  # fmt: skip
@example(
    {"source": "é", "series": ["", "a{b=\"ü\"}", "x" * 64, "y" * 9000], "kinds": ["COUNTER"],
     "units": ["", "€"], "series_index": [-(2**31), 2**31 - 1, 0, 63, 64, -65],
     "timestamps_ms": [2**63 - 1, -(2**63), 0, -1, 1 << 62, -(1 << 62)],
     "values": [math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, sys.float_info.max]}
)  # fmt: skip
def test_decodes_what_fastavro_wrote_as_fastavro_reads_it(rec: dict[str, Any]) -> None:
    data = CODEC.encode(BATCH, rec)
    cols = DECODER.decode(data)
    assert_columns(cols, rec)
    assert_columns(cols, CODEC.decode(data).record)  # fastavro reads the same
    assert_columns(slow_decoder().decode(data), rec)  # and so does the fallback


@pytest.mark.parametrize("k", range(1, 11))
def test_every_varint_width_at_its_bounds(k: int) -> None:
    lo = 0 if k == 1 else 1 << (7 * (k - 1))
    hi = (1 << min(7 * k, 64)) - 1
    zs = [lo, hi, lo + 1, hi - 1, (lo + hi) // 2]
    longs = [(z >> 1) ^ -(z & 1) for z in zs]
    assert all(len(avro_long(x)) == k for x in longs)
    for ts in (longs, longs * 30, [0, *longs], [*longs, 5], [2**63 - 1, *longs, -(2**63)]):
        rec = {"source": "s", "series": ["a"], "kinds": [], "units": [],
               "series_index": [], "timestamps_ms": ts, "values": []}  # fmt: skip
        assert_columns(DECODER.decode(CODEC.encode(BATCH, rec)), rec)


# -- hand-made arrays: several blocks, negative counts with byte sizes -------------
def array(items: Sequence[bytes], cuts: Sequence[int], negative: Sequence[bool]) -> bytes:
    """An Avro array of encoded ``items`` in blocks split at ``cuts``; a block whose
    ``negative`` flag is set has a negative count followed by its byte size."""
    bounds = sorted({0, len(items), *(c for c in cuts if 0 < c < len(items))})
    out = []
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        body = b"".join(items[a:b])
        if negative[k % len(negative)] if negative else False:
            out.append(avro_long(-(b - a)) + avro_long(len(body)))
        else:
            out.append(avro_long(b - a))
        out.append(body)
    return b"".join(out) + b"\x00"


def hand_made(rec: dict[str, Any], cuts: list[int], negative: list[bool]) -> bytes:
    def arr(items: list[bytes]) -> bytes:
        return array(items, cuts, negative)

    return b"".join(
        (HEADER, avro_string(rec["source"]),
         arr([avro_string(s) for s in rec["series"]]),
         arr([avro_long(KIND_SYMBOLS.index(k)) for k in rec["kinds"]]),
         arr([avro_string(s) for s in rec["units"]]),
         arr([avro_long(x) for x in rec["series_index"]]),
         arr([avro_long(x) for x in rec["timestamps_ms"]]),
         arr([struct.pack("<d", v) for v in rec["values"]]))
    )  # fmt: skip


@settings(max_examples=examples(200), deadline=None)
@given(records, st.lists(st.integers(0, 150), max_size=6), st.lists(st.booleans(), max_size=4))
def test_arrays_in_several_blocks_and_with_byte_sizes(
    rec: dict[str, Any], cuts: list[int], negative: list[bool]
) -> None:
    data = hand_made(rec, cuts, negative)
    assert_columns(DECODER.decode(data), rec)
    assert_columns(slow_decoder().decode(data), rec)  # fastavro reads the same


def test_hand_made_blocks_by_example() -> None:
    rec = {"source": "src", "series": ["a", "bb", "ccc"], "kinds": ["GAUGE", "SUMMARY", "UNTYPED"],
           "units": ["", "s", ""], "series_index": [0, 1, 2, 2, 1000, -3],
           "timestamps_ms": [1_700_000_000_000, 1_700_000_000_001, -1, 2**62, 0, 5],
           "values": [1.0, -2.5, math.inf, 0.0, -0.0, 3.0]}  # fmt: skip
    one_per_block = hand_made(rec, list(range(1, 7)), [True, False])
    assert b"\x01\x04\x02a\x02\x04bb" in one_per_block  # count -1, 2 bytes, "a"; count 1, "bb"
    assert_columns(DECODER.decode(one_per_block), rec)
    assert_columns(DECODER.decode(hand_made(rec, [2], [True])), rec)


# -- malformed input -----------------------------------------------------------------
def messages() -> list[bytes]:
    rec = {"source": "node-7", "series": ["up", "é" * 40, "x" * 70], "kinds": ["COUNTER"] * 3,
           "units": ["", "bytes", ""], "series_index": [0, 1, 2, 70, -9000],
           "timestamps_ms": [1_700_000_000_000, 2**63 - 1, -(2**63), 0, 1],
           "values": [0.5, math.nan, -0.0, 1e300, 2.0]}  # fmt: skip
    uniform = dict(rec, timestamps_ms=[1_700_000_000_000 + k for k in range(5)])
    ones = dict(rec, series_index=[0] * 5, kinds=["GAUGE", "COUNTER", "SUMMARY"])
    return [
        CODEC.encode(BATCH, rec),
        CODEC.encode(BATCH, uniform),
        CODEC.encode(BATCH, ones),
        hand_made(rec, [1, 2], [True]),
    ]


@pytest.mark.parametrize("data", messages())
def test_every_strict_prefix_is_truncated(data: bytes) -> None:
    DECODER.decode(data)
    for k in range(len(data)):
        with pytest.raises(DecodeError) as e:
            DECODER.decode(data[:k])
        assert e.value.reason == "truncated", (k, e.value)


def body(**parts: bytes) -> bytes:
    """A v1 message whose fields default to an empty string / empty arrays."""
    fields = ("source", "series", "kinds", "units", "series_index", "timestamps_ms", "values")
    return HEADER + b"".join(parts.get(f, b"\x00") for f in fields)


TEN_BYTES_MAX = avro_long(2**63 - 1)
ELEVEN = b"\x80" * 10 + b"\x00"  # zero, padded to 11 bytes


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        (body(source=b"\x01"), "bad-body", "negative string length"),
        (body(series=b"\x02\x03\x00"), "bad-body", "negative string length"),
        (body(series=b"\x02\x81\x01" + b"x" * 64 + b"\x00"), "bad-body", "negative string length"),
        (body(series=b"\x02" + avro_long(-(2**40)) + b"\x00"), "bad-body", "negative string"),
        (body(series=b"\x02\x02\xff\x00"), "bad-body", "invalid UTF-8"),
        (body(source=b"\x04\xc3\x28"), "bad-body", "invalid UTF-8"),
        (body(units=b"\x04\x02a\x04\xe2\x82\x00"), "bad-body", "invalid UTF-8"),
        (body(kinds=b"\x02\x0a\x00"), "bad-body", "5 is not a MetricKind"),
        (body(kinds=b"\x04\x00\x01\x00"), "bad-body", "-1 is not a MetricKind"),
        (body(kinds=b"\x02\x80\x01\x00"), "bad-body", "64 is not a MetricKind"),
        (body(series_index=b"\x02" + ELEVEN + b"\x00"), "bad-body", "longer than 10 bytes"),
        (body(timestamps_ms=b"\x04\x02" + ELEVEN + b"\x00"), "bad-body", "longer than 10"),
        (body(timestamps_ms=b"\x02" + b"\x80" * 40), "bad-body", "longer than 10 bytes"),
        (body(series=ELEVEN), "bad-body", "longer than 10 bytes"),
        (body(timestamps_ms=b"\x02" + b"\xff" * 9 + b"\x02\x00"), "bad-body", "beyond 64 bits"),
        (body(timestamps_ms=b"\x04\x00" + b"\xff" * 9 + b"\x7f\x00"), "bad-body", "beyond 64"),
        (body(values=b"\x04" + bytes(15)), "truncated", "values"),
        (body(values=b"\x03\x10" + bytes(8)), "truncated", "values"),
        (body(timestamps_ms=avro_long(2**40)), "truncated", "timestamps_ms"),
        (body(series=avro_long(-5)), "truncated", ""),
        (body(values=b"\x02" + bytes(8) + b"\x00") + b"\x00", "trailing-bytes", "1 bytes"),
        (HEADER, "truncated", ""),
        (b"\xc3\x01", "truncated", ""),
        (b"\x00" * 12, "bad-marker", ""),
        (b"\xc3\x01" + bytes(8) + b"\x00", "unknown-fingerprint", ""),
    ],
)
def test_malformed_input_raises_decode_error_with_a_reason(
    data: bytes, reason: str, words: str
) -> None:
    with pytest.raises(DecodeError) as e:
        DECODER.decode(data)
    assert e.value.reason == reason
    assert words in str(e.value)


def test_ten_byte_varints_at_64_bits_are_read() -> None:
    data = body(timestamps_ms=b"\x04" + TEN_BYTES_MAX + b"\xff" * 9 + b"\x01\x00")
    assert DECODER.decode(data).timestamps_ms.tolist() == [2**63 - 1, -(2**63)]


def test_trailing_bytes_match_the_codec() -> None:
    data = CODEC.encode(BATCH, {"series": ["a"], "series_index": [0], "timestamps_ms": [1],
                                "values": [1.0]}) + b"\x00"  # fmt: skip
    for decoder in (DECODER, slow_decoder()):
        with pytest.raises(DecodeError) as e:
            decoder.decode(data)
        assert e.value.reason == "trailing-bytes"
    with pytest.raises(DecodeError) as e:
        CODEC.decode(data)
    assert e.value.reason == "trailing-bytes"


def test_other_records_and_non_bytes_are_refused() -> None:
    sample = CODEC.encode("monitoring.MetricSample", {"name": "up", "value": 1.0,
                                                      "timestamp_ms": 5})  # fmt: skip
    assert not DECODER.accepts(sample)
    with pytest.raises(DecodeError) as e:
        DECODER.decode(sample)
    assert e.value.reason == "not-metric-batch" and "MetricSample" in str(e.value)
    with pytest.raises(DecodeError) as e:
        DECODER.decode(None)  # type: ignore[arg-type]
    assert e.value.reason == "not-bytes"
    assert DECODER.accepts(CODEC.encode(BATCH, {"series": [], "series_index": [],
                                                "timestamps_ms": [], "values": []}))  # fmt: skip
    for other in (None, "text", b"", HEADER[:-1], bytearray(HEADER)):
        assert not DECODER.accepts(other)


@settings(max_examples=examples(400), deadline=None)
@given(
    st.sampled_from(messages()),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_corrupt_bytes_raise_decode_error_or_decode_as_fastavro_does(
    data: bytes, changes: list[tuple[int, int]]
) -> None:
    """Past the header, any byte changed: a DecodeError, or the columns fastavro reads
    (fastavro accepts more: over-long varints, negative enum indexes)."""
    buf = bytearray(data)
    for at, byte in changes:
        buf[HEADER_LEN + at % (len(buf) - HEADER_LEN)] = byte
    corrupt = bytes(buf)
    try:
        cols = DECODER.decode(corrupt)
    except DecodeError:
        return
    assert_columns(cols, CODEC.decode(corrupt).record)


# -- fallback: other layouts and versions -------------------------------------------
V2_FIELD = {"name": "host", "type": "string", "default": ""}


@pytest.fixture(scope="module")
def codec_v2(tmp_path_factory: pytest.TempPathFactory) -> AvroCodec:
    """The project's schemas plus a MetricBatch v2 with one more field."""
    d: Path = tmp_path_factory.mktemp("schemas")
    for p in default_schema_dir().glob("*.avsc"):
        shutil.copy(p, d)
    schema = json.loads((d / "metric_batch.v1.avsc").read_text())
    schema["fields"].append(V2_FIELD)
    (d / "metric_batch.v2.avsc").write_text(json.dumps(schema))
    return AvroCodec.from_directory(d)


@settings(max_examples=examples(60), deadline=None)
@given(records)
def test_another_version_goes_through_fastavro(codec_v2: AvroCodec, rec: dict[str, Any]) -> None:
    decoder = MetricBatchDecoder(codec_v2)
    assert decoder._fast_header is None  # the reader is v2
    v1 = codec_v2.encode(BATCH, rec, version=1)
    v2 = codec_v2.encode(BATCH, dict(rec, host="h"))
    assert v1[:HEADER_LEN] == HEADER and v2[:HEADER_LEN] != HEADER
    for data in (v1, v2):
        assert decoder.accepts(data)
        assert_columns(decoder.decode(data), rec)


def test_fallback_errors_are_the_codecs(codec_v2: AvroCodec) -> None:
    decoder = MetricBatchDecoder(codec_v2)
    data = codec_v2.encode(BATCH, {"series": ["a"], "series_index": [0], "timestamps_ms": [1],
                                   "values": [1.0]})  # fmt: skip
    for k in range(len(data)):
        with pytest.raises(DecodeError):
            decoder.decode(data[:k])
    with pytest.raises(DecodeError) as e:
        decoder.decode(data + b"\x00")
    assert e.value.reason == "trailing-bytes"


def test_a_version_whose_columns_do_not_convert_is_a_decode_error(tmp_path: Path) -> None:
    for p in default_schema_dir().glob("*.avsc"):
        shutil.copy(p, tmp_path)
    schema = json.loads((tmp_path / "metric_batch.v1.avsc").read_text())
    values = next(f for f in schema["fields"] if f["name"] == "values")
    values["type"] = {"type": "array", "items": "string"}
    (tmp_path / "metric_batch.v2.avsc").write_text(json.dumps(schema))
    codec = AvroCodec.from_directory(tmp_path)
    data = codec.encode(BATCH, {"series": ["a"], "series_index": [0], "timestamps_ms": [1],
                                "values": ["not a number"]})  # fmt: skip
    with pytest.raises(DecodeError) as e:
        MetricBatchDecoder(codec).decode(data)
    assert e.value.reason == "bad-body" and "v2 does not convert" in str(e.value)
