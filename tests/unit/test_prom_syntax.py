"""``metrics.prom_syntax``: the one copy of Prometheus' names, durations and value
text, and the modules that used to carry their own copies and now import it."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.alerts.durations import parse_duration_ms as config_duration_ms
from monitoring.alerts.matchers import MatcherError, value_test
from monitoring.alerts.promql import UnsupportedExpression, compile_expr
from monitoring.alerts.rules import parse_duration_ms as rule_duration_ms
from monitoring.ingest.scrape_config import parse_prom_duration
from monitoring.metrics.aggregator import counter_step
from monitoring.metrics.prom_syntax import (
    LABEL_NAME,
    METRIC_NAME,
    format_value,
    prom_duration_ms,
)
from monitoring.metrics.samples import InvalidSample, Limits, check_series
from monitoring.query.prom_format import BadParam, parse_duration


@pytest.mark.parametrize("name", ["job", "_x", "a1_B", "__name__"])
def test_label_names(name: str) -> None:
    assert LABEL_NAME.match(name) and METRIC_NAME.match(name)


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a:b", "é", "job\n", "job\nx", " job"])
def test_not_label_names(name: str) -> None:
    assert not LABEL_NAME.match(name)


def test_metric_names_allow_colons_only_there() -> None:
    assert METRIC_NAME.match("job:rate5m") and not LABEL_NAME.match("job:rate5m")
    assert not METRIC_NAME.match("up\n")


def test_a_label_name_with_a_final_newline_is_refused_by_the_samples_contract() -> None:
    """Python's ``$`` matches before a final newline; every copy of the pattern let
    ``"job\\n"`` through. Go's (Prometheus') does not: neither does the one copy."""
    check_series("up", {"job": "x"}, Limits())
    with pytest.raises(InvalidSample):
        check_series("up", {"job\n": "x"}, Limits())
    with pytest.raises(InvalidSample):
        check_series("up\n", {}, Limits())


@pytest.mark.parametrize(
    ("text", "ms"),
    [("0", 0), ("0s", 0), ("250ms", 250), ("1m30s", 90_000), ("1h30m", 5_400_000),
     ("2w", 1_209_600_000), ("1y", 31_536_000_000), ("1d2h3m4s5ms", 93_784_005)],
)  # fmt: skip
def test_durations(text: str, ms: int) -> None:
    assert prom_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "1.5m", "90", "30s1m", "-1s", "1h ", "5m\n", "1mm"])
def test_not_durations(text: str) -> None:
    assert prom_duration_ms(text) is None


def test_the_duration_readers_agree_where_their_grammars_overlap() -> None:
    for text in ("1h30m", "250ms", "1y", "2w3d"):
        ms = prom_duration_ms(text)
        assert ms is not None
        assert parse_duration(text, "step") == ms  # the HTTP API (also takes seconds)
        assert config_duration_ms(text) == ms  # Alertmanager configs (also 1.5m)
        assert parse_prom_duration(text) == ms / 1000  # scrape configs, in seconds
        assert rule_duration_ms(text) == ms  # rule files (for:, keep_firing_for:)
    assert parse_duration("15", "step") == 15_000 and config_duration_ms(" 1.5m ") == 90_000
    bad_texts = ("5m\n", "1.5x", "-5m", "NaN", "1e309", "99999999999999999y", "300y")
    assert parse_duration("1_000", "step") == 1_000_000  # Go's ParseFloat reads it too
    for bad in (*bad_texts, "5\n", " 5", "١٢٣"):  # no space, ASCII digits, as Go
        with pytest.raises(BadParam):  # 300y is past int64 nanoseconds, as "1e309" is
            parse_duration(bad, "max_source_resolution")
    assert parse_duration("290y", "max_source_resolution") == prom_duration_ms("290y")
    with pytest.raises(ValueError):
        parse_prom_duration("0")  # a scrape interval of 0 is no interval
    assert rule_duration_ms("0") == 0
    for bad in ("5m\n", "1.5m", "90"):
        with pytest.raises(ValueError):
            rule_duration_ms(bad)


def test_scrape_durations_in_seconds_are_the_nearest_float() -> None:
    """The scrape config's own copy summed ``9 * 0.001`` (0.009000000000000001); whole
    milliseconds over 1000 give the float nearest to the written value."""
    assert parse_prom_duration("9ms") == 0.009
    assert parse_prom_duration("1s9ms") == 1.009


def _go_format_float(x: float) -> str:
    """The PromQL engine's former copy: ``FormatFloat(x, 'f', -1, 64)`` through Decimal."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    s = format(Decimal(repr(x)), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_format_value_is_the_engines_former_copy(x: float) -> None:
    assert format_value(x) == _go_format_float(x)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_value_reads_back_exactly_without_exponent(x: float) -> None:
    text = format_value(x)
    assert "e" not in text and float(text) == x


@given(st.floats(-1e12, 1e12), st.floats(-1e12, 1e12))
def test_counter_step_is_the_vector_paths_formula(prev: float, value: float) -> None:
    """The scalar path and its out-of-order walk (``counter_step``) and the vector path
    (``step = v - prev``, a negative step replaced by ``v``) give the same step."""
    step, reset = counter_step(prev, value)
    vector = value - prev
    assert (step, reset) == ((value, True) if vector < 0 else (vector, False))
    assert counter_step(math.nan, value) == (0.0, False)  # no previous sample


def test_value_test_is_what_rule_selectors_compile() -> None:
    assert value_test("=~", "db.*")("db1") and not value_test("=~", "db.*")("xdb1")
    assert value_test("!~", "db.*")("web") and value_test("!=", "a")("b")
    with pytest.raises(MatcherError, match="in my rule"):
        value_test("=~", "(?=x)", where="my rule")
    # the PromQL subset's error (the parser takes a{1001}, RE2 refuses it)
    with pytest.raises(UnsupportedExpression, match=r"invalid regex in 'a\{1001\}' in up"):
        compile_expr('up{job=~"a{1001}"} > 0')
