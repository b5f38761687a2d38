"""Files nested past the parsers' recursion (PyYAML composes recursively, ``json``
too): RecursionError is neither a YAMLError nor a ValueError, so code that caught only
those failed whole. A file_sd targets file of 50,000 nested lists escaped the scraper's
"keep the previous targets" path."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.ingest.scrape_config import ScrapeFile
from monitoring.ingest.targets import JobTargets


@pytest.mark.parametrize("name", ["targets.yml", "targets.json"])
def test_a_deep_file_sd_file_is_a_counted_error(tmp_path: Path, name: str) -> None:
    sd = tmp_path / name
    sd.write_text("- targets: ['a:1']\n" if name.endswith("yml") else '[{"targets": ["a:1"]}]')
    j = ScrapeFile.parse({"scrape_configs": [{"job_name": "n", "file_sd_configs": [
        {"files": [name]}]}]}).jobs()[0]  # fmt: skip
    jt = JobTargets(j, base=tmp_path, max_sd_bytes=1 << 20)
    assert [t.url for t in jt.targets()] == ["http://a:1/metrics"]
    sd.write_text("[" * 50_000 + "]" * 50_000)
    assert [t.url for t in jt.targets()] == ["http://a:1/metrics"]  # the previous kept
    assert jt.file_sd is not None and jt.file_sd.errors == 1


DEEP = "[" * 50_000 + "]" * 50_000


def test_a_deep_settings_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitoring.config import ConfigError, Settings

    path = tmp_path / "monitoring.yaml"
    path.write_text(DEEP)
    monkeypatch.delenv("MONITORING_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="nested too deep"):
        Settings.load(path)


def test_a_deep_rule_file_is_a_rule_error() -> None:
    """A reload of such a file raised past the rule loader's errors (the old rules are
    kept only when the loader reports errors)."""
    from monitoring.alerts.rules import load_rules_text

    rs = load_rules_text(DEEP, "deep.yml")
    assert rs.rules == [] and "nested too deep" in str(rs.errors[0])


def test_a_deep_notifier_config_is_a_config_error() -> None:
    from monitoring.alerts.manager_config import ManagerConfig
    from monitoring.config import ConfigError

    with pytest.raises(ConfigError, match="nested too deep"):
        ManagerConfig.from_yaml(DEEP, "am.yml")
