"""`monitoring store ...`: the ClickHouse store process and its schema.

monitoring store run          # consume Kafka into ClickHouse, serve /query /healthz /metrics
monitoring store migrate      # apply pending DDL migrations and list them
monitoring store footprint    # bytes on disk per sample and per aggregate
monitoring store backfill --from T --to T [--topic ...]   # re-read a time range, idempotently
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console

from monitoring.cli.settings import (
    load_settings,
    refused,
    require_kafka_access,
    require_kafka_permissions,
)
from monitoring.config import Settings, ms

app = typer.Typer(help="ClickHouse store: consume Kafka into ClickHouse.", no_args_is_help=True)
console = Console(stderr=True)
ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="Settings file (default monitoring.yaml).")
]


def _client(settings: Settings, dsn: str | None = None) -> Any:
    from monitoring.sinks.clickhouse.connection import StoreLocked, connect

    try:
        return connect(dsn or settings.storage.dsn)
    except StoreLocked as e:
        console.print(f"[red]{e}[/]: is a store already running? (`monitoring query` reaches it)")
        raise typer.Exit(1) from None


def _migrate(settings: Settings, client: Any, dsn: str, stop: threading.Event) -> list[Any]:
    """Apply pending migrations: on a server through a client of their own, which waits
    hours for an answer (a rebuild's copy outlasts the writer's 30 s: a timeout would
    start it over at each retry); in chDB (in-process, no timeout) through ``client``."""
    from monitoring.sinks.clickhouse.migrations import migrate, migrate_dsn

    if urlsplit(dsn).scheme not in ("http", "https"):
        return migrate(client, settings.storage, stop=stop.is_set)
    own = _client(settings, migrate_dsn(dsn))
    try:
        return migrate(own, settings.storage, stop=stop.is_set)
    finally:
        own.close()


def _open(settings: Settings, stop: threading.Event) -> tuple[Any, list[Any]] | None:
    """The writer's client, after the migrations; None if stopped while waiting for
    another store's migrations."""
    from monitoring.sinks.clickhouse.migration_lock import LockWaitStopped
    from monitoring.sinks.clickhouse.writer import writer_dsn

    # the writer's client gives up on an answer after SEND_RECEIVE_TIMEOUT_S
    client = _client(settings, writer_dsn(settings.storage.dsn))
    try:
        return client, _migrate(settings, client, settings.storage.dsn, stop)
    except LockWaitStopped:
        client.close()
        return None
    except BaseException:
        client.close()
        raise


