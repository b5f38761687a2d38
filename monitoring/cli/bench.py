"""``monitoring bench ...``: benchmarks that print numbers (never timed assertions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    single_ticks: int = typer.Option(100, help="1 s scrapes per series, one sample per message"),
    live_seconds: int = typer.Option(30, help="duration of the latency phase"),
    anomaly: bool = typer.Option(True, help="the worker's anomaly agent on (the default)"),
    batch_samples: int = typer.Option(500, help="samples per batched message"),
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
        anomaly=anomaly,
        batch_samples=batch_samples,
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
        ("store: every live sample stored after (s)", f"{res.store_live_catchup_s:.1f}"),
        ("bytes per raw sample (every row)", f"{res.bytes_per_sample:.3f}"),
        ("bytes per raw sample (the scrape phases)", f"{res.bytes_per_scraped_sample:.3f}"),
        ("bytes per aggregate", f"{res.bytes_per_aggregate:.2f}"),
    ]
    for r in rows:
        t.add_row(*r)
    Console().print(t)
    print(res.summary_line())


@app.command("faust-baseline")
def faust_baseline(
    messages: int = typer.Option(30_000, help="messages to consume"),
    mode: str = typer.Option(
        "noack", help="noack / auto-ack: a Faust agent's stream; bulk: runtime.bulk"
    ),
    config: str | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Messages/s of a Faust agent that does nothing: the framework's own cost."""
    from monitoring.bench.faust_baseline import run

    run(load_settings(config).kafka.bootstrap_servers, messages, mode)


