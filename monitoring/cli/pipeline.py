"""Process roles of the pipeline: ``monitoring worker`` and ``monitoring demo``."""

from __future__ import annotations

import typer

from monitoring.config import ConfigError, Settings


def load_settings(config: str | None) -> Settings:
    """Settings from ``config`` (or the default file), exiting with the reason if bad."""
    try:
        return Settings.load(config) if config else Settings.load()
    except ConfigError as e:
        typer.secho(f"configuration error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None


def worker(
    config: str | None = typer.Option(None, "--config", "-c", help="YAML settings file"),
    loglevel: str = typer.Option("warning", help="Faust's own log level"),
) -> None:
    """Run a stream worker (aggregation agent). Start more to scale out."""
    from faust.worker import Worker
    from prometheus_client import CollectorRegistry, start_http_server

    from monitoring.agents.aggregation import AggregationAgent
    from monitoring.log import configure_logging, get_logger
    from monitoring.streams.admin import ensure_topics
    from monitoring.streams.app import create_app

    settings = load_settings(config)
    configure_logging()
    ensure_topics(settings)
    registry = CollectorRegistry()
    log = get_logger("worker")
    if settings.worker.metrics_port:
        try:
            start_http_server(settings.worker.metrics_port, addr="127.0.0.1", registry=registry)
        except OSError as e:
            log.warning("metrics_port_unavailable", port=settings.worker.metrics_port, error=str(e))
    app = create_app(settings)
    AggregationAgent(app, settings, registry)
    log.info(
        "worker_starting",
        bootstrap=settings.kafka.bootstrap_servers,
        windows_ms=settings.aggregation.windows_ms,
        metrics_port=settings.worker.metrics_port,
    )
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command()(worker)