@app.command()
def run(
    config: ConfigOpt = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Consume samples and aggregates into ClickHouse until SIGTERM/SIGINT."""
    from prometheus_client import CollectorRegistry

    from monitoring.api.guard import Guard
    from monitoring.config import ConfigError
    from monitoring.dev.memtrace import start_from_env
    from monitoring.log import configure_logging, get_logger
    from monitoring.ops.heartbeat import ProcessStatus
    from monitoring.query import clickhouse_http, prometheus_api
    from monitoring.runtime.kafka_client import KafkaAccessDenied
    from monitoring.sinks.clickhouse.connection import connect_read_only
    from monitoring.sinks.clickhouse.query_server import QueryServer
    from monitoring.sinks.clickhouse.store import (
        EngineDead,
        StartupHealth,
        Store,
        open_with_retry,
        redact,
        store_group,
    )
    from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer

    settings = load_settings(config)
    configure_logging(log_level.upper(), file=settings.logging)
    start_from_env("store")
    log = get_logger("store")
    try:
        guard = Guard.from_settings(settings.api, settings.storage.query_host)
    except ConfigError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    require_kafka_permissions(settings, "store")
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    # A server that is not up yet (or restarting) is waited for, each retry logged;
    # /healthz answers 503 "starting" meanwhile.
    state: dict[str, Any] = {"status": "starting", "clickhouse": "connecting"}
    status = ProcessStatus(
        settings, "store", lambda: dict(state), lag_group=store_group(settings)
    ).start()
    try:
        starting: StartupHealth | None = StartupHealth(
            settings.storage.query_host, settings.storage.query_port, state, guard
        )
    except OSError:
        starting = None
    try:
        opened = open_with_retry(lambda: _open(settings, stop), stop, settings.storage.dsn, state)
    finally:
        if starting is not None:
            starting.stop()
    if opened is None:
        status.stop()
        log.info("stopped_before_clickhouse_answered")
        return
    client, applied = opened
    log.info(
        "migrations",
        applied=[f"{m.version:03d}_{m.name}" for m in applied],
        dsn=redact(settings.storage.dsn),
    )
    registry = CollectorRegistry()
    refresh_ms = ms(settings.storage.series_refresh)
    store = Store(settings, Writer(client, StoreMetrics(registry), refresh_ms))

    def health() -> dict[str, Any]:
        return {**store.health(), "insert_failures": _insert_failures(registry)}

    status.health = health
    server = None
    st = settings.storage
    try:
        server = QueryServer(
            connect_read_only(st.query_dsn or st.dsn, st.query),
            registry,
            st.query_host,
            st.query_port,
            health,
            limits=st.query,
            guard=guard,
            protocols=[clickhouse_http.routes, prometheus_api.routes],
        ).start()
        server.server.readiness = status.reasons  # the ApiServer's /-/ready
        log.info("query_endpoint", url=f"http://{st.query_host}:{st.query_port}")
    except OSError as e:
        log.error("query_endpoint_unavailable", port=st.query_port, error=str(e))
    try:
        store.run(stop)
    except KafkaAccessDenied as e:  # wrong credentials, untrusted broker, a missing ACL
        raise refused(str(e)) from None
    except EngineDead as e:
        # a supervisor restarts the process; chDB's own teardown of a dead engine is
        # not waited for (it may abort or hang): the status goes, then the process
        status.stop()
        if server is not None:
            server.stop()
        console.print(f"[red]{e}[/]")
        logging.shutdown()
        os._exit(1)
    finally:
        status.stop()
        if server is not None:
            server.stop()
            server.client.close()
        client.close()


def _insert_failures(registry: Any) -> float:
    """Failed inserts so far, every table (``monitoring_store_insert_failures_total``)."""
    return sum(
        s.value
        for metric in registry.collect()
        if metric.name == "monitoring_store_insert_failures"
        for s in metric.samples
        if s.name.endswith("_total")
    )


@app.command("migrate")
def migrate_cmd(config: ConfigOpt = None) -> None:
    """Apply pending migrations (infra/clickhouse/migrations) and list them."""
    from monitoring.sinks.clickhouse.migrations import migrate, migrate_dsn

    settings = load_settings(config)
    client = _client(settings, migrate_dsn(settings.storage.dsn))  # a rebuild takes long
    ran = migrate(client, settings.storage)
    rows = client.query(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    ).result_rows
    for v, n, c, at in rows:
        mark = "applied now" if any(m.version == v for m in ran) else "already applied"
        typer.echo(f"{v:03d}_{n}  {c}  {at:%Y-%m-%d %H:%M:%S}  {mark}")
    client.close()


@app.command()
def footprint(
    config: ConfigOpt = None,
    optimize: Annotated[bool, typer.Option(help="OPTIMIZE ... FINAL first.")] = False,
) -> None:
    """Bytes on disk per sample and per aggregate (system.parts), as JSON."""
    from monitoring.sinks.clickhouse.footprint import storage_footprint

    client = _client(load_settings(config))
    typer.echo(json.dumps(storage_footprint(client, optimize=optimize), indent=2))
    client.close()


@app.command()
def backfill(
    from_: Annotated[
        str, typer.Option("--from", help="Start: ISO 8601, epoch ms, a duration ago (2h).")
    ],
    to: Annotated[str, typer.Option("--to", help="End (exclusive), same forms; or now.")] = "now",
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", help="A store topic (with or without the prefix); repeatable."),
    ] = None,
    dsn: Annotated[str | None, typer.Option(help="Write here instead of storage.dsn.")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Re-consume a time range of the store's topics into ClickHouse, idempotently.

    Reads with a consumer of its own (no commit; the store's group is untouched). An
    embedded chDB directory is held by the running store: stop it first (or backfill a
    ClickHouse server, which the store may keep writing meanwhile)."""
    from prometheus_client import CollectorRegistry

    from monitoring.log import configure_logging
    from monitoring.ops.backfill import BackfillError, backfill, parse_time
    from monitoring.sinks.clickhouse.migration_lock import LockWaitStopped
    from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer, writer_dsn

    settings = load_settings(config)
    configure_logging("WARNING")
    require_kafka_access(settings, min(timeout, 10.0))
    try:
        from_ms, to_ms = parse_time(from_), parse_time(to)
    except ValueError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    client = _client(settings, writer_dsn(dsn or settings.storage.dsn))
    stop = threading.Event()
    saved = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _migrate(settings, client, dsn or settings.storage.dsn, stop)
        writer = Writer(
            client, StoreMetrics(CollectorRegistry()), ms(settings.storage.series_refresh)
        )
        result = backfill(settings, writer, from_ms, to_ms, topic or (), timeout, stop)
    except BackfillError as e:
        console.print(f"[red]{e}[/] (what was read is stored; running it again is safe)")
        raise typer.Exit(1) from None
    except LockWaitStopped as e:  # SIGINT/SIGTERM while another store migrated
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None
    finally:
        client.close()
        for s, handler in saved.items():
            signal.signal(s, handler)
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    for r in result.ranges:
        if r.records:
            typer.echo(f"{r.topic}[{r.partition}]  offsets {r.start}-{r.end - 1}  ({r.records})")
    rows = ", ".join(f"{t} {n}" for t, n in sorted(result.rows.items())) or "none"
    typer.echo(f"messages={result.messages} rows: {rows}; elapsed {result.elapsed_s:.1f} s")
    if result.rejected:
        typer.echo(f"skipped: {result.rejected}")
