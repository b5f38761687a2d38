"""Process roles of the pipeline: ``monitoring worker`` and ``monitoring demo``."""

from __future__ import annotations

import typer

from monitoring.cli.settings import load_settings


def worker(
    config: str | None = typer.Option(None, "--config", "-c", help="YAML settings file"),
    loglevel: str = typer.Option("warning", help="Faust's own log level"),
) -> None:
    """Run a stream worker (aggregation agent). Start more to scale out."""
    from faust.worker import Worker
    from prometheus_client import CollectorRegistry

    from monitoring.agents.aggregation import AggregationAgent
    from monitoring.log import configure_logging, get_logger
    from monitoring.status_server import StatusServer
    from monitoring.streams.admin import ensure_topics
    from monitoring.streams.app import create_app

    settings = load_settings(config)
    configure_logging()
    ensure_topics(settings)
    registry = CollectorRegistry()
    log = get_logger("worker")
    app = create_app(settings)
    agent = AggregationAgent(app, settings, registry)
    if settings.worker.metrics_port:
        try:
            StatusServer(registry, "127.0.0.1", settings.worker.metrics_port, agent.health).start()
        except OSError as e:
            log.warning("metrics_port_unavailable", port=settings.worker.metrics_port, error=str(e))
    log.info(
        "worker_starting",
        bootstrap=settings.kafka.bootstrap_servers,
        windows_ms=settings.aggregation.windows_ms,
        metrics_port=settings.worker.metrics_port,
    )
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


def demo(
    duration: float = typer.Option(60, help="seconds of load"),
    series: int = typer.Option(200, help="series the load generator produces"),
    rate: float = typer.Option(2000, help="samples per second"),
    keep: bool = typer.Option(False, help="leave the worker and store running at the end"),
    config: str | None = typer.Option(None, "--config", "-c", help="YAML settings file"),
) -> None:
    """Run the pipeline locally: a worker, the store, a load generator; print aggregates.

    Needs a broker (``monitoring broker up``; ``make demo`` starts it). Topics use the
    prefix ``demo.`` and ClickHouse lives in ``.data/demo/chdb``.
    """
    import subprocess
    import threading
    from pathlib import Path

    from rich.console import Console

    from monitoring.deploy import BIN, LocalDeployment

    console = Console()
    settings = load_settings(config)
    d = LocalDeployment(
        settings.kafka.bootstrap_servers,
        Path(".data/demo"),
        prefix="demo.",
        query_port=settings.storage.query_port,
    )
    console.print(f"[bold]demo[/bold]: store on http://127.0.0.1:{d.query_port}, logs in {d.dir}")
    d.start_store()
    d.start("worker", "worker")
    sql = (
        "SELECT series, formatDateTime(window_start, '%T') AS start, count, "
        "round(mean, 2) AS mean, round(p99, 2) AS p99 FROM aggregates FINAL "
        "WHERE window_ms = 10000 AND name NOT LIKE '%_bucket' "
        "ORDER BY window_start DESC, series LIMIT 10"
    )

    def show_when_ready() -> None:
        try:
            d.wait(lambda: d.query("SELECT count() FROM aggregates")[0][0] > 0, 90, "aggregates")
        except (TimeoutError, RuntimeError) as e:
            console.print(f"[red]{e}[/red]")
            return
        console.print("[bold green]first windowed aggregates are in ClickHouse:[/bold green]")
        subprocess.run([str(BIN), "query", sql], env=d.env, check=False)

    shower = threading.Thread(target=show_when_ready, daemon=True)
    shower.start()
    try:
        subprocess.run(
            [
                str(BIN),
                "loadgen",
                "--series",
                str(series),
                "--rate",
                str(rate),
                "--duration",
                str(duration),
            ],
            env=d.env,
            check=False,
        )
        shower.join(90)
        console.print("[bold]latest aggregates[/bold] (`monitoring query` goes through the store):")
        subprocess.run([str(BIN), "query", sql], env=d.env, check=False)
        counts = d.query("SELECT count() FROM aggregates FINAL")[0][0]
        raw = d.query("SELECT count() FROM samples FINAL")[0][0]
        console.print(f"{counts:,} aggregate rows and {raw:,} raw samples stored")
    finally:
        if keep:
            console.print(f"left running: pids {[p.pid for p in d.procs.values()]}")
        else:
            d.stop_all()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command()(worker)
    app.command()(demo)
