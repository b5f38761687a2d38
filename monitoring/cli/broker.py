"""`monitoring broker ...`: the local single-node Kafka broker and the project's topics.

    monitoring broker up              # fetch Kafka (Maven), start it, create the topics
    monitoring broker up --secure     # a separate SASL_SSL (SCRAM) broker on 9096
    monitoring broker status
    monitoring broker logs -n 100
    monitoring broker topics list
    monitoring broker down
    monitoring broker reset --yes     # stop and delete all broker data
    monitoring broker acls            # the ACLs of a shared cluster, as kafka-acls commands

The broker's address comes from the settings (``kafka.bootstrap_servers``); ``--port``
picks another local broker, each with its own data directory.
"""

from __future__ import annotations

import re
import time
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from monitoring.cli.settings import load_settings
from monitoring.config import PREFIX_SEPARATORS, KafkaSettings, Settings, unseparated_prefix
from monitoring.dev.local_kafka import (
    LOOPBACK,
    ROLE_USERS,
    SECURE_PORT,
    BrokerStatus,
    LocalKafka,
    LocalKafkaError,
)
from monitoring.log import configure_logging
from monitoring.runtime.acls import USER_PREFIX, kafka_acls_script, to_json
from monitoring.runtime.acls import acls as acl_bindings
from monitoring.runtime.admin import (
    BrokerUnavailable,
    TopicError,
    describe_topics,
    ensure_topics,
    list_topics,
    wait_for_broker,
)

app = typer.Typer(help="Local Kafka broker (single-node KRaft) and topics.", no_args_is_help=True)
topics_app = typer.Typer(help="The project's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

console = Console()

PortOpt = Annotated[
    int | None,
    typer.Option("--port", "-p", help="Broker port (default: from kafka.bootstrap_servers)."),
]
SecureOpt = Annotated[
    bool,
    typer.Option(
        "--secure",
        help=f"The secure broker (SASL_SSL, SCRAM users, a local CA): port {SECURE_PORT} "
        "unless --port is given, its own data directory.",
    ),
]
ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="Settings file (default monitoring.yaml).")
]


