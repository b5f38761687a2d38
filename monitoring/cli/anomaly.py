"""``monitoring anomaly ...``: offline tools around the per-series anomaly detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Anomaly detection: back-test detectors on CSV files.", no_args_is_help=True)


@app.command()
def replay(
    src: Annotated[Path, typer.Argument(help="CSV file (timestamp,value) or a directory of them")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output CSV, or directory")],
    detector: Annotated[
        str | None, typer.Option(help="detector name (default: the default)")
    ] = None,
) -> None:
    """Score every row with the agent's code path; write timestamp,value,anomaly_score."""
    from monitoring.anomaly import DEFAULT_DETECTOR, detector_names
    from monitoring.anomaly.replay import ReplayError
    from monitoring.bench.replay_files import replay_file, replay_tree

    name = detector or DEFAULT_DETECTOR
    if name not in detector_names():
        raise typer.BadParameter(
            f"unknown detector {name!r}; known: {', '.join(detector_names())}",
            param_hint="--detector",
        )
    if not src.exists():
        raise typer.BadParameter(f"{src} does not exist", param_hint="SRC")
    try:
        if src.is_dir():
            files = replay_tree(src, out, name)
            typer.echo(f"{len(files)} files scored with {name} into {out}", err=True)
        else:
            n = replay_file(src, out, name)
            typer.echo(f"{n} rows scored with {name} into {out}", err=True)
    except ReplayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("detectors")
def detectors() -> None:
    """List the registered detectors (default first)."""
    from monitoring.anomaly import detector_names, get_spec

    for name in detector_names():
        typer.echo(f"{name}\t{get_spec(name).description}")
