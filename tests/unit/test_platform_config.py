"""The platform's example configuration (examples/monitoring.yaml) loads as written and
maps onto the real settings; a wrong key fails with its path and the reason;
``monitoring config check|show``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitoring.cli import app
from monitoring.config import ConfigError, Settings

EXAMPLE = Path(__file__).parents[2] / "examples" / "monitoring.yaml"


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONITORING_CONFIG", raising=False)


def test_example_configuration_maps_onto_the_settings() -> None:
    s = Settings.load(EXAMPLE)
    assert s.collection.interval == timedelta(seconds=60)
    assert s.collection.batch_size == 1000
    assert s.storage.retention.aggregates == timedelta(days=30)
    assert s.storage.retention.samples == timedelta(days=7)  # shorter already: kept
    assert s.storage.compression == "zstd"
    assert [d["name"] for d in s.alerting.definitions] == ["high_cpu", "high_memory"]
    assert s.notifier.channels == ["email", "slack", "pagerduty"]
    assert s.ui.refresh == timedelta(seconds=60)
    assert s.ui.max_range == timedelta(days=7)
    assert s.plots.types == ["line", "bar", "scatter"]
    assert (s.reporting.schedule, s.reporting.format) == ("daily", "pdf")
    assert (s.logging.level, s.logging.rotation, s.logging.compress) == ("INFO", "midnight", True)


def test_example_rules_load_as_the_evaluator_loads_them() -> None:
    from monitoring.agents.alerting import load_rules

    s = Settings.load(EXAMPLE)
    rs = load_rules([], s.alerting.definitions)
    assert [(r.name, r.expr, r.for_ms) for r in rs.rules] == [
        ("high_cpu", "cpu_usage > 80", 300_000),
        ("high_memory", "memory_usage > 90", 300_000),
    ]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("monitoring:\n  metrics:\n    colection: {}\n",
         "monitoring.metrics.colection: unknown key (allowed: collection, storage)"),
        ("monitoring:\n  metrics:\n    collection: {interval: 60 seconds}\n",
         "monitoring.metrics.collection.interval: Value error, invalid duration"),
        ("monitoring:\n  visualization:\n    plots: {types: [pie]}\n",
         "monitoring.visualization.plots.types.0: Input should be"),
        ("monitoring:\n  alerts:\n    rules: [{name: x, condition: cpu >> 80%}]\n",
         "alerting.definitions: Value error, configuration: group 'config': rule 'x'"),
        ("monitoring:\n  logging: {level: LOUD}\n", "logging.level: Input should be"),
        ("monitoring:\n  kafka: {bootstrap: x}\n", "kafka.bootstrap: Extra inputs"),
        ("monitoring: {}\nkafka: {}\n", "kafka: unknown key beside 'monitoring'"),
    ],
)  # fmt: skip
def test_a_wrong_key_names_its_path_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.load(_write(tmp_path, text))
    assert expected in str(e.value)


def test_real_sections_inside_monitoring_win(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "monitoring:\n  metrics: {collection: {interval: 5m}}\n"
        "  collection: {interval: 30s}\n  python_api: {mode: local}\n",
    )
    s = Settings.load(p)
    assert s.collection.interval == timedelta(seconds=30)
    assert s.python_api.mode == "local"


def test_config_check_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "check", str(EXAMPLE)])
    assert ok.exit_code == 0, ok.output
    assert "OK (2 rules" in ok.output
    bad = runner.invoke(app, ["config", "check", str(_write(tmp_path, "monitoring: {x: 1}\n"))])
    assert bad.exit_code == 2
    assert "x: Extra inputs are not permitted" in bad.output
    monkeypatch.setenv("MONITORING_API__TOKEN", "t0ps3cret-token")
    monkeypatch.setenv("MONITORING_REPORTING__EMAIL__AUTH_PASSWORD", "p4ss-w0rd")
    shown = runner.invoke(app, ["config", "show", "--config", str(EXAMPLE)])
    assert shown.exit_code == 0, shown.output
    assert "t0ps3cret" not in shown.output and "p4ss-w0rd" not in shown.output
    assert "token: '***'" in shown.output and "auth_password: '***'" in shown.output
    assert "from: monitoring@localhost" in shown.output  # keys as they are written
    assert "aggregates: 30d" in shown.output and "interval: 1m" in shown.output


def test_plot_types_bound_the_plot_command(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "monitoring:\n  visualization:\n    plots: {types: [line]}\n")
    out = CliRunner().invoke(
        app, ["plot", "up", "--out", str(tmp_path / "p.png"), "--type", "bar", "--config", str(cfg)]
    )
    assert out.exit_code == 2
    assert "--type bar: not one of plots.types (line)" in out.output
