"""Matchers: Alertmanager's parser cases (pkg/labels/parse_test.go), matching, API form."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.alerts.matchers import (
    Matcher,
    MatcherError,
    format_matchers,
    legacy_matchers,
    parse_matcher,
    parse_matchers,
)

M = Matcher


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{foo="bar"}', [M("foo", "=", "bar")]),
        ('{foo=~"bar.*"}', [M("foo", "=~", "bar.*")]),
        ('{foo!="bar"}', [M("foo", "!=", "bar")]),
        ('{foo!~"bar.*"}', [M("foo", "!~", "bar.*")]),
        ('{foo="bar", baz!="quux"}', [M("foo", "=", "bar"), M("baz", "!=", "quux")]),
        ('{foo="bar",baz!~".*quux", derp="wat"}',
         [M("foo", "=", "bar"), M("baz", "!~", ".*quux"), M("derp", "=", "wat")]),
        ('{foo=""}', [M("foo", "=", "")]),
        ('{foo="bar,quux", job="job1"}', [M("foo", "=", "bar,quux"), M("job", "=", "job1")]),
        ('{foo = "bar", dings != "bums", }', [M("foo", "=", "bar"), M("dings", "!=", "bums")]),
        ("foo=bar,dings!=bums", [M("foo", "=", "bar"), M("dings", "!=", "bums")]),
        ('{quote="She said: \\"Hi, ladies! That\'s gender-neutral…\\""}',
         [M("quote", "=", 'She said: "Hi, ladies! That\'s gender-neutral…"')]),
        ('statuscode=~"5.."', [M("statuscode", "=~", "5..")]),
        ("tricky=~~~", [M("tricky", "=~", "~~")]),
        ('trickier==\\\\=\\=\\"', [M("trickier", "=", '=\\=\\="')]),
        ('contains_quote != "\\"" , contains_comma !~ "foo,bar" , ',
         [M("contains_quote", "!=", '"'), M("contains_comma", "!~", "foo,bar")]),
        ('nl="a\\nb"', [M("nl", "=", "a\nb")]),
    ],
)  # fmt: skip
def test_parse_matchers_like_alertmanager(text: str, expected: list[Matcher]) -> None:
    assert parse_matchers(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("job=", "matcher value is not present"),
        ('job="value', "unescaped double quote"),
        ('job=value"', "unescaped double quote"),
        ('trickier==\\\\=\\=\\""', "unescaped double quote"),
        ('contains_unescaped_quote = foo"bar', "unescaped double quote"),
        ('{invalid-name = "valid label"}', "bad matcher format"),
        ('{foo=~"invalid[regexp"}', "invalid regex"),
        ('"{foo=\\"bar"}', "bad matcher format"),
        ('"foo="bar""', "bad matcher format"),
    ],
)
def test_parse_errors_quote_the_input(text: str, message: str) -> None:
    with pytest.raises(MatcherError, match=re.escape(message)):
        parse_matchers(text)


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        ('a="1"', {"a": "1"}, True),
        ('a="1"', {"a": "12"}, False),
        ('a!="1"', {}, True),  # absent is "" which is not "1"
        ('a=""', {}, True),
        ('a=""', {"a": "x"}, False),
        ('a=~"1|2"', {"a": "2"}, True),
        ('a=~"1|2"', {"a": "12"}, False),  # anchored both ends
        ('a=~"b.*"', {"a": "abc"}, False),  # anchored at the start too
        ('a=~".*"', {}, True),
        ('a=~".+"', {}, False),
        ('a!~"prod.*"', {"a": "production"}, False),
        ('a!~"prod.*"', {"a": "staging"}, True),
        ('a!~"prod.*"', {}, True),
    ],
)
def test_matching(matcher: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(matcher).matches(labels) is expected


@pytest.mark.parametrize(
    ("matcher", "api"),
    [
        ('a="1"', {"name": "a", "value": "1", "isRegex": False, "isEqual": True}),
        ('a!="1"', {"name": "a", "value": "1", "isRegex": False, "isEqual": False}),
        ('a=~"1"', {"name": "a", "value": "1", "isRegex": True, "isEqual": True}),
        ('a!~"1"', {"name": "a", "value": "1", "isRegex": True, "isEqual": False}),
    ],
)
def test_api_form_round_trips(matcher: str, api: dict[str, object]) -> None:
    m = parse_matcher(matcher)
    assert m.to_api() == api
    assert Matcher.from_api(api) == m


def test_api_form_defaults_to_equality() -> None:
    assert Matcher.from_api({"name": "a", "value": "x"}) == M("a", "=", "x")


def test_api_form_rejects_bad_names_and_values() -> None:
    with pytest.raises(MatcherError, match="label name"):
        Matcher.from_api({"name": "bad-name", "value": "x"})
    with pytest.raises(MatcherError, match="string value"):
        Matcher.from_api({"name": "a", "value": 3})


def test_format_sorts_like_alertmanager_route_keys() -> None:
    ms = parse_matchers('{owner="team-A", level!="critical"}')
    assert format_matchers(ms) == '{level!="critical",owner="team-A"}'


def test_legacy_match_re_is_shown_anchored() -> None:
    (m,) = legacy_matchers({}, {"owner": "team-(B|C)"})
    assert str(m) == 'owner=~"^(?:team-(B|C))$"'
    assert m.matches({"owner": "team-C"}) and not m.matches({"owner": "team-CD"})


_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@given(name=st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), value=_values,
       op=st.sampled_from(["=", "!="]))  # fmt: skip
def test_printed_matcher_parses_back(name: str, value: str, op: str) -> None:
    m = Matcher(name, op, value)  # type: ignore[arg-type]
    assert parse_matcher(str(m)) == m
    assert parse_matchers("{" + str(m) + ', x="1"}') == [m, Matcher("x", "=", "1")]
