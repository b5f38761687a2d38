"""`monitoring perf bench|analyze|suggest`: performance benchmarking, analysis, advice.

``bench`` drives a URL or ``module:callable`` open-loop at ``--rate`` for ``--duration``
(``monitoring/perf/benchmarking.py``), prints the summary and records the run's series
through the SDK (labelled ``run_id``) unless ``--no-record``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated

import typer
from rich.console import Console

from monitoring.cli.settings import load_settings
from monitoring.cli.store import ConfigOpt

app = typer.Typer(help="Performance: open-loop benchmarks, analysis against a baseline, advice.")
err = Console(stderr=True)
MAX_DURATION_S = 86_400.0


def seconds_of(text: str, name: str, max_s: float = 400 * 86_400) -> float:
    """Seconds of a Prometheus duration (``30s``, ``24h``, ``7d``) or a number of seconds."""
    from monitoring.query.prom_format import BadParam, parse_duration

    try:
        ms = parse_duration(text, name)
    except BadParam as e:
        raise typer.BadParameter(str(e).split(": ", 1)[-1], param_hint=f"--{name}") from None
    if ms <= 0 or ms / 1000 > max_s:
        raise typer.BadParameter(f"must be between 1ms and {max_s:g}s", param_hint=f"--{name}")
    return ms / 1000


@app.command("bench")
def bench(
    target: Annotated[str, typer.Argument(help="http(s)://URL or module:callable.")],
    rate: Annotated[float, typer.Option(help="Intended requests per second.")],
    duration: Annotated[str, typer.Option(help="How long to send: 30s, 5m...")] = "30s",
    concurrency: Annotated[int, typer.Option(help="Requests in flight at most.")] = 64,
    arrivals: Annotated[str, typer.Option(help="constant (wrk2) or poisson.")] = "constant",
    timeout: Annotated[str, typer.Option(help="Per-request timeout.")] = "10s",
    method: Annotated[str, typer.Option(help="HTTP method for a URL.")] = "GET",
    seed: Annotated[int | None, typer.Option(help="Seed of the poisson schedule.")] = None,
    run_id: Annotated[str, typer.Option(help="Label of this run (default: time-xxxx).")] = "",
    record: Annotated[bool, typer.Option(help="Send the run's series to Kafka.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Drive TARGET open-loop at --rate for --duration; print the latency summary."""
    from monitoring.perf.benchmarking import (
        BadTarget,
        BenchRecorder,
        new_run_id,
        resolve_target,
        run_bench,
    )
    from monitoring.sdk.producer import MetricsCollector

    if arrivals not in ("constant", "poisson"):
        raise typer.BadParameter("constant or poisson", param_hint="--arrivals")
    if not (math.isfinite(rate) and rate > 0):
        raise typer.BadParameter("a positive number of requests per second", param_hint="--rate")
    if not 1 <= concurrency <= 10_000:
        raise typer.BadParameter("1 to 10000", param_hint="--concurrency")
    if len(run_id) > 100 or any(not (c.isalnum() or c in "-_.:") for c in run_id):
        raise typer.BadParameter("up to 100 of A-Z a-z 0-9 - _ . :", param_hint="--run-id")
    dur = seconds_of(duration, "duration", MAX_DURATION_S)
    tmo = seconds_of(timeout, "timeout", 3600)
    try:
        tgt = resolve_target(target, method.upper())
    except BadTarget as e:
        raise typer.BadParameter(str(e), param_hint="TARGET") from None
    rid = run_id or new_run_id()
    mc = None
    if record:
        mc = MetricsCollector(load_settings(config), source="perf-bench")
    try:
        run = asyncio.run(
            run_bench(
                tgt,
                rate,
                dur,
                concurrency=concurrency,
                arrivals=arrivals,  # type: ignore[arg-type]
                timeout_s=tmo,
                seed=seed,
                recorder=BenchRecorder(mc, rid, tgt.label) if mc is not None else None,
                run_id=rid,
            )
        )
    except ValueError as e:
        err.print(f"[red]bench failed:[/] {e}")
        raise typer.Exit(2) from None
    finally:
        left = mc.close() if mc is not None else 0
    s = run.summary
    typer.echo(f"run {rid} target {tgt.label} arrivals={arrivals} concurrency={concurrency}")
    for line in s.lines():
        typer.echo(line)
    if mc is not None:
        note = f" ({left} samples undelivered)" if left else ""
        typer.echo(f"series: run_id={rid} on {mc.topic}{note}")
    q = {f"p{k * 100:g}_ms": f"{v * 1000:.3f}" for k, v in s.latency.items()}
    typer.echo(
        f"run_id={rid} achieved_rate={s.achieved_rate:.2f} errors={s.errors} "
        + " ".join(f"{k}={v}" for k, v in q.items())
    )