@app.callback()
def _main(
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    configure_logging(log_level.upper())


def _default_port(kafka: KafkaSettings) -> int:
    first = kafka.bootstrap_servers.split(",")[0].strip()
    _host, _, port = first.rpartition(":")
    return int(port) if port.isdigit() else 9092


def _kafka(settings: Settings, port: int | None, broker: LocalKafka | None = None) -> KafkaSettings:
    """Kafka settings, pointed at the local broker on ``port`` when one is given (with
    its client credentials when it is a secure one)."""
    if broker is not None and broker.secure:
        client = broker.client_settings()
        return settings.kafka.model_copy(
            update={"bootstrap_servers": client.bootstrap_servers, "security": client.security}
        )
    if port is None:
        return settings.kafka
    return settings.kafka.model_copy(update={"bootstrap_servers": f"{LOOPBACK}:{port}"})


def _broker(
    settings: Settings, port: int | None, heap: str = "512m", secure: bool = False
) -> LocalKafka:
    if port is None:
        port = SECURE_PORT if secure else _default_port(settings.kafka)
    # secure=None: a data directory made by a secure broker is one
    return LocalKafka(port=port, heap=heap, secure=True if secure else None)


def _status_table(st: BrokerStatus) -> Table:
    table = Table(show_header=False, box=None)
    state = "[green]running[/]" if st.running else "[red]stopped[/]"
    if st.running and not st.answering:
        state = "[yellow]starting / not answering[/]"
    table.add_row("state", state)
    table.add_row("bootstrap", st.bootstrap)
    table.add_row("pid", str(st.pid) if st.pid else ("(not managed here)" if st.running else "-"))
    table.add_row("data", str(st.data_dir))
    return table


def _topics_table(kafka: KafkaSettings, result: dict[str, str] | None = None) -> Table:
    names = list(list_topics(kafka, prefix=kafka.topic_prefix))
    info = describe_topics(kafka, names)
    table = Table(title=f"topics {kafka.topic_prefix}* on {kafka.bootstrap_servers}")
    table.add_column("topic", no_wrap=True, min_width=max((len(n) for n in names), default=5))
    table.add_column("partitions", justify="right")
    table.add_column("rf", justify="right")
    table.add_column("cleanup")
    table.add_column("retention")
    if result is not None:
        table.add_column("action")
    for name in names:
        t = info[name]
        ret = t.config.get("retention.ms", "")
        if ret.lstrip("-").isdigit():
            ret = "forever" if int(ret) < 0 else f"{int(ret) / 86_400_000:g}d"
        row = [
            name,
            str(t.partitions),
            str(t.replication_factor),
            t.config.get("cleanup.policy", ""),
            ret,
        ]
        if result is not None:
            row.append(result.get(name, ""))
        table.add_row(*row)
    return table


@app.command()
def up(
    port: PortOpt = None,
    heap: Annotated[str, typer.Option(help="JVM heap (-Xmx/-Xms).")] = "512m",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 120.0,
    topics: Annotated[bool, typer.Option(help="Create the project's topics.")] = True,
    grow: Annotated[bool, typer.Option(help="Add partitions to too-small topics.")] = False,
    secure: SecureOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Fetch Kafka if needed, start the local broker, create the topics (idempotent).

    ``--secure``: a separate broker whose client listener is SASL_SSL, with a generated
    CA and certificate and SCRAM users; prints the client settings it needs."""
    settings = load_settings(config)
    broker = _broker(settings, port, heap, secure)
    if secure and broker.is_formatted() and not broker.security_dir.is_dir():
        console.print(
            f"[red]error:[/] {broker.data_dir} belongs to a plaintext broker: give the "
            "secure one another --port"
        )
        raise typer.Exit(1)
    kafka = _kafka(settings, broker.port, broker)
    try:
        if not broker.is_fetched():
            with console.status("fetching Kafka from Maven Central..."):
                broker.fetch()
        t0 = time.monotonic()
        with console.status(f"starting Kafka on {broker.bootstrap}..."):
            st = broker.start(timeout=timeout)
        took = time.monotonic() - t0
        if broker.last_start_seconds is not None:
            console.print(f"[green]Kafka started[/] on {st.bootstrap} in {took:.1f}s")
        else:
            console.print(f"Kafka already running on {st.bootstrap}")
        console.print(_status_table(st))
        if broker.secure:
            env_file, yaml_file = broker.write_client_config()
            console.print(f"client settings (SASL_SSL, user monitoring): {yaml_file}")
            console.print(f"as environment variables: set -a; . {env_file}; set +a")
            print(env_file.read_text(), end="")
        if topics:
            result = ensure_topics(kafka, timeout=timeout, grow=grow)
            console.print(_topics_table(kafka, result))
        if broker.secure:
            broker.apply_acls(acl_bindings(kafka), timeout=timeout)
            for user in ROLE_USERS:
                broker.write_client_config(user)
            console.print(
                f"ACLs of prefix {kafka.topic_prefix!r} applied (monitoring broker acls); "
                f"one user per process kind, {', '.join(ROLE_USERS)}: "
                f"{broker.security_dir}/<user>.env"
            )
    except (LocalKafkaError, BrokerUnavailable, TopicError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None


@app.command()
def down(
    port: PortOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 60.0,
    secure: SecureOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Stop the local broker (controlled shutdown; SIGKILL after --timeout)."""
    broker = _broker(load_settings(config), port, secure=secure)
    with console.status(f"stopping Kafka on {broker.bootstrap}..."):
        stopped = broker.stop(timeout=timeout)
    if stopped:
        console.print(f"Kafka on {broker.bootstrap} stopped")
    elif broker.status().running:
        console.print(f"[yellow]a broker on {broker.bootstrap} is not managed here: left running")
    else:
        console.print(f"Kafka on {broker.bootstrap} was not running")


@app.command()
def status(port: PortOpt = None, secure: SecureOpt = False, config: ConfigOpt = None) -> None:
    """Show whether the local broker runs and answers; exit code 1 if it does not."""
    st = _broker(load_settings(config), port, secure=secure).status()
    console.print(_status_table(st))
    if not st.running:
        raise typer.Exit(1)


@app.command()
def logs(
    port: PortOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines to show.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Print the tail of the broker's server.log (and its stdout)."""
    broker = _broker(load_settings(config), port)
    if not follow:
        print(broker.log_tail(lines))
        return
    path = broker.server_log
    if not path.exists():
        console.print(f"[red]no log at {path}")
        raise typer.Exit(1)
    with open(path, errors="replace") as fh:
        for line in fh.readlines()[-lines:]:
            print(line, end="")
        try:
            while True:
                line = fh.readline()
                if line:
                    print(line, end="", flush=True)
                else:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@app.command()
def reset(
    port: PortOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Stop the local broker and delete its data (all topics and offsets)."""
    broker = _broker(load_settings(config), port)
    if not yes:
        typer.confirm(f"Delete all Kafka data in {broker.data_dir}?", abort=True)
    broker.destroy()
    console.print(f"Kafka on {broker.bootstrap} stopped and {broker.data_dir} deleted")


@topics_app.command("create")
def topics_create(
    port: PortOpt = None,
    grow: Annotated[bool, typer.Option(help="Add partitions to too-small topics.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 30.0,
    config: ConfigOpt = None,
) -> None:
    """Create the project's topics (idempotent); align configs of existing ones."""
    kafka = _kafka(load_settings(config), port)
    try:
        result = ensure_topics(kafka, timeout=timeout, grow=grow)
    except (BrokerUnavailable, TopicError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None
    console.print(_topics_table(kafka, result))


@topics_app.command("list")
def topics_list(
    port: PortOpt = None,
    all_topics: Annotated[
        bool, typer.Option("--all", "-a", help="Every topic, not only the prefix's.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """List topics with partitions, replication, cleanup policy and retention."""
    kafka = _kafka(load_settings(config), port)
    if all_topics:
        kafka = kafka.model_copy(update={"topic_prefix": ""})
    try:
        wait_for_broker(kafka, timeout=10.0)
        console.print(_topics_table(kafka))
    except BrokerUnavailable as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None


# what the generated script can carry in `$A`, where the shell splits words and globs
_PLAIN_SERVERS = re.compile(r"[A-Za-z0-9.-]+:[0-9]+(,[A-Za-z0-9.-]+:[0-9]+)*")
_USER_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@app.command("acls")
def acls_(
    prefix: Annotated[
        str | None, typer.Option(help="Topic prefix (default: kafka.topic_prefix).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="kafka-acls (shell commands) or json.")
    ] = "kafka-acls",
    bootstrap: Annotated[
        str | None,
        typer.Option(help="Bootstrap servers in the commands (default: kafka.bootstrap_servers)."),
    ] = None,
    user_prefix: Annotated[
        str,
        typer.Option(
            help="Principals User:<user-prefix><kind>: a deployment's own users when "
            "another deployment shares the cluster."
        ),
    ] = USER_PREFIX,
    config: ConfigOpt = None,
) -> None:
    """Print the ACLs of a shared cluster: one principal per process kind
    (``User:monitoring-<kind>``), each allowed only the topics, groups and
    transactional ids it uses."""
    if not _USER_PREFIX.fullmatch(user_prefix):  # in the script unquoted, and a SCRAM name
        typer.echo("error: --user-prefix: letters, digits, '.', '_' and '-'", err=True)
        raise typer.Exit(2)
    if fmt not in ("kafka-acls", "json"):
        typer.echo(f"error: --format {fmt!r}: kafka-acls or json", err=True)
        raise typer.Exit(2)
    kafka = load_settings(config).kafka
    given = {"topic_prefix": prefix, "bootstrap_servers": bootstrap}
    for key, value in given.items():
        if value is None:
            continue
        try:  # the settings' own checks (a bootstrap list word splitting cannot widen)
            kafka = KafkaSettings.model_validate({**kafka.model_dump(), key: value})
        except ValidationError as e:
            typer.echo(f"error: --{key.split('_')[0]}: {e.errors()[0]['msg']}", err=True)
            raise typer.Exit(2) from None
    if not _PLAIN_SERVERS.fullmatch(kafka.bootstrap_servers):  # `$A` is expanded unquoted
        typer.echo("error: --bootstrap: host:port[,host:port...], names or IPv4", err=True)
        raise typer.Exit(2)
    if not kafka.topic_prefix:  # a prefixed binding on '' would be every topic and group
        typer.echo("error: an empty topic prefix: the ACLs need one (--prefix)", err=True)
        raise typer.Exit(2)
    if kafka.topic_prefix[-1] not in PREFIX_SEPARATORS:  # 'p' would grant 'payments.*'
        typer.echo(f"error: {unseparated_prefix(kafka.topic_prefix)}", err=True)
        raise typer.Exit(2)
    bindings = acl_bindings(kafka, user_prefix)
    if fmt == "json":
        print(to_json(bindings))
    else:
        print(
            kafka_acls_script(bindings, kafka.bootstrap_servers, kafka.topic_prefix, user_prefix),
            end="",
        )
