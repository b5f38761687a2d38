"""The dlq and doctor commands refuse bad arguments before touching a broker, and the
doctor stops at a bad configuration with the key named (exit 1, one FAIL line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitoring.cli import app

runner = CliRunner()
NO_BROKER = {"MONITORING_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "MONITORING_CONFIG": ""}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["dlq", "list", "--since", "soon"], "--since"),
        (["dlq", "list", "--bucket", "0x"], "--bucket"),
        (["dlq", "show", "1;2"], "selection"),
        (["dlq", "show", "9-3"], "ends before it starts"),
        (["dlq", "replay"], "name what to replay"),
        (["dlq", "replay", "abc", "--dry-run"], "selection"),
    ],
)
def test_bad_arguments_exit_2_before_any_broker_call(
    args: list[str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_broker_call(*_: object) -> None:
        raise AssertionError("the broker was asked before the arguments were checked")

    monkeypatch.setattr("monitoring.cli.dlq.require_kafka_access", no_broker_call)
    result = runner.invoke(app, args, env=NO_BROKER)
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_doctor_stops_at_a_bad_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("kafka:\n  samples_partitions: 0\n")
    result = runner.invoke(app, ["doctor", "--json", "--config", str(bad)], env=NO_BROKER)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert [c["check"] for c in doc["checks"]] == ["config"]
    assert doc["checks"][0]["status"] == "FAIL"
    assert "samples_partitions" in doc["checks"][0]["detail"]
