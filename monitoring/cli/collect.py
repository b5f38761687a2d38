"""``monitoring collect system``: the host's metrics to the samples topic, every interval."""

from __future__ import annotations

import signal
import socket
import sys
import threading
from typing import Annotated

import typer

from monitoring.cli.settings import load_settings, refused

app = typer.Typer(help="Collect metrics from the system they run on.", no_args_is_help=True)


@app.command("system")
def system(
    config: Annotated[str | None, typer.Option("--config", "-c", help="settings file")] = None,
    once: Annotated[bool, typer.Option(help="collect once, send, and exit")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="print one collection as exposition text; send nothing")
    ] = False,
    interval: Annotated[
        float | None, typer.Option(help="seconds between collections (collection.interval)")
    ] = None,
) -> None:
    """CPU, memory, swap, filesystems, disks, network, load, processes (node_exporter's
    names), named process groups and NVIDIA GPUs, every ``collection.interval`` in
    batches of ``collection.batch_size``, through the SDK's bounded buffer."""
    from prometheus_client import CollectorRegistry

    from monitoring.api.server import serve
    from monitoring.ingest.outlet import Outlet
    from monitoring.ingest.system import CollectLoop, SystemCollector
    from monitoring.log import configure_logging, get_logger
    from monitoring.ops.heartbeat import ProcessStatus
    from monitoring.runtime.kafka_client import AccessRefusals
    from monitoring.sdk.producer import MetricsCollector

    settings = load_settings(config)
    configure_logging(file=settings.logging)
    log = get_logger("collect")
    sc = settings.system_collector
    labels = {"job": sc.job, "instance": sc.instance or socket.gethostname()}
    collector = SystemCollector(sc)
    every = interval if interval is not None else settings.collection.interval.total_seconds()
    if every <= 0:
        raise typer.BadParameter("must be greater than 0", param_hint="--interval")
    if dry_run:
        from monitoring.metrics.samples import series_key

        for p in collector.collect():
            key = series_key(p.name, {**p.labels, **labels})
            sys.stdout.write(f"{key} {p.value!r}\n")
        collector.close()
        return

    registry = CollectorRegistry()
    stop = threading.Event()
    # refused credentials or an untrusted certificate: stop, naming it, not retry
    denied = AccessRefusals(settings.kafka, lambda _reason: stop.set())
    mc = MetricsCollector(
        settings,
        source=f"system:{labels['instance']}",
        registry=registry,
        producer_config={"error_cb": denied.error_cb()},
    )
    outlet = Outlet(mc, registry, "system", give_up_s=every)
    loop = CollectLoop(collector, outlet, every, labels, registry)
    if once:
        result = loop.once()
        left = mc.close()
        collector.close()
        typer.echo(f"sent={result.sent} unsent={result.unsent + left} invalid={result.invalid}")
        if denied.reason:
            raise refused(denied.reason)
        raise typer.Exit(1 if (result.unsent or left) else 0)

    server = None
    status = ProcessStatus(settings, "collector", lambda: {"status": "ok"}).start()
    if sc.metrics_port:
        try:
            server = serve(
                settings.api, registry, "127.0.0.1", sc.metrics_port, readiness=status.reasons
            )
        except OSError as e:
            log.warning("metrics_port_unavailable", port=sc.metrics_port, error=str(e))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("system collector started", interval_s=every, **labels)
    try:
        loop.run(stop)
    finally:
        status.stop()
        left = mc.close(0 if denied.reason else None)
        collector.close()
        if server is not None:
            server.stop()
        log.info("system collector stopped", collections=loop.collections, undelivered=left)
    if denied.reason:
        log.error("kafka_access_denied", reason=denied.reason)
        raise refused(denied.reason)
