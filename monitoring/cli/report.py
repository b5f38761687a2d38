"""`monitoring report run|templates|schedule`: reports of a period from the store.

``run`` computes the sections of the ``--period`` up to now (or ``--until``) through the
running store (or an in-process query server over its chDB directory) and writes HTML or
PDF. ``schedule`` runs the ``reporting`` configuration's schedule (daily, weekly): one
report per period, remembered across restarts, delivered by e-mail, kept for a retention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from monitoring.cli.settings import load_settings
from monitoring.cli.store import ConfigOpt

app = typer.Typer(help="Reports of a period: alerts, anomalies, logs, models, resources, SLOs.")
err = Console(stderr=True)
SECTIONS = ("slo", "alerts", "anomalies", "logs", "models", "resources", "performance")


def _sections(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise typer.BadParameter(
            f"unknown section(s) {', '.join(bad)}: choose from {', '.join(SECTIONS)}",
            param_hint="--sections",
        )
    return names


@app.command("run")
def run(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    period: Annotated[str, typer.Option(help="Length of the period: 1d, 7d, 6h...")] = "1d",
    until: Annotated[float | None, typer.Option(help="End, Unix seconds (default now).")] = None,
    template: Annotated[
        str, typer.Option(help="A packaged template's name or a Jinja2 file.")
    ] = "default",
    fmt: Annotated[str, typer.Option("--format", "-f", help="pdf or html.")] = "pdf",
    title: Annotated[str, typer.Option(help="Title (default: period and end).")] = "",
    sections: Annotated[str | None, typer.Option(help=f"Some of {','.join(SECTIONS)}.")] = None,
    slo_target: Annotated[float, typer.Option(help="Availability target, 0-1.")] = 0.999,
    url: Annotated[
        str | None,
        typer.Option(
            help="Store URL (default from settings; only then, when no store answers, "
            "an in-process copy over storage.dsn)."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a report of the last ``--period`` as PDF or HTML."""
    from monitoring.cli.plot import check_out, duration_s, end_s, save
    from monitoring.query.client import StoreError, open_store
    from monitoring.reports import ReportError, ReportGenerator

    if fmt not in ("pdf", "html"):
        err.print(f"[red]--format must be pdf or html, not {escape(repr(fmt))}[/]")
        raise typer.Exit(2)
    if not 0 < slo_target < 1:
        err.print("[red]--slo-target must be between 0 and 1 (0.999 is 99.9 %)[/]")
        raise typer.Exit(2)
    check_out(out)
    span = duration_s(period, "period")
    chosen = _sections(sections)
    generator = ReportGenerator()
    end = end_s(until)
    settings = load_settings(config)
    try:
        generator.check_template(template)
        with open_store(settings, url, fallback=url is None) as client:
            data = generator.collect(client, span, end, title, chosen, slo_target)
        report = generator.generate(data, template, "pdf" if fmt == "pdf" else "html")
    except (StoreError, ReportError) as e:
        err.print(f"[red]report failed:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    save(report, out)
    empty = [s.title for s in data.sections if s.empty]
    note = f"; no data: {', '.join(empty)}" if empty else ""
    typer.echo(f"{out}: {len(data.sections)} sections, {len(report.content)} bytes{note}", err=True)


@app.command("templates")
def templates() -> None:
    """List the packaged templates."""
    from monitoring.reports.generator import template_names

    for name in template_names():
        typer.echo(name)


@app.command("schedule")
def schedule(
    once: Annotated[bool, typer.Option(help="Report the due period, if any, and exit.")] = False,
    url: Annotated[str | None, typer.Option(help="Store URL (default from settings).")] = None,
    config: ConfigOpt = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Run the ``reporting`` schedule: one report per period, mailed and posted to Slack
    (a link), kept for a retention."""
    import signal
    import threading
    from typing import Any

    from monitoring.log import configure_logging
    from monitoring.reports import ReportError
    from monitoring.reports.schedule import ReportScheduler

    settings = load_settings(config)
    configure_logging(log_level.upper(), file=settings.logging)
    try:
        scheduler = ReportScheduler(settings, url)
    except (ValueError, ReportError) as e:
        err.print(f"[red]{escape(str(e))}[/]")
        raise typer.Exit(2) from None
    if once:
        from monitoring.query.client import StoreError
        from monitoring.sinks.notifiers.base import DeliveryError

        try:
            path = scheduler.run_once()
        except (StoreError, ReportError, DeliveryError, OSError) as e:
            err.print(f"[red]report failed:[/] {escape(str(e))}")
            raise typer.Exit(1) from None
        done = "nothing due: the last period was reported (or another scheduler reports it)"
        typer.echo(f"{path}" if path else done, err=True)
        return
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    scheduler.run(stop)
