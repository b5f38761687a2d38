"""The hand-written Avro primitives against fastavro: same bytes written, same values
read (hypothesis), and the errors of malformed or truncated input."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.wire.avro_bytes import (
    DOUBLE,
    SMALL_LONGS,
    Malformed,
    avro_long,
    avro_long_array,
    avro_string,
    avro_string_array,
    avro_string_map,
    decode_utf8,
    read_block_count,
    read_long,
    read_long_array,
    read_string,
    read_string_array,
    read_string_map,
    read_texts,
)

LONGS = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=300)


def fa(schema: Any, value: Any) -> bytes:
    """fastavro's bytes of ``value``."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), value)
    return buf.getvalue()


def view(b: bytes) -> str:
    return b.decode("latin-1")


@settings(max_examples=examples(300), deadline=None)
@given(LONGS)
def test_long_as_fastavro(n: int) -> None:
    data = fa("long", n)
    assert avro_long(n) == data
    assert read_long(data + b"\x07", 0) == (n, len(data))


@settings(max_examples=examples(200), deadline=None)
@given(TEXT)
def test_string_as_fastavro(s: str) -> None:
    data = fa("string", s)
    assert avro_string(s) == data
    assert read_string(data, 0) == (s, len(data))
    items, end = read_texts(data, view(data), 0, 1)
    assert (decode_utf8(items), items, end) == ([], [s], len(data))


@settings(max_examples=examples(200), deadline=None)
@given(st.dictionaries(TEXT, TEXT, max_size=70))
def test_string_map_as_fastavro(m: dict[str, str]) -> None:
    data = fa({"type": "map", "values": "string"}, m)
    assert avro_string_map(m) == data
    assert read_string_map(b"\x05" + data, view(b"\x05" + data), 1) == (m, len(data) + 1, False)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(TEXT | st.just(""), max_size=100))
def test_string_array_as_fastavro(items: list[str]) -> None:
    data = fa({"type": "array", "items": "string"}, items)
    assert avro_string_array(items) == data
    got, end = read_string_array(data, view(data), 0)
    decode_utf8(got)
    assert (got, end) == (items, len(data))


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(LONGS, max_size=100) | st.integers(0, 5000).map(lambda n: list(range(n))))
def test_long_array_as_fastavro(items: list[int]) -> None:
    data = fa({"type": "array", "items": "long"}, items)
    assert avro_long_array(items) == data
    assert read_long_array(data, 0) == (items, len(data))


@given(st.floats(allow_nan=False))
def test_double_as_fastavro(x: float) -> None:
    assert DOUBLE.pack(x) == fa("double", x)


def test_small_longs_are_one_byte_each() -> None:
    assert [fa("long", n) for n in range(64)] == SMALL_LONGS


def test_blocks_with_negative_counts_and_several_blocks() -> None:
    """Writers may split an array or map in blocks, a negative count followed by the
    block's size in bytes (fastavro writes one block; others do not)."""
    a, b = avro_string("ab"), avro_string("é")
    strings = avro_long(-2) + avro_long(len(a + b)) + a + b + avro_long(1) + a + b"\x00"
    items, end = read_string_array(strings, view(strings), 0)
    assert (decode_utf8(items), items, end) == ([], ["ab", "é", "ab"], len(strings))
    longs = avro_long(1) + avro_long(300) + avro_long(-2) + b"\x02\x02\x03" + b"\x00"
    assert read_long_array(longs, 0) == ([300, 1, -2], len(longs))
    pairs = avro_long(-1) + b"\x06" + a + b + avro_long(1) + b + a + b"\x00"
    assert read_string_map(pairs, view(pairs), 0) == ({"ab": "é", "é": "ab"}, len(pairs), False)


def test_invalid_utf8_is_an_error_or_replaced() -> None:
    data = b"\x04\xc3\x28"
    with pytest.raises(UnicodeDecodeError):
        read_string(data, 0)
    items, _ = read_texts(data, view(data), 0, 1)
    assert decode_utf8(list(items), replace=True) == [0]
    with pytest.raises(UnicodeDecodeError):
        decode_utf8(items)
    pairs = b"\x02" + data + b"\x02k\x00"
    assert read_string_map(pairs, view(pairs), 0, replace=True) == ({"\ufffd(": "k"}, 7, True)


@pytest.mark.parametrize(
    "data",
    [b"\x01", b"\x03", b"\x81\x01" + b"x" * 70, avro_long(-(2**40))],
    ids=["-1", "-2", "-65 in two bytes", "-2**40"],
)
def test_a_negative_string_length_is_malformed(data: bytes) -> None:
    for read in (
        lambda: read_string(data, 0),
        lambda: read_texts(data, view(data), 0, 1),
        lambda: read_string_array(b"\x02" + data + b"\x00", view(b"\x02" + data + b"\x00"), 0),
        lambda: read_string_map(b"\x02" + data + b"\x00", view(b"\x02" + data + b"\x00"), 0),
    ):
        with pytest.raises(Malformed, match="negative string length"):
            read()


def test_varints_longer_than_ten_bytes_are_malformed() -> None:
    assert read_long(avro_long(-(2**63)), 0) == (-(2**63), 10)
    assert read_long(b"\x80" * 9 + b"\x00", 0) == (0, 10)
    with pytest.raises(Malformed, match="longer than 10 bytes"):
        read_long(b"\x80" * 10 + b"\x00", 0)


def test_every_prefix_is_truncated() -> None:
    """IndexError wherever the bytes end inside an item."""
    m = {"k": "v" * 70, "é": ""}
    cases: list[tuple[bytes, Any]] = [
        (avro_long(2**62), lambda d: read_long(d, 0)),
        (avro_string("x" * 200), lambda d: read_string(d, 0)),
        (avro_string_array(["a", "b" * 100, ""]), lambda d: read_string_array(d, view(d), 0)),
        (avro_long_array([1, 2**40, -300]), lambda d: read_long_array(d, 0)),
        (avro_string_map(m), lambda d: read_string_map(d, view(d), 0)),
        (avro_long(5) + b"12345", lambda d: read_block_count(d, 0)),
    ]
    for data, read in cases:
        read(data)
        for k in range(len(data)):
            with pytest.raises(IndexError):
                read(data[:k])
