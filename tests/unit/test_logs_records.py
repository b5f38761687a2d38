"""Record validation: missing fields, timestamps, truncation, UTF-8 flag, attributes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.logs.records import (
    FLAG_ATTRS_DROPPED,
    FLAG_LEVEL,
    FLAG_ORIGINAL_BYTES,
    FLAG_TIMESTAMP,
    FLAG_TRUNCATED,
    FLAG_UTF8,
    InvalidLog,
    LogLimits,
    normalise,
    truncate_utf8,
)

NOW = 1_700_000_000_000


def rec(**kw: Any) -> dict[str, Any]:
    base = {
        "timestamp_ms": NOW - 5,
        "service": "api",
        "host": "h",
        "level": "info",
        "logger": "l",
        "message": "hello",
        "trace_id": "",
        "span_id": "",
        "exception": "",
        "attributes": {},
    }
    return {**base, **kw}


def test_a_clean_record_is_kept_as_is() -> None:
    e = normalise(rec(level="ERROR", attributes={"a": "1"}), NOW)
    assert e == (NOW - 5, "api", "h", "ERROR", 17, "l", "hello", "", "", "", {"a": "1"})


@pytest.mark.parametrize("service", ["", "   "])
def test_missing_service_is_rejected(service: str) -> None:
    with pytest.raises(InvalidLog) as e:
        normalise(rec(service=service), NOW)
    assert e.value.reason == "missing-service"


def test_missing_message_is_rejected_unless_there_is_an_exception() -> None:
    with pytest.raises(InvalidLog) as e:
        normalise(rec(message=""), NOW)
    assert e.value.reason == "missing-message"
    assert normalise(rec(message="", exception="Traceback"), NOW).exception == "Traceback"


def test_fields_absent_from_the_mapping_take_the_contract_defaults() -> None:
    e = normalise({"timestamp_ms": NOW, "service": "s", "message": "m"}, NOW)
    assert (e.level, e.host, e.logger, e.attributes) == ("INFO", "", "", {})


def test_unknown_level_is_info_with_the_original_kept() -> None:
    e = normalise(rec(level="verbose-2"), NOW)
    assert e.level == "INFO" and e.attributes == {FLAG_LEVEL: "verbose-2"}


@pytest.mark.parametrize("ts", [0, -1, 12_345, NOW + 3_600_001])
def test_bad_timestamps_are_replaced_by_the_received_time(ts: int) -> None:
    e = normalise(rec(timestamp_ms=ts), NOW)
    assert e.timestamp_ms == NOW and e.attributes == {FLAG_TIMESTAMP: str(ts)}


def test_a_timestamp_within_the_skew_is_kept() -> None:
    assert normalise(rec(timestamp_ms=NOW + 3_600_000), NOW).timestamp_ms == NOW + 3_600_000


def test_one_megabyte_message_is_truncated_and_flagged() -> None:
    big = "x" * (1024 * 1024)
    e = normalise(rec(message=big, exception="é" * 40), NOW, LogLimits(max_message_bytes=64))
    assert e.message == "x" * 64
    assert e.exception == "é" * 32  # 2 bytes each
    assert e.attributes[FLAG_TRUNCATED] == "message,exception"
    assert e.attributes[FLAG_ORIGINAL_BYTES] == "message=1048576,exception=80"


def test_utf8_flag() -> None:
    e = normalise(rec(message="bad \ufffd byte"), NOW, utf8_replaced=True)
    assert e.attributes == {FLAG_UTF8: "true"} and e.message == "bad \ufffd byte"


def test_too_many_attributes_keep_the_first_in_sorted_order() -> None:
    attrs = {f"k{i:02d}": str(i) for i in range(10)}
    e = normalise(rec(attributes=attrs), NOW, LogLimits(max_attributes=3))
    assert e.attributes == {"k00": "0", "k01": "1", "k02": "2", FLAG_ATTRS_DROPPED: "7"}


@given(st.text(max_size=200), st.integers(min_value=1, max_value=300))
def test_truncate_utf8_never_splits_a_character(text: str, limit: int) -> None:
    cut, n = truncate_utf8(text, limit)
    raw = text.encode("utf-8", "surrogatepass")
    assert len(cut.encode("utf-8", "surrogatepass")) <= limit
    assert text.startswith(cut)
    if len(raw) <= limit:
        assert cut == text
    else:
        assert n == len(raw)
        assert len(cut.encode("utf-8", "surrogatepass")) > limit - 4
