"""Process roles of the pipeline: ``monitoring worker`` and ``monitoring demo``."""

from __future__ import annotations

import time
from typing import Any

import typer

from monitoring.cli.settings import load_settings, prepare_kafka


def worker(
    config: str | None = typer.Option(None, "--config", "-c", help="YAML settings file"),
    loglevel: str = typer.Option("warning", help="Faust's own log level"),
) -> None:
    """Run a stream worker: the aggregation agent, and the anomaly agent unless
    ``anomaly.enabled`` is false. Start more workers to scale out."""
    import atexit

    from faust.worker import Worker
    from prometheus_client import CollectorRegistry

    from monitoring.agents.aggregation import AggregationAgent
    from monitoring.api.server import serve
    from monitoring.dev.memtrace import start_from_env
    from monitoring.log import configure_logging, get_logger
    from monitoring.ops.heartbeat import ProcessStatus
    from monitoring.runtime.app import create_app
    from monitoring.runtime.faust_app import run_on

    settings = load_settings(config)
    configure_logging(file=settings.logging)
    start_from_env("worker")
    prepare_kafka(settings, "worker")
    registry = CollectorRegistry()
    if settings.logs.ship_own_logs:
        from monitoring.sdk.log_shipping import ship_own_logs

        ship_own_logs(settings, "monitoring-worker", registry)
    log = get_logger("worker")
    app = create_app(settings)
    agents: dict[str, Any] = {
        "aggregation": run_on(app, AggregationAgent(settings, registry), settings, registry)
    }
    if settings.anomaly.enabled:
        from monitoring.agents.anomaly import AnomalyAgent

        agents["anomaly"] = run_on(app, AnomalyAgent(settings, registry), settings, registry)
    if settings.logs.enabled:
        from monitoring.agents.logs import LogAgent

        agents["logs"] = run_on(app, LogAgent(settings, registry), settings, registry)
    if settings.model_metrics.enabled:
        from monitoring.agents.model_metrics import ModelMetricsAgent

        agents["model_metrics"] = run_on(
            app, ModelMetricsAgent(settings, registry), settings, registry
        )

    def health() -> dict[str, Any]:
        parts = {name: agent.health() for name, agent in agents.items()}
        worst = "ok" if all(p["status"] == "ok" for p in parts.values()) else "unavailable"
        restoring = sorted({p for x in parts.values() for p in x.get("restoring", [])})
        not_ready = sorted({r for x in parts.values() for r in x.get("not_ready", [])})
        return {"status": worst, "restoring": restoring, "not_ready": not_ready, **parts}

    def owned() -> dict[str, list[int]]:
        return {t: ps for agent in agents.values() for t, ps in agent.owned().items()}

    status = ProcessStatus(
        settings, "worker", health, lag_group=f"{settings.kafka.topic_prefix}worker", owned=owned
    ).start()
    atexit.register(status.stop)
    if settings.worker.metrics_port:
        try:
            serve(
                settings.api,
                registry,
                "127.0.0.1",
                settings.worker.metrics_port,
                health,
                readiness=status.reasons,
            )
        except OSError as e:
            log.warning("metrics_port_unavailable", port=settings.worker.metrics_port, error=str(e))
    log.info(
        "worker_starting",
        bootstrap=settings.kafka.bootstrap_servers,
        agents=sorted(agents),
        windows_ms=settings.aggregation.windows_ms,
        metrics_port=settings.worker.metrics_port,
    )
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


