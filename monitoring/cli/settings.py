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


def require_kafka_access(settings: Settings, timeout_s: float = 10.0) -> None:
    """For a command about to use Kafka: exit 1 naming the reason at once when the
    broker refuses ``kafka.security`` (a wrong password, an untrusted certificate),
    instead of reporting empty topics or timing out. A broker that does not answer
    within ``timeout_s`` is left to the command (which says so in its own way)."""
    from monitoring.runtime.admin import BrokerAccessDenied, BrokerUnavailable, wait_for_broker

    try:
        wait_for_broker(settings.kafka, timeout=timeout_s)
    except BrokerAccessDenied as e:
        raise refused(str(e)) from None
    except BrokerUnavailable:
        return
