"""Routing tree: Alertmanager's own route tests (dispatch/route_test.go) as tables."""

from __future__ import annotations

import pytest
import yaml

from monitoring.alerts.routing import (
    RootRouteConfig,
    Route,
    build_routes,
    group_key,
)

LEGACY_TREE = """
receiver: 'notify-def'
routes:
- match: {owner: 'team-A'}
  receiver: 'notify-A'
  routes:
  - match: {env: 'testing'}
    receiver: 'notify-testing'
    group_by: [...]
  - match: {env: "production"}
    receiver: 'notify-productionA'
    group_wait: 1m
    continue: true
  - match_re: {env: "produ.*", job: ".*"}
    receiver: 'notify-productionB'
    group_wait: 30s
    group_interval: 5m
    repeat_interval: 1h
    group_by: ['job']
- match_re: {owner: 'team-(B|C)'}
  group_by: ['foo', 'bar']
  group_wait: 2m
  receiver: 'notify-BC'
- match: {group_by: 'role'}
  group_by: ['role']
  routes:
  - match: {env: 'testing'}
    receiver: 'notify-testing'
    routes:
    - match: {wait: 'long'}
      group_wait: 2m
"""

MATCHERS_TREE = """
receiver: 'notify-def'
routes:
- matchers: ['{owner="team-A"}', '{level!="critical"}']
  receiver: 'notify-A'
  routes:
  - matchers: ['{env="testing"}', '{baz!~".*quux"}']
    receiver: 'notify-testing'
    group_by: [...]
  - matchers: ['{env="production"}']
    receiver: 'notify-productionA'
    group_wait: 1m
    continue: true
  - matchers: [ env=~"produ.*", job=~".*"]
    receiver: 'notify-productionB'
    group_wait: 30s
    group_interval: 5m
    repeat_interval: 1h
    group_by: ['job']
- matchers: [owner=~"team-(B|C)"]
  group_by: ['foo', 'bar']
  group_wait: 2m
  receiver: 'notify-BC'
- matchers: [group_by="role"]
  group_by: ['role']
  routes:
  - matchers: ['{env="testing"}']
    receiver: 'notify-testing'
    routes:
    - matchers: [wait="long"]
      group_wait: 2m
"""


def opts(receiver: str, group_by: frozenset[str] | None = frozenset(), wait: int = 30_000,
         interval: int = 300_000, repeat: int = 4 * 3_600_000) -> tuple:  # fmt: skip
    return (receiver, group_by, wait, interval, repeat)


def tree(text: str) -> Route:
    return build_routes(RootRouteConfig.model_validate(yaml.safe_load(text)))


def effective(r: Route) -> tuple:
    return (r.receiver, r.group_by, r.group_wait_ms, r.group_interval_ms, r.repeat_interval_ms)


# (labels, expected effective settings, expected keys for the legacy tree, for matchers)
CASES = [
    ({"owner": "team-A"}, [opts("notify-A")],
     ['{}/{owner="team-A"}'], ['{}/{level!="critical",owner="team-A"}']),
    ({"owner": "team-A", "env": "unset"}, [opts("notify-A")],
     ['{}/{owner="team-A"}'], ['{}/{level!="critical",owner="team-A"}']),
    ({"owner": "team-C"}, [opts("notify-BC", frozenset({"foo", "bar"}), wait=120_000)],
     ['{}/{owner=~"^(?:team-(B|C))$"}'], ['{}/{owner=~"team-(B|C)"}']),
    ({"owner": "team-A", "env": "testing"}, [opts("notify-testing", None)],
     ['{}/{owner="team-A"}/{env="testing"}'],
     ['{}/{level!="critical",owner="team-A"}/{baz!~".*quux",env="testing"}']),
    ({"owner": "team-A", "env": "production"},
     [opts("notify-productionA", wait=60_000),
      opts("notify-productionB", frozenset({"job"}), 30_000, 300_000, 3_600_000)],
     ['{}/{owner="team-A"}/{env="production"}',
      '{}/{owner="team-A"}/{env=~"^(?:produ.*)$",job=~"^(?:.*)$"}'],
     ['{}/{level!="critical",owner="team-A"}/{env="production"}',
      '{}/{level!="critical",owner="team-A"}/{env=~"produ.*",job=~".*"}']),
    ({"group_by": "role"}, [opts("notify-def", frozenset({"role"}))],
     ['{}/{group_by="role"}'], ['{}/{group_by="role"}']),
    ({"env": "testing", "group_by": "role"}, [opts("notify-testing", frozenset({"role"}))],
     ['{}/{group_by="role"}/{env="testing"}'], ['{}/{group_by="role"}/{env="testing"}']),
    ({"env": "testing", "group_by": "role", "wait": "long"},
     [opts("notify-testing", frozenset({"role"}), wait=120_000)],
     ['{}/{group_by="role"}/{env="testing"}/{wait="long"}'],
     ['{}/{group_by="role"}/{env="testing"}/{wait="long"}']),
    ({"nothing": "matches"}, [opts("notify-def")], ["{}"], ["{}"]),
]  # fmt: skip


