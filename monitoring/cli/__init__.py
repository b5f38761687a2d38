"""The one CLI entry point, ``monitoring``: every process role is a sub-command.

Each command group lives in its own module of this package and is registered here.
"""

from __future__ import annotations

import faulthandler
import signal

import typer

from monitoring.cli import (
    alerts,
    anomaly,
    bench,
    broker,
    chaos,
    collect,
    config,
    dlq,
    doctor,
    logs,
    perf,
    pipeline,
    plot,
    produce,
    query,
    receive,
    report,
    rules,
    scrape,
    state,
    status,
    store,
    ui,
)

app = typer.Typer(
    name="monitoring",
    help="Streaming monitoring pipeline: Kafka, Faust workers, ClickHouse store.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(broker.app, name="broker")
app.add_typer(store.app, name="store")
app.add_typer(bench.app, name="bench")
app.add_typer(anomaly.app, name="anomaly")
app.add_typer(rules.app, name="rules")
app.add_typer(alerts.app, name="alerts")
app.add_typer(logs.app, name="logs")
app.add_typer(report.app, name="report")
app.add_typer(collect.app, name="collect")
app.add_typer(perf.app, name="perf")
app.add_typer(dlq.app, name="dlq")
app.add_typer(config.app, name="config")
app.add_typer(state.app, name="state")
pipeline.register(app)
plot.register(app)
produce.register(app)
query.register(app)
scrape.register(app)
ui.register(app)
receive.register(app)
doctor.register(app)
status.register(app)
chaos.register(app)


def main() -> None:
    """Console-script entry point. ``kill -USR1 <pid>`` writes every thread's Python
    stack to the process's stderr (its log), for a process that seems stuck."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    app()
