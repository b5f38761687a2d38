"""`monitoring chaos`: the reliability suite (see ``monitoring.dev.chaos``).

monitoring chaos                          # 3 rounds over 2 minutes, store down 60 s
monitoring chaos --rounds 1 --produce 40 --store-down 10
monitoring chaos --soak 30m --series 200  # no faults: memory and lag over a long run
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer


def chaos(
    seed: Annotated[int, typer.Option(help="Seed of the faults and the data.")] = 1,
    rounds: Annotated[int, typer.Option(help="Rounds of kill -9 of every process type.")] = 3,
    produce: Annotated[float, typer.Option(help="Seconds of producing (faults meanwhile).")] = 120,
    series: Annotated[int, typer.Option(help="Gauge series (samples per second).")] = 40,
    store_down: Annotated[float, typer.Option(help="Seconds the store stays killed.")] = 60,
    broker_restart: Annotated[bool, typer.Option(help="Restart the run's broker once.")] = True,
    poison: Annotated[float, typer.Option(help="Share of poison records.")] = 0.01,
    settle: Annotated[float, typer.Option(help="Seconds to wait for convergence.")] = 300,
    soak: Annotated[
        str | None, typer.Option(help="A soak instead (30m): no faults, RSS and lag only.")
    ] = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Keep the run here (default: a temp dir).")
    ] = None,
) -> None:
    """Kill -9 each process type at seeded random moments over N rounds, restart the
    run's own broker, keep the store down, 1 % poison; then check stored aggregates and
    notifications against an exact oracle. Last line:
    rounds=<n> lost=<n> duplicated=<n> alerts_differing=<n> rss_growth_pct=<n>."""
    from monitoring.config import parse_duration
    from monitoring.dev.chaos import ChaosConfig, ChaosRun
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    # the producers' librdkafka lines while the broker is down are the fault, not news
    logging.getLogger("monitoring.rdkafka").setLevel(logging.CRITICAL)
    cfg = ChaosConfig(
        seed=seed, rounds=rounds, produce_s=produce, n_series=series, store_down_s=store_down,
        broker_restart=broker_restart, poison_fraction=poison, settle_s=settle,
    )  # fmt: skip
    if soak is not None:
        cfg.rounds, cfg.broker_restart = 0, False
        cfg.produce_s = parse_duration(soak).total_seconds()
    workdir = directory or Path(tempfile.mkdtemp(prefix="monitoring-chaos-"))
    result = ChaosRun(cfg, workdir, say=lambda s: typer.echo(s, err=True)).run()
    typer.echo(result.table())
    typer.echo(result.last_line())
    failed = result.lost or result.duplicated or result.alerts_differing or not result.converged
    if failed:
        typer.echo(f"logs kept in {workdir}", err=True)
        raise typer.Exit(1)
    if directory is None:
        shutil.rmtree(workdir, ignore_errors=True)


def register(app: typer.Typer) -> None:
    """Add ``chaos`` to the CLI."""
    app.command("chaos")(chaos)
