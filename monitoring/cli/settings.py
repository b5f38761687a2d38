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


def require_kafka_permissions(settings: Settings, role: str, timeout_s: float = 15.0) -> None:
    """For a process of kind ``role`` (``runtime.acls``) at start: exit 1 naming every
    permission it needs that the broker's authorizer refuses ``kafka.security``'s user
    (or naming a refused login), instead of failing at its first fetch or produce. A
    broker that does not answer in time is left to the process. Skipped on PLAINTEXT
    (every client is ``User:ANONYMOUS`` there: no principal per process)."""
    from confluent_kafka import KafkaError, KafkaException

    from monitoring.runtime.access import require_permissions
    from monitoring.runtime.kafka_client import KafkaAccessDenied, access_problem

    if settings.kafka.security.protocol == "PLAINTEXT":
        return
    try:
        require_permissions(settings.kafka, role, timeout_s)
    except KafkaAccessDenied as e:
        raise refused(str(e)) from None
    except KafkaException as e:
        err = e.args[0] if e.args else None
        problem = access_problem(settings.kafka, err) if isinstance(err, KafkaError) else None
        if problem is not None:
            raise refused(problem) from None
    except TimeoutError:
        return


def prepare_kafka(settings: Settings, role: str) -> None:
    """For a long-running process of kind ``role`` at start: its topics made or checked,
    then its permissions; exit 1 naming a refused login or certificate or every missing
    ACL."""
    from monitoring.runtime.admin import ensure_topics
    from monitoring.runtime.kafka_client import KafkaAccessDenied

    try:
        ensure_topics(settings)
    except KafkaAccessDenied as e:
        raise refused(str(e)) from None
    require_kafka_permissions(settings, role)
