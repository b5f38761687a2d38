"""``monitoring config check FILE`` and ``monitoring config show``.

``check`` loads FILE (either shape: the settings' sections, or the platform's
``monitoring:`` document) under the environment's overrides and exits 0, or 2 naming
every bad key and why. ``show`` prints the effective settings as YAML, durations
written as durations and every secret (``SecretStr``: tokens, passwords) as ``***``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import typer
import yaml
from pydantic import BaseModel, SecretStr

from monitoring.config import ConfigError, Settings, _fmt

app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)

REDACTED = "***"


def redacted(value: Any) -> Any:
    """Settings as plain data: durations as ``60s``, secrets as ``***`` (empty stays '')."""
    if isinstance(value, BaseModel):
        return {
            (f.alias or k): redacted(getattr(value, k)) for k, f in type(value).model_fields.items()
        }
    if isinstance(value, SecretStr):
        return REDACTED if value.get_secret_value() else ""
    if isinstance(value, timedelta):
        return _fmt(value)
    if isinstance(value, dict):
        return {str(k): redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value


def _load(path: str | None) -> Settings:
    if path is None:
        return Settings.load()
    old = os.environ.get("MONITORING_CONFIG")
    os.environ["MONITORING_CONFIG"] = path  # this file, under the other overrides
    try:
        return Settings.load(path)
    finally:
        if old is None:
            del os.environ["MONITORING_CONFIG"]
        else:
            os.environ["MONITORING_CONFIG"] = old


@app.command("check")
def check(file: str = typer.Argument(..., help="configuration file (YAML)")) -> None:
    """Load FILE; exit 2 naming each bad key and the reason."""
    try:
        settings = _load(file)
    except ConfigError as e:
        typer.secho(f"configuration error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    rules = len(settings.alerting.definitions)
    typer.echo(f"{file}: OK ({rules} rules in the configuration, mode {settings.python_api.mode})")


@app.command("show")
def show(
    config: str | None = typer.Option(None, "--config", help="file (default monitoring.yaml)"),
) -> None:
    """Print the effective settings as YAML, secrets redacted."""
    try:
        settings = _load(config)
    except ConfigError as e:
        typer.secho(f"configuration error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(yaml.safe_dump(redacted(settings), sort_keys=False, allow_unicode=True), nl=False)
