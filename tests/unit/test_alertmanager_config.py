"""The config file: errors naming the key, the example file, and the real Alertmanager.

The example and the routing tree are checked against Debian's ``amtool`` (package
prometheus-alertmanager, which the end-to-end tests also need): the same file without
our escalation keys passes ``amtool check-config``, and ``amtool config routes test``
picks the same receivers as ``Route.match`` for every label set tried.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.alerts.alert_manager import AlertManager
from monitoring.alerts.manager_config import ManagerConfig
from monitoring.config import ConfigError

EXAMPLE = Path(__file__).parents[2] / "infra" / "alertmanager" / "monitoring-alertmanager.yml"
MINIMAL = {"route": {"receiver": "r"}, "receivers": [{"name": "r"}]}


def with_(**changes: object) -> str:
    return yaml.safe_dump({**MINIMAL, **changes})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("route: [", "<string>: not valid YAML"),
        ("- a", "<string>: top level must be a mapping"),
        (yaml.safe_dump({"receivers": [{"name": "r"}]}), "route: Field required"),
        (yaml.safe_dump({"route": {"receiver": "r"}}), "receivers: Field required"),
        (with_(receivers=[{"slack_configs": []}]), "receivers: entry 0 needs a non-empty 'name'"),
        (with_(receivers=[{"name": "r"}, {"name": "r"}]),
         "receivers: entry 1: duplicate receiver name 'r'"),
        (with_(route={"receiver": "r", "routes": [{"receiver": "ghost"}]}),
         "route.routes.0.receiver: undefined receiver 'ghost'"),
        (with_(route={"receiver": "r", "routes": [{"routes": [{"group_wait": "x"}]}]}),
         "route.routes.0.routes.0.group_wait: invalid duration 'x'"),
        (with_(route={"receiver": "r", "routes": [{"matchers": ['a=~"("']}]}),
         "route.routes.0.matchers: invalid regex"),
        (with_(inhibit_rules=[{"equal": "cluster"}]), "inhibit_rules.0.equal: Input should be"),
        (with_(inhibit_rules=[{"source_matchers": ["=x"]}]),
         "inhibit_rules.0.source_matchers: bad matcher format"),
        (with_(mute_time_intervals=[]), "mute_time_intervals: Extra inputs are not permitted"),
        (with_(escalation_policies=[{"name": "p", "tiers": [{"receivers": ["r"]}]}] * 2),
         "escalation_policies: duplicate escalation policy name(s): p"),
    ],
)  # fmt: skip
def test_bad_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ManagerConfig.from_yaml(text)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yml: cannot read"):
        ManagerConfig.load(tmp_path / "nope.yml")


def test_receivers_are_kept_raw_for_the_notifiers() -> None:
    cfg = ManagerConfig.load(EXAMPLE)
    assert cfg.receiver_configs["db-slack"] == {
        "name": "db-slack",
        "slack_configs": [{"api_url": "http://127.0.0.1:9095/slack/db", "channel": "#db-alerts"}],
    }
    assert sorted(cfg.policies) == ["db-oncall", "ops-oncall"]


def test_durations_in_prometheus_forms() -> None:
    cfg = ManagerConfig.from_yaml(
        with_(route={"receiver": "r", "group_wait": "1m30s", "repeat_interval": "1d"})
    )
    root = AlertManager(cfg).routes
    assert (root.group_wait_ms, root.repeat_interval_ms) == (90_000, 86_400_000)


def amtool() -> str:
    path = shutil.which("amtool")
    assert path, "amtool not found: install the Debian package prometheus-alertmanager"
    return path


def without_escalation(text: str) -> str:
    raw = yaml.safe_load(text)
    raw.pop("escalation_policies", None)

    def strip(route: dict) -> None:
        route.pop("escalation", None)
        for child in route.get("routes", []):
            strip(child)

    strip(raw["route"])
    return yaml.safe_dump(raw)


def test_example_is_alertmanager_shaped(tmp_path: Path) -> None:
    plain = tmp_path / "am.yml"
    plain.write_text(without_escalation(EXAMPLE.read_text()))
    result = subprocess.run([amtool(), "check-config", str(plain)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


ROUTES_TREE = """
route:
  receiver: notify-def
  routes:
  - matchers: ['{owner="team-A"}', '{level!="critical"}']
    receiver: notify-A
    routes:
    - {matchers: ['{env="testing"}', '{baz!~".*quux"}'], receiver: notify-testing}
    - {matchers: ['{env="production"}'], receiver: notify-productionA, continue: true}
    - {matchers: [env=~"produ.*", job=~".*"], receiver: notify-productionB}
  - {matchers: [owner=~"team-(B|C)"], receiver: notify-BC}
  - matchers: [group_by="role"]
    routes:
    - matchers: ['{env="testing"}']
      receiver: notify-testing
      routes:
      - {matchers: [wait="long"], receiver: notify-long, continue: true}
      - {matchers: ['wait!~"l.*"'], receiver: notify-notlong}
receivers: [{name: notify-def}, {name: notify-A}, {name: notify-testing},
  {name: notify-productionA}, {name: notify-productionB}, {name: notify-BC},
  {name: notify-long}, {name: notify-notlong}]
"""
VOCAB = {
    "owner": ["team-A", "team-B", "team-C", "team-AB"],
    "level": ["critical", "warning"],
    "env": ["testing", "production", "produx", "unset"],
    "baz": ["quux", "fooquux", "quuxfoo"],
    "job": ["j"],
    "group_by": ["role", "other"],
    "wait": ["long", "lo", "short"],
}


def test_routing_agrees_with_amtool(tmp_path: Path) -> None:
    cfg_file = tmp_path / "routes.yml"
    cfg_file.write_text(ROUTES_TREE)
    root = AlertManager.from_yaml(ROUTES_TREE).routes
    rng = random.Random(7)
    cases: list[dict[str, str]] = [{}] + [
        {k: rng.choice(v) for k, v in VOCAB.items() if rng.random() < 0.6} for _ in range(60)
    ]
    for labels in cases:
        args = [f"{k}={v}" for k, v in labels.items()]
        result = subprocess.run(
            [amtool(), "config", "routes", "test", f"--config.file={cfg_file}", *args],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        expected = result.stdout.strip().split(",")
        assert [r.receiver for r in root.match(labels)] == expected, labels


def test_example_receivers_parse_with_the_notifiers_parser() -> None:
    from monitoring.alerts.receivers import parse_receivers

    cfg = ManagerConfig.load(EXAMPLE)
    parsed = parse_receivers({"receivers": list(cfg.receivers)}, env={})
    assert sorted(parsed) == sorted(cfg.receiver_configs)
