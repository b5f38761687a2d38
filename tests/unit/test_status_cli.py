"""``monitoring status`` options checked before any broker is asked."""

from __future__ import annotations

from typer.testing import CliRunner

from monitoring.cli import app


def test_watch_needs_export() -> None:
    result = CliRunner().invoke(app, ["status", "--watch", "5"])
    assert result.exit_code == 2
    assert "repeats" in result.output  # (rich may wrap the message)


def test_status_is_a_command_with_its_options() -> None:
    result = CliRunner().invoke(app, ["status", "--help"])
    assert result.exit_code == 0
    for option in ("--json", "--export", "--watch", "--forget", "--timeout"):
        assert option in result.output