def demo(
    duration: float = typer.Option(60, help="seconds of load"),
    series: int = typer.Option(200, help="series the load generator produces"),
    rate: float = typer.Option(2000, help="samples per second"),
    keep: bool = typer.Option(False, help="leave the worker and store running at the end"),
    config: str | None = typer.Option(None, "--config", "-c", help="YAML settings file"),
) -> None:
    """Run the pipeline locally: a worker, the store, the alert evaluator, the dashboards
    (``monitoring ui``) and a load generator; print aggregates, then the anomalies and
    alerts the run produced.

    Needs a broker (``monitoring broker up``; ``make demo`` starts it). Topics use the
    prefix ``demo.`` and ClickHouse lives in ``.data/demo/chdb``; the alert rules are
    ``infra/rules/demo.rules.yml``.
    """
    import subprocess
    import threading
    from pathlib import Path

    from rich.console import Console

    from monitoring.dev.deploy import BIN, LocalDeployment

    console = Console()
    settings = load_settings(config)
    rules = Path(__file__).resolve().parents[2] / "infra" / "rules" / "demo.rules.yml"
    d = LocalDeployment(
        settings.kafka.bootstrap_servers,
        Path(".data/demo"),
        prefix="demo.",
        query_port=settings.storage.query_port,
        alerting__rules=f'["{rules}"]',
        anomaly__warmup="5",
    )
    console.print(f"[bold]demo[/bold]: store on http://127.0.0.1:{d.query_port}, logs in {d.dir}")
    d.start_store()
    d.start("worker", "worker")
    d.start("alerting", "alerting")
    d.start("ui", "ui", ui__port=str(settings.ui.port))
    console.print(f"[bold]dashboards[/bold] on http://127.0.0.1:{settings.ui.port}")
    sql = (
        "SELECT series, formatDateTime(window_start, '%T') AS start, count, "
        "round(mean, 2) AS mean, round(p99, 2) AS p99 FROM aggregates FINAL "
        "WHERE window_ms = 10000 AND name NOT LIKE '%_bucket' AND name != 'anomaly_score' "
        "ORDER BY window_start DESC, series LIMIT 10"
    )

    def aggregates_in() -> bool:
        try:
            return bool(d.query("SELECT count() FROM aggregates")[0][0] > 0)
        except ConnectionError:  # the store is busy or still starting: not yet
            return False

    def show_when_ready() -> None:
        try:
            d.wait(aggregates_in, 90, "aggregates")
        except (TimeoutError, RuntimeError) as e:
            console.print(f"[red]{e}[/red]")
            return
        console.print("[bold green]first windowed aggregates are in ClickHouse:[/bold green]")
        subprocess.run([str(BIN), "query", sql], env=d.env, check=False)

    shower = threading.Thread(target=show_when_ready, daemon=True)
    shower.start()
    try:
        subprocess.run(
            [
                str(BIN),
                "loadgen",
                "--series",
                str(series),
                "--rate",
                str(rate),
                "--duration",
                str(duration),
            ],
            env=d.env,
            check=False,
        )
        shower.join(90)
        console.print("[bold]latest aggregates[/bold] (`monitoring query` goes through the store):")
        subprocess.run([str(BIN), "query", sql], env=d.env, check=False)
        counts = d.query("SELECT count() FROM aggregates FINAL")[0][0]
        raw = d.query("SELECT count() FROM samples FINAL")[0][0]
        console.print(f"{counts:,} aggregate rows and {raw:,} raw samples stored")
        anomalies = (
            "SELECT series, formatDateTime(ts, '%T') AS at, round(value, 2) AS value, "
            "round(score, 3) AS score FROM anomalies FINAL ORDER BY score DESC LIMIT 5"
        )
        n = d.query("SELECT count() FROM anomalies FINAL")[0][0]
        scored = d.query("SELECT count() FROM aggregates FINAL WHERE name = 'anomaly_score'")[0][0]
        console.print(
            f"[bold]anomaly detection[/bold]: {scored:,} windows scored (the anomaly_score "
            f"series), {n} anomalies (the detectors learn for 5 windows first)"
        )
        subprocess.run([str(BIN), "query", anomalies], env=d.env, check=False)
        _print_alerts(console, d)
    finally:
        if keep:
            console.print(f"left running: pids {[p.pid for p in d.procs.values()]}")
        else:
            d.stop_all()


def _print_alerts(console: Any, d: Any) -> None:
    """The alert state changes on the demo's alerts topic."""
    from confluent_kafka import Consumer
    from rich.table import Table

    from monitoring.runtime.kafka_client import client_config
    from monitoring.wire.codec import AvroCodec

    codec = AvroCodec.from_directory()
    c = Consumer(
        client_config(
            d.settings.kafka,
            **{"group.id": f"demo-show-{time.time_ns()}", "auto.offset.reset": "earliest"},
        )
    )
    c.subscribe([d.topic("alerts")])
    rows = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for m in c.consume(1000, timeout=0.5):
            if m.error() is None:
                rows.append(codec.decode(m.value()).record)
    c.close()
    table = Table(title=f"alerts on {d.topic('alerts')}: {len(rows)} state changes")
    for col in ("alertname", "status", "labels", "summary"):
        table.add_column(col)
    for r in rows[-12:]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items()) if k != "alertname")
        table.add_row(
            r["labels"].get("alertname", ""), r["status"].lower(), labels,
            r["annotations"].get("summary", ""),
        )  # fmt: skip
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command()(worker)
    app.command()(demo)
