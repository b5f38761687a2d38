"""`monitoring ui`: the dashboards web app on loopback (port 3000 by default).

It reads the running store (``monitoring store run``) through its Prometheus API and
ClickHouse interface; dashboards come from ``infra/dashboards`` and ``ui.dashboards_dir``.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.console import Console

from monitoring.cli.settings import load_settings

console = Console(stderr=True)


def ui(
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Settings file (default monitoring.yaml).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default ui.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default ui.port, 3000).")] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Serve the dashboards web app until SIGTERM/SIGINT."""
    from monitoring.config import ConfigError
    from monitoring.log import configure_logging, get_logger
    from monitoring.ui.server import UiServer

    settings = load_settings(config)
    configure_logging(log_level.upper(), file=settings.logging)
    log = get_logger("ui")
    try:
        server = UiServer(settings, host=host, port=port).start()
    except ConfigError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    except OSError as e:
        console.print(f"[red]cannot serve the UI: {e}[/]")
        raise typer.Exit(1) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("ui_serving", url=server.url, store=server.store.url)
    console.print(f"dashboards on {server.url} (store {server.store.url})")
    stop.wait()
    server.stop()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command()(ui)
