"""The pure parts of ClickHouse's HTTP interface: URL parameters to settings, the
settings a statement runs with, FORMAT detection, error codes to HTTP statuses,
content negotiation and bounded request-body inflation."""

from __future__ import annotations

import gzip
import zlib

import lz4.frame
import pytest

from monitoring.config import QueryLimits
from monitoring.query.clickhouse_exec import (
    ClickHouseError,
    parse_request,
    query_settings,
    statement_format,
)
from monitoring.query.clickhouse_http import choose_encoding, content_type, decompress

LIMITS = QueryLimits(timeout="30s", max_result_rows=1000, max_result_bytes=1 << 20)


def test_transport_parameters_are_consumed() -> None:
    r = parse_request(
        [("database", "default"), ("default_format", "JSONCompact"), ("query_id", "q1"),
         ("session_id", "s"), ("session_timeout", "60"), ("wait_end_of_query", "1"),
         ("enable_http_compression", "1"), ("user", "u"), ("param_x", "it\\'s")],
        LIMITS,
    )  # fmt: skip
    assert (r.database, r.default_format, r.query_id) == ("default", "JSONCompact", "q1")
    assert r.params == {"x": "it\\'s"} and r.settings == {}


@pytest.mark.parametrize(
    ("key", "value", "want"),
    [("max_result_rows", "10", "10"), ("max_result_rows", "1000000", "1000"),
     ("max_result_rows", "0", "1000"), ("max_execution_time", "1.5", "1.5"),
     ("max_execution_time", "99999", "30"), ("max_result_bytes", "-1", str(1 << 20))],
)  # fmt: skip
def test_limits_only_go_down(key: str, value: str, want: str) -> None:
    assert parse_request([(key, value)], LIMITS).settings[key] == want


@pytest.mark.parametrize(
    "item",
    [("readonly", "0"), ("max_threads", "64"), ("output_format_schema", "/tmp/x"),
     ("allow_ddl", "1"), ("result_overflow_mode", "break"), ("format_schema", "/etc/x"),
     ("param_bad name", "1"), ("query_id", "a\r\nX-Evil: 1"), ("query_id", "q" * 129),
     ("output_format_schema ", "/tmp/x"), ("output_format_x = '1'; DROP TABLE t; SET y", "1")],
)  # fmt: skip
def test_anything_else_is_refused(item: tuple[str, str]) -> None:
    with pytest.raises(ClickHouseError) as info:
        parse_request([item], LIMITS)
    assert info.value.code in (164, 36)


@pytest.mark.parametrize("key", ["max_result_rows", "max_execution_time", "max_result_bytes"])
@pytest.mark.parametrize("value", ["nan", "NaN", "-nan", "ten", ""])
def test_a_limit_that_is_not_a_number_is_refused(key: str, value: str) -> None:
    with pytest.raises(ClickHouseError, match="not a number") as info:  # nan was a 500
        parse_request([(key, value)], LIMITS)
    assert info.value.code == 36


def test_block_compression_is_refused_clearly() -> None:
    with pytest.raises(ClickHouseError, match="enable_http_compression") as info:
        parse_request([("compress", "1")], LIMITS)
    assert info.value.status == 501


def test_settings_keep_the_users_first_and_readonly_last() -> None:
    s = query_settings(
        {"output_format_json_quote_64bit_integers": "0", "max_result_rows": "5"}, LIMITS
    )
    keys = list(s)
    assert keys[0] == "output_format_json_quote_64bit_integers" and keys[-1] == "readonly"
    assert s["readonly"] == "1" and s["max_result_rows"] == "5"
    assert s["result_overflow_mode"] == "throw" and s["max_execution_time"] == "30"


def test_format_clause_is_the_canonical_last_line() -> None:
    assert statement_format("SELECT 1\nFORMAT Parquet") == "Parquet"
    assert statement_format("SELECT 'FORMAT JSON'") is None
    assert statement_format("SELECT\n    a AS FORMAT\nFROM t") is None


@pytest.mark.parametrize(
    ("code", "status"),
    [(62, 400), (164, 500), (497, 403), (516, 403), (194, 401), (81, 404), (229, 413),
     (159, 408), (48, 501), (202, 503), (396, 500)],
)  # fmt: skip
def test_status_codes_follow_the_server(code: int, status: int) -> None:
    assert ClickHouseError(code, "x").status == status


def test_engine_errors_keep_their_text() -> None:
    e = ClickHouseError.from_engine("Code: 62. DB::Exception: Syntax error: x. (SYNTAX_ERROR)")
    assert (e.code, e.status) == (62, 400)
    assert (
        e.text("26.9")
        == "Code: 62. DB::Exception: Syntax error: x. (SYNTAX_ERROR) (version 26.9)\n"
    )


def test_content_negotiation() -> None:
    assert choose_encoding("lz4,zstd,br,gzip,deflate") == "lz4"
    assert choose_encoding("br, gzip") == "gzip"
    assert choose_encoding("identity") is None
    assert content_type("JSONEachRow").startswith("application/json")
    assert content_type("RowBinaryWithNamesAndTypes") == "application/octet-stream"
    assert content_type("CSV").endswith("header=absent")
    assert content_type("PrettyCompact").startswith("text/plain")


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("lz4", lz4.frame.compress)],
)
def test_request_bodies_inflate_within_the_limit(encoding: str, pack: object) -> None:
    assert decompress(pack(b"SELECT 1"), encoding, 100) == b"SELECT 1"  # type: ignore[operator]
    bomb = pack(b"x" * 10_000_000)  # type: ignore[operator]
    with pytest.raises(ClickHouseError) as info:
        decompress(bomb, encoding, 1 << 20)
    assert info.value.code == 229
    with pytest.raises(ClickHouseError):
        decompress(b"not compressed", encoding, 100)


def test_unknown_body_encoding_is_refused() -> None:
    with pytest.raises(ClickHouseError, match="Unknown compression"):
        decompress(b"x", "snappy", 100)
