"""Inputs that once crashed or stalled the store's PromQL path are refused up front: the
parser recursed until the process died on 20,000 nested parentheses, finding an error's
position re-parsed once per token (minutes for a few KB), and ``match[]`` regexes ran on
Python's backtracking ``re`` outside the query queue."""

from __future__ import annotations

import pytest

from monitoring.promql import BadQuery, Matcher, parse
from monitoring.promql.plan import MAX_DEPTH, MAX_QUERY_BYTES
from monitoring.query.prometheus_api import _matches_empty


@pytest.mark.parametrize("n", [MAX_DEPTH + 1, 20_000 // 2])
def test_deep_nesting_is_refused_before_the_parser_recurses(n: int) -> None:
    with pytest.raises(BadQuery, match=r"nests deeper|longer than"):
        parse("(" * n + "x" + ")" * n)


def test_nesting_within_the_bound_parses() -> None:
    parse("(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH)
    parse('x{a="' + "(" * 200 + '"}')  # brackets inside a string do not nest


def test_a_long_query_is_refused_and_a_long_invalid_one_gets_no_position() -> None:
    with pytest.raises(BadQuery, match=f"longer than {MAX_QUERY_BYTES}"):
        parse("x + " * (MAX_QUERY_BYTES // 4 + 1))
    with pytest.raises(BadQuery) as info:  # 8 KB: a position would cost minutes here
        parse("+".join(["x"] * 4000) + " x")
    assert info.value.position is None


def test_match_regexes_run_on_re2() -> None:
    # exponential on Python's re (hours at {40}); RE2 refuses the lookahead at once
    assert _matches_empty(Matcher("a", "=~", "(?:(?:)|(?:)){40}(?!)")) is False
    assert _matches_empty(Matcher("a", "=~", "(?:(?:)|(?:)){40}")) is True
