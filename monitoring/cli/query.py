"""`monitoring query [SQL]`: read-only SQL over the store's ClickHouse.

Goes through the running store's HTTP endpoint when it answers (chDB lets only the
store open its directory), otherwise opens the DSN directly. Without SQL, shows the
latest aggregates.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from monitoring.cli.settings import load_settings
from monitoring.cli.store import ConfigOpt
from monitoring.config import Settings
from monitoring.sinks.clickhouse.query_server import QueryFailed, query_store

console = Console()
err = Console(stderr=True)

LATEST = (
    "SELECT window_start, window_ms, series, count, mean, min, max, last, p99, closed_by "
    "FROM aggregates FINAL{where} ORDER BY window_start DESC, series LIMIT {limit}"
)


def quote(s: str) -> str:
    """A ClickHouse string literal.

    >>> quote("it's")
    "'it\\\\'s'"
    """
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def latest_sql(series: str | None, name: str | None, limit: int) -> str:
    """The default query: the newest aggregate windows, optionally filtered."""
    conds = []
    if series:
        conds.append(f"series = {quote(series)}")
    if name:
        conds.append(f"name = {quote(name)}")
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    return LATEST.format(where=where, limit=int(limit))


def via_store(settings: Settings, sql: str, timeout: float | None = None) -> dict[str, Any] | None:
    """Ask the running store's endpoint; None if no store answers there. By default
    the client waits as long as the store may take: a query slot (up to the query
    timeout), then the query (stopped by the engine at it), plus a margin."""
    from monitoring.sinks.clickhouse.connection import read_only_timeout_s

    st = settings.storage
    if timeout is None:
        timeout = st.query.timeout.total_seconds() + read_only_timeout_s(st.query)
    token = settings.api.token.get_secret_value()
    return query_store(st.query_host, st.query_port, sql, timeout, token)


def direct(settings: Settings, sql: str) -> dict[str, Any]:
    """Open the DSN in this process (chDB when no store runs, or a server)."""
    from monitoring.sinks.clickhouse.connection import StoreLocked, chdb_path, connect_read_only
    from monitoring.sinks.clickhouse.read_only import NotReadOnly, ReadOnlyQueries

    st = settings.storage
    path = chdb_path(st.dsn)
    if path is not None and not (path / "metadata").exists():
        raise QueryFailed(f"no data at {path} yet: start `monitoring store run`")
    try:
        client = connect_read_only(st.query_dsn or st.dsn, st.query)
    except StoreLocked as e:
        raise QueryFailed(
            f"{e}; its query endpoint http://{st.query_host}:{st.query_port} did not answer"
        ) from None
    try:
        return ReadOnlyQueries(client, st.query).run(sql)
    except NotReadOnly as e:
        raise QueryFailed(str(e)) from None
    except Exception as e:
        raise QueryFailed(str(e).split("\n")[0]) from None
    finally:
        client.close()


def execute(settings: Settings, sql: str) -> dict[str, Any]:
    """Through the store if it runs, else directly."""
    result = via_store(settings, sql)
    return result if result is not None else direct(settings, sql)


def render(result: dict[str, Any], fmt: str) -> None:
    """Print a {columns, rows} result as a table, JSON or TSV."""
    cols, rows = result["columns"], result["rows"]
    if fmt == "json":
        typer.echo(json.dumps([dict(zip(cols, r, strict=True)) for r in rows], indent=1))
    elif fmt == "tsv":
        typer.echo("\t".join(cols))
        for r in rows:
            typer.echo("\t".join(_cell(v) for v in r))
    else:
        table = Table(*cols, show_lines=False)
        for r in rows:
            table.add_row(*(_cell(v) for v in r))
        console.print(table)
        err.print(f"{len(rows)} row(s)", style="dim")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return "" if v is None else str(v)


def query(
    sql: Annotated[
        str | None, typer.Argument(help="Read-only SQL; default: latest aggregates.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or tsv.")] = "table",
    series: Annotated[str | None, typer.Option(help="Only this series key.")] = None,
    name: Annotated[str | None, typer.Option(help="Only this metric name.")] = None,
    limit: Annotated[int, typer.Option(help="Rows of the default query.")] = 20,
    config: ConfigOpt = None,
) -> None:
    """Run read-only SQL on the store (SELECT/SHOW/DESCRIBE/EXPLAIN/WITH)."""
    if fmt not in ("table", "json", "tsv"):
        err.print(f"[red]--format must be table, json or tsv, not {fmt!r}[/]")
        raise typer.Exit(2)
    if sql and (series or name):
        err.print("[red]--series/--name filter the default query; put conditions in your SQL[/]")
        raise typer.Exit(2)
    settings = load_settings(config)
    try:
        result = execute(settings, sql or latest_sql(series, name, limit))
    except QueryFailed as e:
        err.print(f"[red]query failed:[/] {e}")
        raise typer.Exit(1) from None
    render(result, fmt)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command()(query)
