"""`monitoring chaos`: the reliability suite (see ``monitoring.dev.chaos``).

monitoring chaos                          # 3 rounds over 2 minutes, store down 60 s
monitoring chaos --rounds 1 --produce 40 --store-down 10
monitoring chaos --soak 30m                # no faults: half a measured peak for 30 min
monitoring chaos --soak 30m --peak 60000   # the same at 30,000 samples/s, no ramp
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from monitoring.dev.soak import SoakConfig


def chaos(
    seed: Annotated[int, typer.Option(help="Seed of the faults and the data.")] = 1,
    rounds: Annotated[int, typer.Option(help="Rounds of kill -9 of every process type.")] = 3,
    produce: Annotated[float, typer.Option(help="Seconds of producing (faults meanwhile).")] = 120,
    series: Annotated[
        int | None, typer.Option(help="Series (chaos: gauges, 1 sample/s, 40; soak: 5000).")
    ] = None,
    store_down: Annotated[float, typer.Option(help="Seconds the store stays killed.")] = 60,
    broker_restart: Annotated[bool, typer.Option(help="Restart the run's broker once.")] = True,
    poison: Annotated[float, typer.Option(help="Share of poison records.")] = 0.01,
    settle: Annotated[float, typer.Option(help="Seconds to wait for convergence.")] = 300,
    soak: Annotated[
        str | None, typer.Option(help="A soak instead (30m): no faults, RSS, lag, exact counts.")
    ] = None,
    peak: Annotated[
        float | None, typer.Option(help="Soak: the peak (samples/s); default: measure it.")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Soak: this rate instead of half the peak.")
    ] = None,
    warmup: Annotated[str, typer.Option(help="Soak: warm-up before RSS is measured.")] = "2m",
    sample_every: Annotated[str, typer.Option(help="Soak: RSS and lag cadence.")] = "10s",
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
    workdir = directory or Path(tempfile.mkdtemp(prefix="monitoring-chaos-"))
    if soak is not None:
        from monitoring.dev.soak import SoakConfig

        scfg = SoakConfig(
            duration_s=parse_duration(soak).total_seconds(), rate=rate, peak=peak,
            n_series=series or SoakConfig.n_series, seed=seed, settle_s=settle,
            warmup_s=parse_duration(warmup).total_seconds(),
            sample_every_s=parse_duration(sample_every).total_seconds(),
        )  # fmt: skip
        _soak(scfg, workdir, directory is None)
        return
    cfg = ChaosConfig(
        seed=seed, rounds=rounds, produce_s=produce, n_series=series or 40,
        store_down_s=store_down, broker_restart=broker_restart, poison_fraction=poison,
        settle_s=settle,
    )  # fmt: skip
    result = ChaosRun(cfg, workdir, say=lambda s: typer.echo(s, err=True)).run()
    typer.echo(result.table())
    typer.echo(result.last_line())
    failed = result.lost or result.duplicated or result.alerts_differing or not result.converged
    if failed:
        typer.echo(f"logs kept in {workdir}", err=True)
        raise typer.Exit(1)
    if directory is None:
        shutil.rmtree(workdir, ignore_errors=True)


def _soak(cfg: SoakConfig, workdir: Path, remove: bool) -> None:
    """The soak on a broker of its own (``monitoring.dev.soak``)."""
    from monitoring.dev.chaos import free_port_pair
    from monitoring.dev.local_kafka import LocalKafka
    from monitoring.dev.soak import SoakRun

    port = free_port_pair()
    broker = LocalKafka(port=port, data_dir=workdir / "kafka")
    try:
        typer.echo(f"starting a broker of our own on 127.0.0.1:{port}", err=True)
        broker.start(timeout=180)
        run = SoakRun(cfg, workdir, broker.bootstrap, broker.status().pid,
                      say=lambda s: typer.echo(s, err=True))  # fmt: skip
        result = run.run()
    finally:
        broker.destroy()
    for line in result.ramp + result.lines():
        typer.echo(line)
    bad = result.lost or result.duplicated or result.alerts_differing or not result.converged
    if bad or result.rss_growth_pct > 10 or result.exits:
        typer.echo(f"logs kept in {workdir}", err=True)
        raise typer.Exit(1)
    if remove:
        shutil.rmtree(workdir, ignore_errors=True)


def register(app: typer.Typer) -> None:
    """Add ``chaos`` to the CLI."""
    app.command("chaos")(chaos)
