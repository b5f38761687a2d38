"""`monitoring plot '<PromQL or SQL>' --out x.png|svg|pdf|html`: a plot of the store's data.

PromQL is asked as a range query over ``--since`` (up to ``--until``, default now) at a
step that gives at most one point per pixel of the plot's width; SQL (a statement
starting with SELECT, WITH...) runs as it is, with ``{start:DateTime64(3)}`` and
``{end:DateTime64(3)}`` bound to the range when it uses them. Through the running store,
or an in-process query server over its chDB directory when none runs.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from monitoring.cli.settings import load_settings
from monitoring.cli.store import ConfigOpt

err = Console(stderr=True)
SQL = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN)\b", re.I)
MAX_SPAN_S = 400 * 86_400  # a year and more: the aggregates' retention is 30 days
MAX_TIME_S = 253_402_300_799  # 9999-12-31 23:59:59 UTC, the last second datetime shows


def is_sql(query: str) -> bool:
    """Whether ``query`` is SQL rather than PromQL.

    >>> is_sql("  select 1"), is_sql("rate(x[5m])")
    (True, False)
    """
    return SQL.match(query) is not None


def duration_s(text: str, name: str) -> float:
    """Seconds of a Prometheus duration (``6h``, ``1d``, ``90s``) or a number of seconds."""
    from monitoring.query.prom_format import BadParam, parse_duration

    try:
        ms = parse_duration(text, name)
    except BadParam as e:
        raise typer.BadParameter(str(e).split(": ", 1)[-1], param_hint=f"--{name}") from None
    if ms <= 0 or ms / 1000 > MAX_SPAN_S:
        raise typer.BadParameter(
            f"must be between 1ms and {MAX_SPAN_S // 86_400}d", param_hint=f"--{name}"
        )
    return ms / 1000


def end_s(until: float | None) -> float:
    """The range's end: ``--until`` (Unix seconds, checked) or now."""
    if until is None:
        return time.time()
    if not (math.isfinite(until) and 0 <= until <= MAX_TIME_S):
        raise typer.BadParameter(
            f"must be Unix seconds between 0 and {MAX_TIME_S}, not {until}", param_hint="--until"
        )
    return until


def check_out(out: Path) -> None:
    """Exit 2 before any query when ``out``'s directory does not exist."""
    if not out.parent.is_dir():
        err.print(f"[red]--out: the directory {escape(str(out.parent))} does not exist[/]")
        raise typer.Exit(2)


def save(result: Any, out: Path) -> None:
    """Write a plot or report to ``out``; exit 1 with the reason when it cannot."""
    try:
        result.save(out)
    except OSError as e:
        err.print(f"[red]cannot write {escape(str(out))}:[/] {escape(e.strerror or str(e))}")
        raise typer.Exit(1) from None


def auto_step_s(span_s: float, width_px: int) -> float:
    """A step giving at most one point per pixel, in whole seconds.

    >>> auto_step_s(6 * 3600, 900)
    24.0
    """
    return float(max(1, math.ceil(span_s / width_px)))


def fetch(client: Any, query: str, start_s: float, end_s: float, step_s: float) -> Any:
    """The data of ``query`` over ``[start_s, end_s]``: series (PromQL) or a table (SQL)."""
    if is_sql(query):
        params: dict[str, Any] = {}
        for name, t in (("start", start_s), ("end", end_s)):
            if "{" + name + ":" in query:
                params[name] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
        return client.sql(query, params)
    return client.query_range(query, start_s, end_s, step_s)


def plot(
    query: Annotated[str, typer.Argument(help="PromQL, or read-only SQL (SELECT ...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="x.png, x.svg, x.pdf or x.html.")],
    kind: Annotated[
        str, typer.Option("--type", "-t", help="line, bar, scatter or heatmap.")
    ] = "line",
    since: Annotated[str, typer.Option(help="How far back: 6h, 1d, 30m...")] = "6h",
    until: Annotated[float | None, typer.Option(help="End, Unix seconds (default now).")] = None,
    step: Annotated[str | None, typer.Option(help="PromQL step (default: one per pixel).")] = None,
    title: Annotated[str | None, typer.Option(help="Title (default: the query).")] = None,
    unit: Annotated[str, typer.Option(help="Values' unit: bytes, seconds, %, req/s...")] = "",
    width: Annotated[int, typer.Option(help="Width in pixels.")] = 900,
    height: Annotated[int, typer.Option(help="Height in pixels.")] = 450,
    max_series: Annotated[int, typer.Option(help="Series drawn at most.")] = 20,
    url: Annotated[
        str | None,
        typer.Option(
            help="Store URL (default from settings; only then, when no store answers, "
            "an in-process copy over storage.dsn)."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Plot a PromQL or SQL query over a time range to an image or an HTML page."""
    from pydantic import ValidationError

    from monitoring.plots import PlotConfig, PlotGenerator
    from monitoring.plots.config import FORMATS
    from monitoring.query.client import StoreError, open_store

    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        err.print(f"[red]--out must end in .{', .'.join(FORMATS)}, not {escape(repr(out.name))}[/]")
        raise typer.Exit(2)
    check_out(out)
    try:
        plot_config = PlotConfig.model_validate(
            {"type": kind, "format": fmt, "title": (query if title is None else title)[:200],
             "unit": unit, "width_px": width, "height_px": height, "max_series": max_series}
        )  # fmt: skip
    except ValidationError as e:
        first = e.errors()[0]
        reason = escape(f"{first['loc'][0]}: {first['msg']}")
        err.print(f"[red]bad plot options:[/] {reason}")
        raise typer.Exit(2) from None
    span = duration_s(since, "since")
    end = end_s(until)
    step_s = duration_s(step, "step") if step else auto_step_s(span, width)
    settings = load_settings(config)
    if plot_config.type not in settings.plots.types:
        allowed = ", ".join(settings.plots.types)
        err.print(f"[red]--type {escape(kind)}: not one of plots.types ({allowed})[/]")
        raise typer.Exit(2)
    try:
        with open_store(settings, url, fallback=url is None) as client:
            data = fetch(client, query, end - span, end, step_s)
    except StoreError as e:
        err.print(f"[red]query failed:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    try:
        result = PlotGenerator().generate(data=data, plot_config=plot_config)
    except (ValueError, TypeError) as e:  # no numeric column, too many series...
        err.print(f"[red]cannot plot the answer:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    save(result, out)
    notes = f" ({'; '.join(result.notes)})" if result.notes else ""
    typer.echo(f"{out}: {result.series} series, {len(result.content)} bytes{notes}", err=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command()(plot)
