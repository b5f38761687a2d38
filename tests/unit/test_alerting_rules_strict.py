"""The alert evaluator's rules load whole or not at all: at start a missing or bad file
stops it (naming file, rule and reason); a reload that does not load keeps the running
rules, as Prometheus does, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from typer.testing import CliRunner

from monitoring.agents.alerting import AlertingAgent, load_rules
from monitoring.cli import app
from monitoring.config import ConfigError, Settings

GOOD = "groups: [{name: g, rules: [{alert: Hot, expr: temp > 80}]}]"
TWO = "groups: [{name: g, rules: [{alert: Hot, expr: temp > 80}, {alert: Cold, expr: temp < 5}]}]"
BAD = "groups: [{name: g, rules: [{alert: Broken, expr: 'rate(temp[1m] @ 100)'}]}]"


def files(tmp_path: Path, **texts: str) -> list[str]:
    out = []
    for name, text in texts.items():
        (tmp_path / f"{name}.yml").write_text(text)
        out.append(str(tmp_path / f"{name}.yml"))
    return out


def test_good_files_load(tmp_path: Path) -> None:
    rs = load_rules(files(tmp_path, a=GOOD, b=TWO))
    assert [r.name for r in rs.rules] == ["Hot", "Hot", "Cold"]


@pytest.mark.parametrize(
    ("texts", "extra", "fragment"),
    [
        ({"good": GOOD, "bad": BAD}, [], "bad.yml: group 'g': rule 'Broken': "),
        ({"good": GOOD, "yaml": "groups: [unclosed"}, [], "yaml.yml: invalid YAML"),
        ({"good": GOOD}, ["missing.yml"], "missing.yml: cannot read"),
        ({"good": GOOD}, ["nothing-*.yml"], "nothing-*.yml: cannot read"),  # a glob, no match
        ({"empty": ""}, [], "no rules in"),
        ({}, [], "no rule files"),
    ],
)
def test_a_missing_or_bad_file_or_no_rule_at_all_fails(
    tmp_path: Path, texts: dict[str, str], extra: list[str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_rules(files(tmp_path, **texts) + [str(tmp_path / x) for x in extra])
    assert str(e.value).startswith("alerting.rules: ")
    assert fragment in str(e.value)


def test_the_agent_refuses_to_start_with_a_bad_rule_file(tmp_path: Path) -> None:
    s = Settings(alerting={"rules": files(tmp_path, good=GOOD, bad=BAD)})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rule 'Broken'"):
        AlertingAgent(s, CollectorRegistry())


def test_the_cli_exits_before_touching_the_broker(tmp_path: Path) -> None:
    paths = files(tmp_path, good=GOOD, bad=BAD)
    env = {"MONITORING_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # nothing listens
    res = CliRunner().invoke(app, ["alerts", "evaluate", "--rules", paths[1]], env=env)
    assert res.exit_code == 2, res.output
    assert "rule 'Broken'" in res.output


def test_a_reload_that_does_not_load_keeps_the_running_rules(tmp_path: Path) -> None:
    (path,) = files(tmp_path, rules=GOOD)
    registry = CollectorRegistry()
    agent = AlertingAgent(Settings(alerting={"rules": [path]}), registry)  # type: ignore[arg-type]
    reload_ok = lambda: registry.get_sample_value("alerting_rules_last_reload_successful")  # noqa: E731
    assert [r.name for r in agent.engine.rules] == ["Hot", "Watchdog"] and reload_ok() == 1

    Path(path).write_text(TWO.replace("temp < 5", "'rate(temp[1m] @ 100)'"))
    with capture_logs() as logs:
        assert agent.reload_rules() is False
    assert [r.name for r in agent.engine.rules] == ["Hot", "Watchdog"]  # the old set runs on
    assert reload_ok() == 0
    (failed,) = [e for e in logs if e["event"] == "rules_reload_failed"]
    assert "rule 'Cold'" in failed["error"] and failed["kept_rules"] == 1
    assert "rule 'Cold'" in str(agent.health()["last_reload_error"])

    Path(path).unlink()
    assert agent.reload_rules() is False
    assert [r.name for r in agent.engine.rules] == ["Hot", "Watchdog"]

    Path(path).write_text(TWO)
    agent.request_reload()  # as SIGHUP does; the loop calls reload_rules
    assert agent.reload_rules() is True
    assert [r.name for r in agent.engine.rules] == ["Hot", "Cold", "Watchdog"]
    assert reload_ok() == 1 and agent.health()["last_reload_error"] is None
    assert registry.get_sample_value("alerting_rules") == 2
