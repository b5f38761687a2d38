"""User-supplied label regexes (routes, inhibition, silences, rule selectors) run on RE2.

Python's backtracking ``re`` takes exponential time on patterns like ``(a|a)*b``; RE2
takes time linear in the label's length. The pathological cases below would run for
longer than the universe under backtracking: they finish at all only on RE2, which the
timeout marks turn into a failure rather than a hang. RE2 refuses backreferences and
lookaround; they are refused where the pattern enters (config load, rule load).
"""

from __future__ import annotations

import re

import pytest

from monitoring.alerts.history import WindowHistory, WindowRow
from monitoring.alerts.manager_config import ConfigError, ManagerConfig
from monitoring.alerts.matchers import (
    LabelRegex,
    MatcherError,
    compile_matcher_regex,
    legacy_matchers,
    parse_matcher,
)
from monitoring.alerts.promql import compile_expr

PATHOLOGICAL = [  # (pattern, value, full match?)
    ("(a|a)*b", "a" * 100, False),
    ("(a|a)*b", "a" * 99 + "b", True),
    ("(a+)+$", "a" * 99 + "!", False),
    ("(a+)+$", "a" * 100, True),
    ("(x+x+)+y", "x" * 100, False),
    ("(x+x+)+y", "x" * 99 + "y", True),
    ("(.*a){30}", "a" * 29 + "b" * 70, False),
]


def test_every_matcher_regex_is_compiled_by_re2() -> None:
    for text in ('a=~"x.*"', 'a!~"x.*"'):
        assert isinstance(parse_matcher(text).regex, LabelRegex)
    (legacy,) = legacy_matchers({}, {"a": "x.*"})
    assert isinstance(legacy.regex, LabelRegex)
    assert parse_matcher('a="x"').regex is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("pattern", "value", "expected"), PATHOLOGICAL)
def test_pathological_patterns_match_correctly(pattern: str, value: str, expected: bool) -> None:
    assert compile_matcher_regex(pattern).matches(value) is expected
    assert parse_matcher(f'a=~"{pattern}"').matches({"a": value}) is expected
    assert parse_matcher(f'a!~"{pattern}"').matches({"a": value}) is not expected


@pytest.mark.parametrize(
    "pattern",
    [r"(a)\1", r"(?P<x>a)(?P=x)", r"db(?=-)", r"db(?!-)", r"(?<=x)db", r"(?<!x)db", r"a\Z"],
)
def test_backreferences_and_lookaround_are_refused_clearly(pattern: str) -> None:
    with pytest.raises(MatcherError, match=r"invalid regex in .*\(RE2: no lookaround"):
        compile_matcher_regex(pattern)
    with pytest.raises(MatcherError, match=re.escape('invalid regex in matcher a=~"')):
        parse_matcher(f'a=~"{pattern}"'.replace("\\", "\\\\"))


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("db-.*", "db-main", True),
        ("db-.*", "web-db-1", False),  # anchored at the start
        ("5..", "503", True),
        ("5..", "5031", False),  # and at the end
        ("prod|staging", "staging", True),
        ("a)|(b", "b", True),  # wrapped as (?:...): a top-level | stays anchored
        ("a)|(b", "ab", False),
        ("[a-z]+-[0-9]{1,3}", "web-12", True),
        (r"\d+", "123", True),
        (".", "é", True),  # one code point, not one byte
        (".", "\n", False),  # as Alertmanager and Python's re: no (?s)
        ("", "", True),
        (".*", "", True),
    ],
)
def test_ordinary_patterns_keep_their_meaning(pattern: str, value: str, expected: bool) -> None:
    assert compile_matcher_regex(pattern).matches(value) is expected
    assert (re.fullmatch(f"(?:{pattern})", value) is not None) is expected  # as before


def test_flags_work_as_in_alertmanager() -> None:
    # Go's regexp takes (?i) inside ^(?:...)$; Python's re refused it there
    assert parse_matcher('a=~"(?i)DB.*"').matches({"a": "db1"})


def test_a_value_that_is_not_utf8_does_not_raise() -> None:
    rx = compile_matcher_regex("a.*")
    assert rx.matches("a\ud800") in (True, False)  # a lone surrogate: no exception


def test_route_and_inhibition_regexes_re2_refuses_fail_the_config_load() -> None:
    base = "receivers: [{name: team}]\nroute:\n  receiver: team\n"
    cases = {
        "routes: [{receiver: team, matchers: ['host=~\"(a)\\\\1\"']}]": "route.routes.0.matchers",
        "routes: [{receiver: team, match_re: {host: 'x(?=y)'}}]": "route.routes.0.match_re",
    }
    for tail, where in cases.items():
        with pytest.raises(ConfigError, match=re.escape(where) + ".*invalid regex.*RE2"):
            ManagerConfig.from_yaml(base + "  " + tail)
    inhibit = "inhibit_rules: [{source_matchers: ['a=~\"(?<!x)y\"']}]\n"
    with pytest.raises(ConfigError, match=r"inhibit_rules\.0\.source_matchers.*RE2"):
        ManagerConfig.from_yaml(base + inhibit)


@pytest.mark.timeout(60)
def test_rule_selector_regexes_are_linear_time() -> None:
    h = WindowHistory(10_000, 60_000)
    h.add(WindowRow.of("cpu", {"host": "x" * 99 + "y"}, 10_000, [1.0]))
    h.add(WindowRow.of("cpu", {"host": "x" * 100}, 10_000, [2.0]))
    got = compile_expr('cpu{host=~"(x+x+)+y"}').evaluate(h, 10_000)
    assert [v for _, v in got] == [1.0]  # type: ignore[union-attr]
    got = compile_expr('cpu{host!~"(x+x+)+y"}').evaluate(h, 10_000)
    assert [v for _, v in got] == [2.0]  # type: ignore[union-attr]