@pytest.mark.parametrize(("labels", "expected", "legacy_keys", "matcher_keys"), CASES)
def test_route_match_like_alertmanager(
    labels: dict[str, str], expected: list[tuple], legacy_keys: list[str], matcher_keys: list[str]
) -> None:
    for text, keys in ((LEGACY_TREE, legacy_keys), (MATCHERS_TREE, matcher_keys)):
        found = tree(text).match(labels)
        assert [effective(r) for r in found] == expected
        assert [r.key for r in found] == keys


def test_walk_order_like_alertmanager() -> None:
    assert [r.receiver for r in tree(LEGACY_TREE).walk()] == [
        "notify-def", "notify-A", "notify-testing", "notify-productionA", "notify-productionB",
        "notify-BC", "notify-def", "notify-testing", "notify-testing",
    ]  # fmt: skip


def test_group_by_all_is_inherited_until_overridden() -> None:
    root = tree("""
receiver: r
routes:
- match: {env: parent}
  group_by: ['...']
  routes:
  - match: {env: child1}
  - match: {env: child2}
    group_by: [foo]
""")
    parent = root.routes[0]
    assert parent.group_by is None
    assert parent.routes[0].group_by is None
    assert parent.routes[1].group_by == frozenset({"foo"})


def test_continue_collects_later_siblings_and_stops_after_first_without_it() -> None:
    root = tree("""
receiver: default
routes:
- {matchers: ['team="db"'], receiver: db-log, continue: true}
- {matchers: ['severity="critical"'], receiver: pager}
- {matchers: ['team="db"'], receiver: db-team}
""")
    got = [r.receiver for r in root.match({"team": "db", "severity": "critical"})]
    assert got == ["db-log", "pager"]
    assert [r.receiver for r in root.match({"team": "db"})] == ["db-log", "db-team"]
    assert [r.receiver for r in root.match({"team": "web"})] == ["default"]


def test_escalation_is_inherited() -> None:
    root = tree("""
receiver: r
escalation: p
routes:
- matchers: [a="1"]
- matchers: [a="2"]
  escalation: q
""")
    assert [r.escalation for r in root.walk()] == ["p", "p", "q"]


@pytest.mark.parametrize(
    ("group_by", "labels", "expected"),
    [
        ([], {"alertname": "X", "job": "a"}, "{}"),
        (["alertname"], {"alertname": "X", "job": "a"}, '{alertname="X"}'),
        (["alertname", "missing"], {"alertname": "X"}, '{alertname="X"}'),
        (["..."], {"job": "a", "alertname": "X"}, '{alertname="X", job="a"}'),
        (["q"], {"q": 'say "hi"'}, '{q="say \\"hi\\""}'),
    ],
)
def test_group_key_like_alertmanager(
    group_by: list[str], labels: dict[str, str], expected: str
) -> None:
    root = build_routes(RootRouteConfig.model_validate({"receiver": "r", "group_by": group_by}))
    assert group_key(root, labels) == "{}:" + expected


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "root route must name a receiver"),
        ({"receiver": "r", "matchers": ['a="1"']}, "root route must not have any matchers"),
        ({"receiver": "r", "continue": True}, "root route cannot have 'continue'"),
        ({"receiver": "r", "routes": [{"matchers": ["a="]}]}, "matcher value is not present"),
        ({"receiver": "r", "routes": [{"match_re": {"a": "("}}]}, "invalid regex"),
        ({"receiver": "r", "group_by": ["...", "a"]}, "cannot be combined"),
        ({"receiver": "r", "group_by": ["bad-label"]}, "not a valid label name"),
        ({"receiver": "r", "group_wait": "soon"}, "invalid duration 'soon'"),
        ({"receiver": "r", "group_interval": "0s"}, "greater than 0"),
        ({"receiver": "r", "routes": [{"recevier": "x"}]}, "Extra inputs"),
    ],
)
def test_bad_route_config_is_rejected(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RootRouteConfig.model_validate(config)