@app.command("anomaly")
def anomaly(
    nab: Annotated[Path | None, typer.Option(help="NAB dir: data/, labels/, score.py")] = None,
    detector: Annotated[str | None, typer.Option(help="detector name (default: robust)")] = None,
    cv: Annotated[
        bool, typer.Option("--cv", help="leave-one-category-out cross-validation (needs --nab)")
    ] = False,
    files_per_category: Annotated[
        int, typer.Option(help="with --cv: only the first N files of each category (0: all)")
    ] = 0,
) -> None:
    """Points/s per core and bytes per series of a detector; NAB scores with --nab.

    With ``--cv``: every setting of the grid chosen on three categories, scored on the
    fourth; one line per fold, then ``cv_mean= cv_worst= points_per_s= bytes_per_series=``.
    """
    from monitoring.anomaly import DEFAULT_DETECTOR
    from monitoring.bench.anomaly import measure_speed
    from monitoring.bench.anomaly import run as run_anomaly

    if cv:
        from monitoring.bench.anomaly_cv import GRID, cross_validate, format_report

        if nab is None:
            raise typer.BadParameter("--cv needs --nab DIR", param_hint="--cv")
        err = Console(stderr=True)
        res_cv = cross_validate(
            nab, GRID, files_per_category=files_per_category,
            progress=lambda m: err.print(f"[dim]{m}[/dim]"),
        )  # fmt: skip
        for line in format_report(res_cv, GRID):
            print(line)
        pps, nbytes, _ = measure_speed(detector or DEFAULT_DETECTOR)
        print(
            f"cv_mean={res_cv.mean:.2f} cv_worst={res_cv.worst:.2f} "
            f"points_per_s={pps:.0f} bytes_per_series={nbytes}"
        )
        return
    res = run_anomaly(detector or DEFAULT_DETECTOR, nab)
    t = Table(title=f"monitoring bench anomaly ({res.detector})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("points/s per core (CPU time, 1 process)", f"{res.points_per_s:,.0f}")
    t.add_row("bytes per series: nbytes() (memory)", f"{res.nbytes:,}")
    t.add_row("bytes per series: len(to_bytes()) (checkpoint)", f"{res.checkpoint_bytes:,}")
    for prof, score in res.nab.items():
        t.add_row(f"NAB {prof} at the alert level (in-sample)", f"{score:.2f}")
    Console().print(t)
    if res.nab_report:
        print(res.nab_report)
    print(res.summary_line())


@app.command("alerts")
def alerts(
    rules: int = typer.Option(1_000, help="rules loaded"),
    series: int = typer.Option(10_000, help="series in the load"),
    seconds: float = typer.Option(90, help="duration of the live phase"),
    closes: int = typer.Option(20, help="window closes timed in the evaluation phase"),
    config: str | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Window close -> alert on the topic -> webhook latency; rule evaluation cost."""
    from monitoring.bench.alert_latency import run as run_live
    from monitoring.bench.alerts import run_eval_bench
    from monitoring.bench.alerts_samples import run_samples_bench
    from monitoring.bench.pipeline import percentile
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    console = Console(stderr=True)
    console.print(f"[dim]evaluation: {rules:,} rules over {series:,} series[/dim]")
    ev = run_eval_bench(rules, series, closes)
    samples = run_samples_bench(closes=closes)
    live = run_live(
        load_settings(config).kafka.bootstrap_servers,
        rules,
        series,
        seconds,
        progress=lambda m: console.print(f"[dim]{m}[/dim]"),
    )
    a50, a99 = percentile(live.alert_ms, 0.5), percentile(live.alert_ms, 0.99)
    d50, d99 = percentile(live.delivery_ms, 0.5), percentile(live.delivery_ms, 0.99)
    t = Table(title="monitoring bench alerts")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("rules x series", f"{rules:,} x {series:,}")
    t.add_row("evaluation per window close (ms, wall)", f"{ev.eval_ms_per_close:.1f}")
    t.add_row("evaluation per window close (ms, CPU)", f"{ev.eval_cpu_ms_per_close:.1f}")
    t.add_row("evaluation worst close (ms)", f"{ev.eval_ms_max:.1f}")
    t.add_row(
        f"{samples.rules} histogram_quantile rules over {samples.series:,} bucket series "
        "(sample engine, ms per close, wall / CPU)",
        f"{samples.eval_ms_per_close:.1f} / {samples.eval_cpu_ms_per_close:.1f}",
    )
    t.add_row("live load (samples/s)", f"{live.samples_per_s:,.0f}")
    t.add_row("window ends closed / alerts measured", f"{live.closes} / {len(live.alert_ms)}")
    t.add_row("window close -> alert on topic p50/p99 (ms)", f"{a50:.0f} / {a99:.0f}")
    t.add_row(
        f"window close -> webhook p50/p99 (ms, {len(live.delivery_ms)} alerts)",
        f"{d50:.0f} / {d99:.0f}",
    )
    Console().print(t)
    print(
        f"alert_p50_ms={a50:.0f} alert_p99_ms={a99:.0f} delivery_p99_ms={d99:.0f} "
        f"eval_ms_per_close={ev.eval_ms_per_close:.1f}"
    )


@app.command("logs")
def logs_bench(
    lines: int = typer.Option(60_000, help="corpus lines through the agent's path"),
    calls: int = typer.Option(50_000, help="logging calls timed with the Kafka handler"),
    rows: int = typer.Option(10_000_000, help="stored lines generated for the search"),
    worker_lines: int = typer.Option(600_000, help="lines a real worker works off (0: skip)"),
    directory: str | None = typer.Option(None, "--dir", help="where the chDB goes (tmp)"),
    config: str | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Log agent lines/s per core, handler µs per call, token search ms, bytes per line."""
    from pathlib import Path

    from monitoring.bench.logs import run as run_logs

    console = Console(stderr=True)
    res = run_logs(
        load_settings(config).kafka.bootstrap_servers,
        lines,
        calls,
        rows,
        Path(directory) if directory else None,
        progress=lambda m: console.print(f"[dim]{m}[/dim]"),
        worker_lines=worker_lines,
    )
    t = Table(title="monitoring bench logs")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("calibration: dict get+set loop iteration (ns)", f"{res.calibration_ns:.0f}")
    t.add_row("agent path, decode+normalise+mine+count+encode, 256-line batches (lines/CPU-s)",
              f"{res.lines_per_s:,.0f}")  # fmt: skip
    t.add_row("  LogRecord decode (µs per line)", f"{res.decode_us:.1f}")
    t.add_row("  single LogRecord messages (lines per CPU-s)", f"{res.single_lines_per_s:,.0f}")
    for size, v in res.batched_lines_per_s.items():
        t.add_row(f"  LogBatch messages of {size} lines (lines per CPU-s)", f"{v:,.0f}")
    t.add_row("  LogBatch decode (µs per line)", f"{res.batch_decode_us:.1f}")
    t.add_row("domain only: normalise+mine+count (lines per CPU-s)",
              f"{res.domain_lines_per_s:,.0f}")  # fmt: skip
    if res.worker_lines:
        t.add_row(f"a worker (every agent) working off {res.worker_lines:,} batched lines: "
                  "lines/s wall, per worker CPU-s",
                  f"{res.worker_lines_per_s:,.0f} / {res.worker_lines_per_cpu_s:,.0f}")  # fmt: skip
    t.add_row("logger.info with KafkaLogHandler (µs, calling thread CPU)",
              f"{res.handler_call_us:.2f}")  # fmt: skip
    t.add_row("logger.info without handlers (µs)", f"{res.bare_call_us:.2f}")
    t.add_row("handler overhead per call (µs)", f"{res.handler_us:.2f}")
    t.add_row(f"insert {res.rows:,} generated lines (s)", f"{res.insert_s:.1f}")
    t.add_row(f"token search, all services, newest 50 ({res.matches} hits) (ms, median)",
              f"{res.search_ms:.0f}")  # fmt: skip
    t.add_row("token + service + level + 6 h range (ms, median)", f"{res.search_service_ms:.0f}")
    t.add_row("bytes on disk per stored line", f"{res.bytes_per_line:.1f}")
    Console().print(t)
    print(res.summary_line())


@app.command("codecs")
def codecs_bench(
    number: int = typer.Option(20_000, help="calls per timed run (batch records: a 50th)"),
    repeat: int = typer.Option(5, help="timed runs; the best counts"),
) -> None:
    """µs per record of each hand-written Avro codec against fastavro, same schema.

    Exits 1 if a hand codec's bytes or values differ from fastavro's.
    """
    from monitoring.bench.codecs import run as run_codecs
    from monitoring.bench.codecs import summary_line

    rows = run_codecs(number, repeat)
    t = Table(title="monitoring bench codecs (µs per record, best of runs)")
    t.add_column("codec")
    for col in ("items/record", "hand", "fastavro", "speed-up"):
        t.add_column(col, justify="right")
    t.add_column("same as fastavro")
    for r in rows:
        t.add_row(r.name, str(r.items), f"{r.hand_us:.2f}", f"{r.fastavro_us:.2f}",
                  f"{r.speedup:.1f}x", "yes" if r.agree else "NO")  # fmt: skip
    Console().print(t)
    print(summary_line(rows))
    if not all(r.agree for r in rows):
        raise typer.Exit(1)


@app.command("query")
def query_bench(
    series: int = typer.Option(250, help="series in the store (>= 120: 100 counters, 20 buckets)"),
    days: float = typer.Option(7.0, help="days of raw samples (the raw retention is 7)"),
    scrape: int = typer.Option(15, help="seconds between samples"),
    repeat: int = typer.Option(30, help="timed runs of each query (after one warm-up)"),
) -> None:
    """Prometheus API and ClickHouse-protocol latency on a store of >= 10 M samples."""
    from monitoring.bench.query import run
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    console = Console(stderr=True)
    res = run(series, days, scrape, repeat, progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    t = Table(title="monitoring bench query")
    t.add_column("measure")
    t.add_column("p50 (ms)", justify="right")
    t.add_column("p99 (ms)", justify="right")
    labels = {
        "range_1h": "query_range 1 h, step 15 s, 100 series (raw)",
        "range_7d": "query_range 7 d, step 10 min, 100 series (1 min aggregates)",
        "histogram_quantile": "histogram_quantile, 20 buckets, 1 h at 15 s",
        "ch_http": f"SQL over HTTP ({res.ch_path})",
        "ch_inproc": "SQL in-process (read-only gate)",
    }
    for key, label in labels.items():
        t.add_row(label, f"{res.p(key, 0.5):.1f}", f"{res.p(key, 0.99):.1f}")
    Console().print(t)
    console.print(
        f"[dim]{res.samples:,} raw samples, {res.aggregates:,} aggregates, "
        f"built in {res.build_s:.0f} s[/dim]"
    )
    print(res.summary_line())


@app.command("migrations")
def migrations_bench(
    samples: int = typer.Option(2_000_000, help="samples rows before the rebuilds"),
    aggregates: int = typer.Option(500_000, help="aggregates rows before the rebuilds"),
    inserting: bool = typer.Option(True, help="an old store inserts during the rebuilds"),
) -> None:
    """Migrations 008-012 on a pre-008 store: time, rows an old store inserted and lost.

    Exits 1 if a row the old store inserted is missing after the rebuilds.
    """
    from monitoring.bench.migrations import run
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    res = run(samples, aggregates, inserting)
    print(f"migrations {res.versions} on {samples:,} samples and {aggregates:,} aggregates")
    print(res.line())
    if res.lost:
        raise typer.Exit(1)


@app.command("scrape")
def scrape_bench(
    targets: int = typer.Option(500, help="targets scraped (one fake server, another process)"),
    series: int = typer.Option(1000, help="samples on each target's page"),
    interval: float = typer.Option(15.0, help="scrape_interval (s)"),
    duration: float = typer.Option(60.0, help="how long to measure, after the warm-up (s)"),
    warmup: float | None = typer.Option(None, help="least warm-up (s; default 2 intervals)"),
    kafka: bool = typer.Option(True, help="send to the broker (else count and drop)"),
    one_core: bool = typer.Option(True, help="pin the scraper to one core"),
    collections: int = typer.Option(20, help="system collections timed"),
    config: str | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Scrape many targets without missing intervals? And the system collector's CPU."""
    from monitoring.bench.ingest_scrape import run_collector, run_scrape

    console = Console(stderr=True)
    settings = load_settings(config)
    col = run_collector(settings, collections)
    res = run_scrape(
        settings,
        targets,
        series,
        interval,
        duration,
        kafka,
        one_core,
        progress=lambda m: console.print(f"[dim]{m}[/dim]"),
        warmup_s=warmup,
    )
    t = Table(title="monitoring bench scrape")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row(
        f"targets x series, every {res.interval_s:g}s, for {res.duration_s:.0f}s",
        f"{res.targets} x {res.series}",
    )
    t.add_row("scrapes done / due", f"{res.scrapes:,} / {res.due:,}")
    t.add_row(f"missed intervals in the warm-up ({res.warmup_s:.0f}s, series first seen)",
              f"{res.warmup_missed:,}")  # fmt: skip
    t.add_row("missed intervals after it", f"{res.missed_intervals:,}")
    t.add_row("failed scrapes", f"{res.failed:,}")
    t.add_row(f"samples/s {'to the broker' if res.kafka else '(not sent)'}",
              f"{res.samples_per_s:,.0f}")  # fmt: skip
    t.add_row("samples not sent (buffer full)", f"{res.unsent:,}")
    t.add_row("scraper process CPU after the warm-up (cores)", f"{res.cpu_cores:.2f}")
    t.add_row("scrape duration p50 / p99 (ms, sampled)",
              f"{res.scrape_p50_ms:.1f} / {res.scrape_p99_ms:.1f}")  # fmt: skip
    t.add_row(f"system collection: {col.series} series, CPU per collection (ms)",
              f"{col.cpu_ms_per_collection:.1f}")  # fmt: skip
    t.add_row(f"system collector CPU at a {col.interval_s:g}s interval (% of a core)",
              f"{col.cpu_pct:.4f}")  # fmt: skip
    Console().print(t)
    print(f"scrape_missed_intervals={res.missed_intervals} collector_cpu_pct={col.cpu_pct:.4f}")


@app.command("receive")
def receive_bench(
    rw_series: int = typer.Option(10_000, help="remote_write: distinct series"),
    rw_per_request: int = typer.Option(2_000, help="remote_write: samples per request"),
    rw_requests: int = typer.Option(250, help="remote_write: requests"),
    otlp_per_request: int = typer.Option(1_000, help="OTLP: data points per request (x 50)"),
    otlp_requests: int = typer.Option(200, help="OTLP: requests"),
    config: str | None = typer.Option(None, "--config", "-c"),
) -> None:
    """remote_write samples and OTLP data points per CPU-second of the receiver."""
    from monitoring.bench.receive import report, run
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    console = Console(stderr=True)
    rw, ot = run(
        load_settings(config),
        rw_series,
        rw_per_request,
        rw_requests,
        otlp_per_request,
        otlp_requests,
        progress=lambda m: console.print(f"[dim]{m}[/dim]"),
    )
    print(report(rw, ot))


@app.command("ingest")
def ingest_bench(
    rw_requests: int = typer.Option(250, help="remote_write: requests of 2,000 samples"),
    otlp_requests: int = typer.Option(200, help="OTLP: requests of 1,000 data points"),
    targets: int = typer.Option(500, help="scrape: targets"),
    series: int = typer.Option(1000, help="scrape: samples per target"),
    interval: float = typer.Option(15.0, help="scrape: scrape_interval (s)"),
    duration: float = typer.Option(60.0, help="scrape: measured after the warm-up (s)"),
    warmup: float | None = typer.Option(None, help="scrape: least warm-up (s)"),
    collections: int = typer.Option(20, help="system collections timed"),
    e2e_seconds: float = typer.Option(20.0, help="end-to-end: measured per path (s)"),
    e2e_window: float = typer.Option(1.0, help="end-to-end: the worker's window (s)"),
    e2e_lateness: float = typer.Option(1.0, help="end-to-end: allowed lateness (s)"),
    e2e_series: int = typer.Option(1000, help="end-to-end: samples per request or page"),
    e2e_targets: int = typer.Option(4, help="end-to-end: scrape targets (and a probe)"),
    e2e_warmup: float = typer.Option(5.0, help="end-to-end: per path, before measuring (s)"),
    config: str | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Every ingest path: the receivers per CPU-second, scraping many targets, the
    system collector's CPU, then each path's end-to-end latency from receipt to stored
    aggregate through a worker and a store. The last line has the four numbers of
    issue 17, then ``<path>_e2e_p99_ms`` per path."""
    from monitoring.bench import ingest_e2e
    from monitoring.bench.ingest_scrape import run_collector, run_scrape
    from monitoring.bench.receive import report, run
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    console = Console(stderr=True)
    settings = load_settings(config)

    def progress(m: str) -> None:
        console.print(f"[dim]{m}[/dim]")

    rw, ot = run(settings, rw_requests=rw_requests, otlp_requests=otlp_requests,
                 progress=progress)  # fmt: skip
    col = run_collector(settings, collections)
    res = run_scrape(settings, targets, series, interval, duration, progress=progress,
                     warmup_s=warmup)  # fmt: skip
    print("\n".join(report(rw, ot).splitlines()[:-1]))
    print(
        f"scrape: {res.targets} targets x {res.series} series every {res.interval_s:g}s for "
        f"{res.duration_s:.0f}s after a {res.warmup_s:.0f}s warm-up ({res.warmup_missed} "
        f"missed in it): {res.scrapes}/{res.due} scrapes, {res.samples_per_s:,.0f} samples/s, "
        f"{res.cpu_cores:.2f} cores, {res.unsent} unsent"
    )
    print(
        f"system collector: {col.series} series, {col.cpu_ms_per_collection:.1f} ms CPU per "
        f"collection, {col.cpu_pct:.4f}% of a core at {col.interval_s:g}s"
    )
    e2e = ingest_e2e.run(
        settings, e2e_seconds, e2e_window, e2e_lateness, e2e_series, e2e_targets,
        warmup_s=e2e_warmup, progress=progress,
    )  # fmt: skip
    print("\n".join(ingest_e2e.report(e2e)))
    print(
        f"remote_write_samples_per_cpu_s={rw.points_per_cpu_s:.0f} "
        f"otlp_points_per_cpu_s={ot.points_per_cpu_s:.0f} "
        f"scrape_missed_intervals={res.missed_intervals} collector_cpu_pct={col.cpu_pct:.4f} "
        f"{ingest_e2e.summary_fields(e2e)}"
    )


@app.command("ui")
def ui_bench(
    series: int = typer.Option(250, help="series of the query bench's store (>= 220)"),
    days: float = typer.Option(7.0, help="days of raw samples"),
    scrape: int = typer.Option(15, help="seconds between samples"),
    repeat: int = typer.Option(30, help="timed panel requests"),
    loads: int = typer.Option(6, help="first loads of the Services dashboard in chromium"),
    probes: int = typer.Option(5, help="samples timed from store to pixel"),
) -> None:
    """Dashboards: panel latency, first load in chromium, event to pixel (>= 10 M samples)."""
    from monitoring.bench.query import percentile
    from monitoring.bench.ui import run
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    console = Console(stderr=True)
    res = run(series, days, scrape, repeat, loads, probes,
              progress=lambda m: console.print(f"[dim]{m}[/dim]"))  # fmt: skip
    t = Table(title="monitoring bench ui")
    t.add_column("measure")
    t.add_column("p50 (ms)", justify="right")
    t.add_column("p99 / slowest (ms)", justify="right")
    rows = {
        f"panel, 24 h of {res.panel_series} series ({res.panel_points:,} points)": res.panel_ms,
        "  its CPU (UI, store and client: one process)": res.panel_cpu_ms,
        "  its two queries asked of the store directly": res.store_ms,
        "first load of Services in chromium": res.first_load_ms,
        "  its CPU in UI and store (not chromium)": res.first_load_cpu_ms,
        "event to pixel (store -> drawn)": res.event_to_pixel_ms,
    }
    for label, values in rows.items():
        t.add_row(label, f"{percentile(values, 0.5):.1f}", f"{percentile(values, 0.99):.1f}")
    Console().print(t)
    console.print(f"[dim]{res.samples:,} raw samples, built in {res.build_s:.0f} s[/dim]")
    print(res.summary())


@app.command("loop-lag")
def loop_lag_bench(
    series: int = typer.Option(5_000, help="anomaly detectors in the partition"),
    points: int = typer.Option(30, help="values each detector learned before the checkpoint"),
) -> None:
    """The event loop's longest block while an anomaly partition is restored and
    checkpointed (in process, no broker)."""
    from monitoring.bench.loop_lag import run
    from monitoring.log import configure_logging

    configure_logging("WARNING")
    run(series, points)
