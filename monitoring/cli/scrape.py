"""``monitoring scrape --config FILE``: scrape Prometheus targets to the samples topic."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Annotated

import typer

from monitoring.cli.settings import load_settings, refused


def scrape(
    config: Annotated[
        str, typer.Option("--config", help="Prometheus-shaped scrape config (scrape_configs)")
    ],
    settings_file: Annotated[
        str | None, typer.Option("--settings", "-s", help="settings file (monitoring.yaml)")
    ] = None,
    check: Annotated[
        bool, typer.Option(help="validate the config, print the targets, scrape nothing")
    ] = False,
) -> None:
    """Scrape every target of FILE at its job's interval, as Prometheus would, and send
    the samples (with up, scrape_duration_seconds, scrape_samples_scraped) through the
    SDK's bounded buffer."""
    from prometheus_client import CollectorRegistry

    from monitoring.api.server import serve
    from monitoring.config import ConfigError
    from monitoring.ingest.outlet import Outlet
    from monitoring.ingest.scrape import Scraper, base_dir, describe
    from monitoring.ingest.scrape_config import ScrapeFile
    from monitoring.log import configure_logging, get_logger
    from monitoring.ops.heartbeat import ProcessStatus
    from monitoring.runtime.kafka_client import AccessRefusals
    from monitoring.sdk.producer import MetricsCollector

    settings = load_settings(settings_file)
    try:
        scrape_file = ScrapeFile.load(config, settings.scrape.max_sd_file_bytes)
    except ConfigError as e:
        typer.secho(f"scrape config error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    if check:
        from monitoring.ingest.targets import JobTargets

        for job in scrape_file.jobs():
            jt = JobTargets(job, base_dir(config), settings.scrape.max_sd_file_bytes)
            targets = jt.targets()
            typer.echo(
                f"job {job.job_name}: {len(targets)} targets, every {job.interval_s:g}s "
                f"(timeout {job.timeout_s:g}s), {jt.dropped} dropped by relabeling"
            )
            for t in targets:
                typer.echo(f"  {t.url} {dict(t.labels)}")
        return

    configure_logging(file=settings.logging)
    log = get_logger("scrape")
    registry = CollectorRegistry()
    stopping: list[Callable[[], object]] = []  # the running loop's stop, once it runs
    refusal = threading.Event()  # refused before the loop runs: it stops at once

    def on_refused(_reason: str) -> None:  # on librdkafka's thread
        refusal.set()
        for stop_loop in stopping:
            stop_loop()

    # refused credentials or an untrusted certificate: stop, naming it, not retry
    denied = AccessRefusals(settings.kafka, on_refused)
    mc = MetricsCollector(
        settings,
        source="scrape",
        registry=registry,
        producer_config={"error_cb": denied.error_cb()},
    )
    shortest = min((j.interval_s for j in scrape_file.jobs()), default=60.0)
    outlet = Outlet(mc, registry, "scrape", give_up_s=shortest)
    scraper = Scraper(scrape_file, outlet, settings.scrape, registry, base=base_dir(config))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopping.append(lambda: loop.call_soon_threadsafe(stop.set))
        if refusal.is_set():
            return
        await scraper.run(stop)

    server = None
    status = ProcessStatus(settings, "scraper", lambda: describe(scraper)).start()
    if settings.scrape.metrics_port:
        try:
            server = serve(
                settings.api,
                registry,
                "127.0.0.1",
                settings.scrape.metrics_port,
                lambda: describe(scraper),
                readiness=status.reasons,
            )
        except OSError as e:
            log.warning("metrics_port_unavailable", port=settings.scrape.metrics_port, error=str(e))
    log.info("scraper started", jobs=len(scrape_file.jobs()))
    try:
        asyncio.run(main())
    finally:
        status.stop()
        left = mc.close(0 if denied.reason else None)
        if server is not None:
            server.stop()
        log.info("scraper stopped", undelivered=left)
    if denied.reason:
        log.error("kafka_access_denied", reason=denied.reason)
        raise refused(denied.reason)


def register(app: typer.Typer) -> None:
    app.command("scrape")(scrape)
