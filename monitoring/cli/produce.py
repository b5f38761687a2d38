"""`monitoring produce sample ...` and `monitoring loadgen ...`: send metric samples.

``produce sample`` sends one sample through the producer SDK; ``loadgen`` drives the
SDK with the deterministic generator of ``monitoring.dev.loadgen`` at a target rate
(token bucket) and prints the achieved rate and the cost of ``record()``.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from monitoring.cli.settings import load_settings, require_kafka_access
from monitoring.config import Settings

produce_app = typer.Typer(help="Send metric samples to the samples topic.", no_args_is_help=True)
console = Console(stderr=True)


def _parse_labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep or not k:
            raise typer.BadParameter(f"{pair!r} is not k=v", param_hint="--label")
        labels[k.strip()] = v
    return labels


def _checked(settings: Settings, bootstrap_servers: str | None, timeout: float = 10.0) -> Settings:
    """``settings`` (at ``bootstrap_servers`` if given), once Kafka did not refuse its
    credentials (else exit 1 naming why)."""
    if bootstrap_servers:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
        settings = settings.model_copy(update={"kafka": kafka})
    require_kafka_access(settings, timeout)
    return settings


@produce_app.command("sample")
def sample(
    name: Annotated[str, typer.Argument(help="metric name, e.g. http_requests_total")],
    value: Annotated[float, typer.Argument(help="sample value")],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="k=v (repeat)")] = None,
    kind: Annotated[str, typer.Option(help="GAUGE, COUNTER, HISTOGRAM_BUCKET, ...")] = "GAUGE",
    unit: Annotated[str, typer.Option(help="unit, e.g. seconds")] = "",
    timestamp_ms: Annotated[int | None, typer.Option(help="event time (default now)")] = None,
    source: Annotated[str, typer.Option(help="producer identity")] = "cli",
    batch: Annotated[
        bool, typer.Option("--batch/--no-batch", help="MetricBatch or MetricSample")
    ] = True,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="override kafka.bootstrap_servers")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="override the samples topic")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the broker")] = 10.0,
) -> None:
    """Send one sample and wait for the broker's acknowledgement."""
    from monitoring.metrics.samples import InvalidSample
    from monitoring.sdk.producer import MetricsCollector

    labels = _parse_labels(label or [])
    settings = _checked(load_settings(), bootstrap_servers, timeout)
    with MetricsCollector(
        settings,
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        source=source,
        batch=batch,
        close_timeout=timeout,
    ) as mc:
        try:
            mc.record(name, value, labels, timestamp_ms=timestamp_ms, kind=kind.upper(), unit=unit)
        except InvalidSample as e:
            console.print(f"[red]invalid sample:[/red] {e}")
            raise typer.Exit(2) from None
        left = mc.flush(timeout)
        stats = mc.stats()
    if left or stats["failed"]:
        console.print(f"[red]not delivered[/red] to {mc.topic} within {timeout:g}s")
        raise typer.Exit(1)
    console.print(f"sent 1 sample to {mc.topic}")


def loadgen(
    series: Annotated[int, typer.Option(help="number of series", min=1)] = 200,
    rate: Annotated[
        float, typer.Option(help="target samples/s (0 = as fast as possible)", min=0)
    ] = 5000,
    duration: Annotated[float, typer.Option(help="seconds to run", min=0.1)] = 60,
    batch: Annotated[
        bool, typer.Option("--batch/--no-batch", help="MetricBatch or MetricSample")
    ] = True,
    late_fraction: Annotated[
        float, typer.Option(help="share of samples sent late", min=0, max=1)
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
    interval_ms: Annotated[
        int | None,
        typer.Option(
            help="event-time step per tick (default: series/rate, so event time follows the clock)"
        ),
    ] = None,
    start_ms: Annotated[
        int | None, typer.Option(help="event time of the first tick (default now)")
    ] = None,
    source: Annotated[str, typer.Option(help="producer identity")] = "loadgen",
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="override kafka.bootstrap_servers")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="override the samples topic")] = None,
) -> None:
    """Generate realistic metrics for N series at a target rate; print the achieved rate."""
    from monitoring.dev.loadgen import generate
    from monitoring.sdk.producer import MetricsCollector

    settings = _checked(load_settings(), bootstrap_servers)
    step = interval_ms or (max(1, round(1000 * series / rate)) if rate else 1000)
    start = start_ms if start_ms is not None else time.time_ns() // 1_000_000
    ticks = generate(series, start, step, seed, late_fraction=late_fraction)
    mc = MetricsCollector(
        settings, bootstrap_servers=bootstrap_servers, topic=topic, source=source, batch=batch
    )
    record = mc.record
    sent = 0
    record_s = 0.0
    perf = time.perf_counter
    burst = max(rate * 0.05, float(series)) if rate else 0.0
    tokens = burst
    began = last = last_ui = perf()
    end = began + duration
    with Progress(
        TextColumn("[bold]loadgen[/bold]"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[sent]:>10,} samples  {task.fields[rate]:>9,.0f}/s"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("run", total=duration, sent=0, rate=0.0)
        try:
            for tick in ticks:
                now = perf()
                if now >= end:
                    break
                if rate:
                    tokens = min(burst, tokens + (now - last) * rate)
                    last = now
                    if tokens < len(tick):
                        time.sleep((len(tick) - tokens) / rate)
                        now2 = perf()
                        tokens += (now2 - last) * rate
                        last = now2
                    tokens -= len(tick)
                t0 = perf()
                for s in tick:
                    record(s.name, s.value, s.labels, s.timestamp_ms, s.kind, s.unit)
                t1 = perf()
                record_s += t1 - t0
                sent += len(tick)
                if t1 - last_ui >= 0.2:
                    last_ui = t1
                    progress.update(
                        task,
                        completed=min(t1 - began, duration),
                        sent=sent,
                        rate=sent / (t1 - began),
                    )
            gen_end = perf()
            left = mc.close(30.0)
            done = perf()
            progress.update(task, completed=duration, sent=sent, rate=sent / (done - began))
        finally:
            if not mc.closed:
                mc.close(5.0)
    stats = mc.stats()
    mode = "batch (MetricBatch)" if batch else "non-batch (MetricSample)"
    console.print(
        f"{mode}: {sent:,} samples of {series} series in {done - began:.2f}s "
        f"(sending {gen_end - began:.2f}s, final flush {done - gen_end:.2f}s)\n"
        f"achieved {sent / (done - began):,.0f} samples/s"
        + (f" (target {rate:,.0f})" if rate else " (unpaced)")
        + f"; record() {record_s / max(sent, 1) * 1e6:.2f} µs/call incl. amortised encode+produce\n"
        f"delivered {stats['delivered']:,}  failed {stats['failed']:,}  "
        f"dropped {stats['dropped']:,}  messages {stats['messages']:,}  to {mc.topic}"
    )
    if left or stats["failed"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``produce`` (group) and ``loadgen`` to the top-level app."""
    app.add_typer(produce_app, name="produce")
    app.command("loadgen")(loadgen)
