"""`monitoring doctor`: a checklist of the deployment, one line per check.

    monitoring doctor            # OK / WARN / FAIL per line, a fix under each failure
    monitoring doctor --json     # for scripts; exit status 1 when any check failed

What is checked and the fixes: docs/operations.md.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

console = Console()
_STYLE = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}


def finite_seconds(value: float) -> float:
    """A timeout option's value: a finite number (``nan`` passes typer's ``min`` and
    ``max``: every comparison with it is false, and a NaN timeout waits for ever)."""
    if value != value or value in (float("inf"), float("-inf")):
        raise typer.BadParameter("a number of seconds")
    return value


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds each broker or store call may take.",
            min=0.1,
            max=3600,
            callback=finite_seconds,
        ),
    ] = 5.0,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Settings file (default monitoring.yaml).")
    ] = None,
) -> None:
    """Check configuration, broker, topics, schemas, clock, store, disk, rules and
    receivers; exit 1 when any check fails."""
    from monitoring.log import configure_logging
    from monitoring.ops import doctor as checks
    from monitoring.ops.checks import exit_code, format_lines, to_json

    configure_logging("WARNING")  # stdout is the checklist (or JSON); logs to stderr
    results = checks.run(config, timeout_s=timeout)
    if as_json:
        typer.echo(to_json(results))
    else:
        for line in format_lines(results).splitlines():
            status = line[:5].strip()
            text = Text(line[:5], style=_STYLE[status]) if status else Text(line[:5])
            text.append(line[5:], style="" if status else "dim")
            console.print(text, highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code(results))


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to the root CLI."""
    app.command("doctor")(doctor)
