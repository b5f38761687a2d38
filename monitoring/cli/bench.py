"""``monitoring bench ...``: benchmarks that print numbers (never timed assertions)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from monitoring.cli.settings import load_settings

app = typer.Typer(
    help="Benchmarks: run the real pipeline and print what it measured.", no_args_is_help=True
)


@app.command()
def pipeline(
    series: int = typer.Option(1_000, help="series in the load"),
    batch_ticks: int = typer.Option(2_000, help="1 s scrapes per series, batched phase"),
    single_ticks: int = typer.Option(20, help="1 s scrapes per series, one sample per message"),
    live_seconds: int = typer.Option(30, help="duration of the latency phase"),
    config: str | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Producer rate, worker samples/s, store rows/s, e2e latency, bytes on disk."""
    from monitoring.bench.pipeline import percentile, run
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    console = Console(stderr=True)
    settings = load_settings(config)
    res = run(
        settings.kafka.bootstrap_servers,
        series,
        batch_ticks,
        single_ticks,
        live_seconds,
        progress=lambda m: console.print(f"[dim]{m}[/dim]"),
    )
    t = Table(title="monitoring bench pipeline")
    t.add_column("measure")
    t.add_column("value", justify="right")
    rows = [
        ("producer, batched (samples/s)", f"{res.producer_batch_per_s:,.0f}"),
        ("producer, one per message (samples/s)", f"{res.producer_single_per_s:,.0f}"),
        ("worker, batched (samples/s wall)", f"{res.worker_batch_per_s:,.0f}"),
        ("worker, batched (samples per CPU-second)", f"{res.worker_batch_per_cpu_s:,.0f}"),
        ("worker, one per message (samples/s wall)", f"{res.worker_single_per_s:,.0f}"),
        ("worker, one per message (per CPU-second)", f"{res.worker_single_per_cpu_s:,.0f}"),
        ("store (rows/s)", f"{res.store_rows_per_s:,.0f}"),
        ("live load (samples/s)", f"{res.live_rate_per_s:,.0f}"),
        (
            "e2e sample -> queryable p50/p99 (ms)",
            f"{percentile(res.e2e_ms, 0.5):.0f} / {percentile(res.e2e_ms, 0.99):.0f}",
        ),
        (
            "window end -> aggregate queryable p50/p99 (ms)",
            f"{percentile(res.aggregate_ms, 0.5):.0f} / {percentile(res.aggregate_ms, 0.99):.0f}",
        ),
        ("bytes per raw sample", f"{res.bytes_per_sample:.3f}"),
        ("bytes per aggregate", f"{res.bytes_per_aggregate:.2f}"),
    ]
    for r in rows:
        t.add_row(*r)
    Console().print(t)
    print(res.summary_line())


@app.command("faust-baseline")
def faust_baseline(
    messages: int = typer.Option(30_000, help="messages to consume"),
    acks: bool = typer.Option(False, "--acks/--noack", help="Faust's automatic acks or none"),
    config: str | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Messages/s of a Faust agent that does nothing: the framework's own cost."""
    from monitoring.bench.faust_baseline import run

    run(load_settings(config).kafka.bootstrap_servers, messages, acks)
