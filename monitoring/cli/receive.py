"""``monitoring receive``: Prometheus remote_write and OTLP/HTTP metrics receivers, one
server, into the samples topic through the SDK's bounded buffer."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from monitoring.cli.settings import load_settings, refused


def receive(
    config: Annotated[str | None, typer.Option("--config", "-c", help="settings file")] = None,
    host: Annotated[str | None, typer.Option(help="bind address (receive.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (receive.port; 0: any free)")] = None,
) -> None:
    """Serve POST /api/v1/write (Prometheus remote-write 1.0) and POST /v1/metrics
    (OTLP/HTTP, protobuf or JSON); every sample goes to the samples topic as MetricBatch
    records. A full buffer answers 503 (senders retry); a bad request 400 with the reason."""
    from prometheus_client import CollectorRegistry

    from monitoring.api.guard import Guard
    from monitoring.api.server import ApiServer
    from monitoring.config import ConfigError
    from monitoring.ingest.receiver import from_settings
    from monitoring.log import configure_logging, get_logger
    from monitoring.metrics.samples import Limits
    from monitoring.ops.heartbeat import ProcessStatus
    from monitoring.runtime.kafka_client import AccessRefusals
    from monitoring.sdk.producer import MetricsCollector

    settings = load_settings(config)
    configure_logging(file=settings.logging)
    log = get_logger("receive")
    r = settings.receive
    bind, bind_port = host or r.host, r.port if port is None else port
    if r.max_samples > settings.collection.buffer_size:
        typer.secho(
            f"configuration error: receive.max_samples ({r.max_samples}) is over "
            f"collection.buffer_size ({settings.collection.buffer_size}): a request is "
            "buffered whole",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    try:
        guard = Guard.for_bind(
            bind,
            settings.api.token.get_secret_value(),
            settings.api.allowed_hosts,
            r.max_body_bytes,
            settings.api.read_timeout.total_seconds(),
        )
    except ConfigError as e:
        typer.secho(f"configuration error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    registry = CollectorRegistry()
    stop = threading.Event()
    # refused credentials or an untrusted certificate: stop, naming it, not retry
    denied = AccessRefusals(settings.kafka, lambda _reason: stop.set())
    collector = MetricsCollector(
        settings,
        source="monitoring-receive",
        registry=registry,
        block_timeout=1.0,
        limits=Limits(max_labels=r.max_labels),
        producer_config={"error_cb": denied.error_cb()},
    )
    receiver = from_settings(settings, collector, registry)

    def health() -> dict[str, object]:
        stats = collector.stats()
        return {"status": "ok", "buffered": stats["pending"] + stats["inflight"]}

    status = ProcessStatus(settings, "receiver", health).start()
    try:
        server = ApiServer(
            registry,
            bind,
            bind_port,
            health,
            guard=guard,
            max_connections=settings.api.max_connections,
            mounts=receiver.routes(guard),
            readiness=status.reasons,
        ).start()
    except OSError as e:
        status.stop()
        collector.close()
        typer.secho(f"cannot serve on {bind}:{bind_port}: {e}", fg="red", err=True)
        raise typer.Exit(1) from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    h, p = server.address
    log.info("receive_listening", remote_write=f"http://{h}:{p}/api/v1/write",
             otlp=f"http://{h}:{p}/v1/metrics")  # fmt: skip
    try:
        stop.wait()
    finally:
        status.stop()
        server.stop()
        left = collector.close(0 if denied.reason else None)
        log.info("receive_stopped", undelivered=left)
    if denied.reason:
        log.error("kafka_access_denied", reason=denied.reason)
        raise refused(denied.reason)


def register(app: typer.Typer) -> None:
    """Add ``receive`` to the CLI."""
    app.command("receive")(receive)
