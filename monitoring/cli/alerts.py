"""`monitoring alerts ...`: the alert evaluator and notifier processes, silences, acks.

monitoring alerts evaluate      # rules over closed windows -> the alerts topic
monitoring alerts notify        # alerts topic -> routing, grouping -> receivers, HTTP API
monitoring alerts list          # alerts the notifier knows, silenced/inhibited/acked
monitoring alerts silence add 'alertname="HighCPU"' --duration 2h --comment maintenance
monitoring alerts silence list | expire ID
monitoring alerts ack FINGERPRINT [--group KEY]
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Annotated, Any

import typer

from monitoring.cli.settings import load_settings, prepare_kafka, refused

app = typer.Typer(help="Alerting: rule evaluation, notifications, silences.", no_args_is_help=True)
ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="Settings file (default monitoring.yaml).")
]


def _stop_event(log: Any) -> threading.Event:
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop


@app.command()
def evaluate(
    config: ConfigOpt = None,
    rules: Annotated[
        list[str] | None, typer.Option("--rules", "-r", help="Rule files (adds to alerting.rules)")
    ] = None,
) -> None:
    """Evaluate alert rules as windows close and send alert changes to the alerts topic.

    Every rule file must load (else exit 2 naming file, rule and reason); SIGHUP reloads
    them, keeping the running rules unless the new set loads as a whole."""
    from prometheus_client import CollectorRegistry

    from monitoring.agents.alerting import AlertingAgent, load_rules
    from monitoring.api.server import serve
    from monitoring.config import ConfigError
    from monitoring.dev.memtrace import start_from_env
    from monitoring.log import configure_logging, get_logger
    from monitoring.ops.heartbeat import ProcessStatus
    from monitoring.runtime.kafka_client import KafkaAccessDenied

    settings = load_settings(config)
    configure_logging(file=settings.logging)
    start_from_env("alerting")
    log = get_logger("alerting")
    patterns = [*settings.alerting.rules, *(rules or [])]
    try:
        ruleset = load_rules(patterns, settings.alerting.definitions)
    except ConfigError as e:
        log.error("rules_invalid", error=str(e))
        typer.secho(f"configuration error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    prepare_kafka(settings, "alerting")
    registry = CollectorRegistry()
    agent = AlertingAgent(settings, registry, ruleset, rule_patterns=patterns)

    def health() -> dict[str, Any]:
        h = agent.health()  # restoring until started (a standby is ready: warm)
        return {**h, "restoring": agent.consumer is None and h.get("role") != "standby"}

    status = ProcessStatus(settings, "evaluator", health).start()
    port = settings.alerting.metrics_port
    if port:
        try:
            serve(settings.api, registry, "127.0.0.1", port, health, readiness=status.reasons)
        except OSError as e:
            log.warning("metrics_port_unavailable", port=port, error=str(e))
    stop = _stop_event(log)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: agent.request_reload())
    try:
        asyncio.run(agent.run(stop))
    except KafkaAccessDenied as e:  # an ACL removed while running
        raise refused(str(e)) from None
    finally:
        status.stop()


@app.command()
def notify(
    config: ConfigOpt = None,
    alertmanager_config: Annotated[
        str | None, typer.Option("--alertmanager-config", help="Alertmanager-shaped YAML")
    ] = None,
) -> None:
    """Route, group and deliver alerts from the alerts topic; serve the silences API."""
    from prometheus_client import CollectorRegistry

    from monitoring.agents.notifier import NotifierAgent
    from monitoring.alerts.manager_config import ManagerConfig
    from monitoring.api.server import serve
    from monitoring.config import ConfigError
    from monitoring.log import configure_logging, get_logger
    from monitoring.ops.heartbeat import FailingReceivers, ProcessStatus
    from monitoring.runtime.kafka_client import KafkaAccessDenied

    settings = load_settings(config)
    configure_logging(file=settings.logging)
    log = get_logger("notifier")
    path = alertmanager_config or settings.notifier.config
    try:
        am_config = ManagerConfig.load(path)
    except (ConfigError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    prepare_kafka(settings, "notifier")
    registry = CollectorRegistry()
    agent = NotifierAgent(settings, registry, am_config)
    failing = FailingReceivers(registry)

    def health() -> dict[str, Any]:
        h = agent.health()  # restoring until started (a standby is ready: warm)
        restoring = agent.consumer is None and h.get("role") != "standby"
        return {**h, "restoring": restoring, "failing_receivers": failing()}

    status = ProcessStatus(settings, "notifier", health).start()
    n = settings.notifier
    try:
        serve(
            settings.api,
            registry,
            n.api_host,
            n.api_port,
            health,
            routes={
                "/api/v2/silences": agent.api_post_silence,
                "/api/v2/silence/expire": agent.api_expire_silence,
                "/api/v2/acks": agent.api_ack,
            },
            get_routes={"/api/v2/silences": agent.api_silences, "/api/v2/alerts": agent.api_alerts},
            readiness=status.reasons,
        )
    except (ConfigError, OSError) as e:
        status.stop()
        typer.echo(f"error: notifier API: {e}", err=True)
        raise typer.Exit(2) from None
    log.info("notifier_api", url=f"http://{n.api_host}:{n.api_port}")
    try:
        asyncio.run(agent.run(_stop_event(log)))
    except KafkaAccessDenied as e:  # an ACL removed while running
        raise refused(str(e)) from None
    finally:
        status.stop()


def _print(table: Any) -> None:
    """A rich table on a terminal; tab-separated lines (whole values) when piped."""
    import sys

    from rich.console import Console

    if sys.stdout.isatty():
        Console().print(table)
        return
    typer.echo("\t".join(str(c.header) for c in table.columns))
    for row in zip(*(c.cells for c in table.columns), strict=True):
        typer.echo("\t".join(str(v) for v in row))


silence_app = typer.Typer(help="Silences: add, list, expire.", no_args_is_help=True)
app.add_typer(silence_app, name="silence")
UrlOpt = Annotated[
    str | None, typer.Option("--url", help="Notifier API (default from notifier.api_port)")
]


def _api(url: str | None, config: str | None) -> tuple[str, str]:
    """The notifier API's base URL and the bearer token (``api.token``) to send it."""
    settings = load_settings(config)
    token = settings.api.token.get_secret_value()
    if url:
        return url.rstrip("/"), token
    n = settings.notifier
    return f"http://{n.api_host}:{n.api_port}", token


