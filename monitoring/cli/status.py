"""`monitoring status`: the whole deployment on one screen.

    monitoring status                 # processes, lag, windows, store, alerting, dead letters
    monitoring status --json          # for scripts; exit status 1 when something is unhealthy
    monitoring status --export        # also write the figures as series to the samples topic
    monitoring status --export --watch 15   # ... every 15 s, until stopped
    monitoring status --forget ID     # a process gone for good leaves the status

The rules behind the exit status: docs/operations.md ("Health and status").
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
_STYLE = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}
MAX_LAG_ROWS = 40


def status(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    export: Annotated[
        bool, typer.Option("--export", help="Write the figures as series to the samples topic.")
    ] = False,
    watch: Annotated[
        float,
        typer.Option(help="With --export: repeat every this many seconds (0: once).", min=0),
    ] = 0.0,
    forget: Annotated[
        str | None, typer.Option(help="Remove a process id from the status (a tombstone).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each broker read may take.", min=0.5)
    ] = 10.0,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Settings file (default monitoring.yaml).")
    ] = None,
) -> None:
    """Each process (heartbeats), consumer lag, closed windows, store, alerting, notifier
    and dead letters; exit 1 when something is unhealthy."""
    from monitoring.cli.settings import load_settings, require_kafka_access
    from monitoring.log import configure_logging
    from monitoring.ops import status_kafka
    from monitoring.ops.checks import exit_code
    from monitoring.ops.status import judge

    configure_logging("WARNING")  # stdout is the status (or JSON); logs go to stderr
    settings = load_settings(config)
    require_kafka_access(settings, min(timeout, 10.0))
    if forget:
        status_kafka.forget(settings, forget, timeout)
        typer.echo(f"forgot {forget}")
        return
    if watch and not export:
        raise typer.BadParameter("--watch repeats --export; use it with --export")
    stop = threading.Event()
    if watch:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    collector = _collector(settings) if export else None
    limits = status_kafka.limits_of(settings)
    code = 0
    try:
        while True:
            report = status_kafka.gather(settings, timeout)
            results = judge(report, limits)
            code = exit_code(results)
            if collector is not None:
                n = status_kafka.export(collector, report, settings, timeout)
                if watch:
                    _log_round(report, results, n)
                if not watch:
                    console.print(f"exported {n} samples", style="dim", highlight=False)
            if not watch:
                _show(report, results, limits.stale_after_ms, as_json)
            if not watch or stop.wait(watch):
                break
    finally:
        if collector is not None:
            collector.close(timeout)
    raise typer.Exit(code)


def _collector(settings: Any) -> Any:
    from monitoring.sdk.producer import MetricsCollector

    return MetricsCollector(settings, source="monitoring-status", on_full="drop")


def _ago(now_ms: int, t_ms: int) -> str:
    from monitoring.ops.status import duration_text

    return duration_text(now_ms - t_ms)


def _log_round(report: Any, results: Any, exported: int) -> None:
    from monitoring.log import get_logger
    from monitoring.ops.checks import worst

    get_logger("status").warning(
        "status_exported", status=worst(results).value, samples=exported,
        processes=len(report.heartbeats), errors=report.errors[:3],
    )  # fmt: skip


def _show(report: Any, results: Any, stale_after_ms: int, as_json: bool) -> None:
    from monitoring.ops.status import to_json

    if as_json:
        typer.echo(json.dumps(to_json(report, results), indent=2))
        return
    now = report.now_ms
    for r in results:
        console.print(
            f"[{_STYLE[r.status.value]}]{r.status.value:<5}[/] {r.name:<13} {r.detail}",
            highlight=False,
            soft_wrap=True,
        )
        if r.hint and r.status.value != "OK":
            console.print(f"{'':<19} fix: {r.hint}", style="dim", highlight=False)
    live = {hb.id for hb in report.live()}
    t = Table(title="processes (heartbeats)", title_justify="left")
    for col in ("kind", "id", "version", "up", "last seen", "ready", "figures"):
        t.add_column(col, overflow="fold")
    for hb in report.heartbeats:
        seen = _ago(now, hb.sent_ms)
        stale = now - hb.sent_ms > stale_after_ms
        state = (
            "replaced" if hb.id not in live else "STALE" if stale else "yes" if hb.ready else "no"
        )
        figures = ", ".join(f"{k}={_short(v)}" for k, v in list(hb.figures.items())[:8])
        reasons = "; ".join(hb.reasons)
        t.add_row(
            hb.kind,
            hb.id,
            hb.version,
            _ago(now, hb.started_ms),
            seen,
            f"[{'green' if state == 'yes' else 'red'}]{state}[/] {reasons}".strip(),
            figures,
        )
    console.print(t)
    lag = sorted(report.lag, key=lambda r: -r.lag)
    if lag:
        t = Table(title="consumer lag (committed offsets vs high watermarks)", title_justify="left")
        for col in ("group", "topic", "partition", "committed", "end", "lag"):
            t.add_column(
                col, justify="right" if col in ("partition", "committed", "end", "lag") else "left"
            )
        for row in lag[:MAX_LAG_ROWS]:
            committed = "-" if row.committed is None else str(row.committed)
            t.add_row(
                row.group, row.topic, str(row.partition), committed, str(row.high), str(row.lag)
            )
        if len(lag) > MAX_LAG_ROWS:
            t.caption = f"{len(lag) - MAX_LAG_ROWS} more partitions with less lag (--json has all)"
        console.print(t)
    closed = report.closed_through()
    if closed:
        marks = "  ".join(f"{p}: {_ago(now, ms)} ago" for p, ms in closed.items())
        console.print(f"[bold]closed through[/] (samples partitions)  {marks}", highlight=False)
    if report.dead_letters:
        counts = ", ".join(
            f"{r}: {n}" for r, n in sorted(report.dead_letters.items(), key=lambda x: -x[1])
        )
        console.print(f"[bold]dead letters, last hour[/]  {counts}", highlight=False)


def _short(v: Any) -> str:
    text = json.dumps(v, separators=(",", ":")) if isinstance(v, dict | list) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def register(app: typer.Typer) -> None:
    """Add ``status`` to the root CLI."""
    app.command("status")(status)
