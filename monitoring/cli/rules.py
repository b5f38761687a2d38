"""`monitoring rules check FILE...`: validate rule files (alerting and recording), like
`promtool check rules`.

Prints, per file, ``SUCCESS: N rules found`` or ``FAILED:`` followed by one line per
problem (file, group, rule and reason, on stderr); exits 1 if any file failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Alerting rules: validate rule files.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Alerting rules."""


@app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help="Rule files (Prometheus or shorthand).")],
) -> None:
    """Check rule files; exit 0 when every rule of every file loads, 1 otherwise."""
    from monitoring.alerts.rules import load_rule_file

    failed = 0
    for path in files:
        typer.echo(f"Checking {path}")
        rs = load_rule_file(path)
        if rs.errors:
            failed += 1
            typer.echo(f"  FAILED: {len(rs.errors)} problem(s), {len(rs.rules)} good rule(s)")
            for e in rs.errors:
                typer.echo(f"  {e}", err=True)
        else:
            groups = len({r.group for r in rs.rules} | {r.group for r in rs.recordings})
            n = len(rs.rules) + len(rs.recordings)
            typer.echo(f"  SUCCESS: {n} rules found in {groups} group(s)")
    if failed:
        typer.echo(f"{failed} of {len(files)} file(s) failed", err=True)
        raise typer.Exit(1)
