"""Settings for a command: loaded in one place, a bad file reported in one way."""

from __future__ import annotations

import typer

from monitoring.config import ConfigError, Settings


def load_settings(config: str | None = None) -> Settings:
    """Settings from ``config`` (or the default file); exit 2 naming the key if bad."""
    try:
        return Settings.load(config) if config else Settings.load()
    except ConfigError as e:
        typer.secho(f"configuration error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None


def refused(reason: str) -> typer.Exit:
    """Print why Kafka refused this process (its credentials or its TLS trust) and
    return the exit (status 1) to raise: a supervisor restarting it will not help."""
    typer.secho(f"error: {reason}", fg="red", err=True)
    return typer.Exit(1)