def _call(api: tuple[str, str], path: str, body: Any = None) -> Any:
    import json
    import urllib.error
    import urllib.request

    url, token = api
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="GET" if data is None else "POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        typer.echo(f"error: {e.code}: {e.read().decode(errors='replace')}", err=True)
        raise typer.Exit(1) from None
    except OSError as e:
        typer.echo(f"error: notifier at {url} unreachable: {e}", err=True)
        raise typer.Exit(1) from None


@silence_app.command("add")
def silence_add(
    matchers: Annotated[list[str], typer.Argument(help='Matchers: name=value, name=~"re", ...')],
    duration: Annotated[str, typer.Option(help="How long, e.g. 2h")] = "1h",
    author: Annotated[str, typer.Option(help="Who")] = "cli",
    comment: Annotated[str, typer.Option(help="Why")] = "",
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Silence the alerts matching every matcher for ``duration``; prints the id."""
    from datetime import UTC, datetime

    from monitoring.alerts.matchers import parse_matcher
    from monitoring.config import parse_duration

    try:
        parsed = [parse_matcher(m) for m in matchers]
        length = parse_duration(duration)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    start = datetime.now(UTC)
    body = {
        "matchers": [m.to_api() for m in parsed],
        "startsAt": start.isoformat(),
        "endsAt": (start + length).isoformat(),
        "createdBy": author,
        "comment": comment,
    }
    typer.echo(_call(_api(url, config), "/api/v2/silences", body)["silenceID"])


@silence_app.command("list")
def silence_list(url: UrlOpt = None, config: ConfigOpt = None) -> None:
    """List silences (id, state, matchers, ends)."""
    from rich.table import Table

    table = Table("id", "state", "matchers", "ends", "by", "comment")
    for s in _call(_api(url, config), "/api/v2/silences"):
        ms_ = " ".join(
            f'{m["name"]}{"=" if m["isEqual"] else "!"}{"~" if m["isRegex"] else ""}"{m["value"]}"'
            for m in s["matchers"]
        )
        table.add_row(s["id"], s["status"]["state"], ms_, s["endsAt"], s["createdBy"], s["comment"])
    _print(table)


@silence_app.command("expire")
def silence_expire(silence_id: str, url: UrlOpt = None, config: ConfigOpt = None) -> None:
    """Expire a silence now."""
    typer.echo(_call(_api(url, config), "/api/v2/silence/expire", {"id": silence_id}))


@app.command()
def ack(
    target: Annotated[str, typer.Argument(help="An alert fingerprint (or --group KEY)")] = "",
    group: Annotated[str | None, typer.Option(help="Acknowledge a group key instead")] = None,
    by: Annotated[str, typer.Option(help="Who acknowledges")] = "cli",
    comment: Annotated[str, typer.Option()] = "",
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Acknowledge an alert or group: its escalation stops at the current tier."""
    body: dict[str, Any] = {"by": by, "comment": comment}
    if group:
        body["group_key"] = group
    else:
        body["fingerprint"] = target
    typer.echo(_call(_api(url, config), "/api/v2/acks", body))


@app.command("list")
def list_alerts(url: UrlOpt = None, config: ConfigOpt = None) -> None:
    """Alerts the notifier knows, with their silenced/inhibited/acknowledged state."""
    from rich.table import Table

    table = Table("fingerprint", "alertname", "state", "labels", "receivers", "acked by")
    for a in _call(_api(url, config), "/api/v2/alerts"):
        labels = ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()))
        table.add_row(
            a["fingerprint"], a["labels"].get("alertname", ""), a["status"]["state"], labels,
            ",".join(r["name"] for r in a["receivers"]), a.get("acknowledgedBy") or "",
        )  # fmt: skip
    _print(table)
