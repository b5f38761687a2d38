"""`monitoring doctor` through the CLI in-process, against the real broker and a real
store query endpoint (the store's QueryServer over a migrated chDB directory):

* a healthy deployment (fresh prefix, migrated store, a receiver that listens): all OK;
* a missing topic and a topic with fewer partitions than the settings: FAIL with the fix;
* a store missing migrations: FAIL naming them;
* an unreachable broker (127.0.0.1:1): FAIL within a bound, the broker's checks skipped.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from monitoring.api.guard import Guard
from monitoring.cli import app
from monitoring.config import Settings
from monitoring.query import clickhouse_http
from monitoring.runtime.admin import delete_topics
from monitoring.runtime.topics import ALERTS, SAMPLES, topic_name, topic_specs
from monitoring.sinks.clickhouse.connection import connect, connect_read_only
from monitoring.sinks.clickhouse.migrations import load as load_migrations
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.query_server import QueryServer

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def receiver() -> Iterator[int]:
    """A TCP port that accepts connections (a receiver's host:port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, int, str, Any]]:
    """(dsn, query port, token, writer client): a migrated chDB store serving queries."""
    dsn = f"chdb://{tmp_path / 'chdb'}"
    writer = connect(dsn)
    migrate(writer, Settings.load(None).storage)
    token = secrets.token_urlsafe(16)
    reader = connect_read_only(dsn)
    server = QueryServer(
        reader, CollectorRegistry(), "127.0.0.1", 0,
        guard=Guard.for_bind("127.0.0.1", token=token), protocols=[clickhouse_http.routes],
    )  # fmt: skip
    server.start()
    try:
        yield dsn, server.address[1], token, writer
    finally:
        server.stop()
        reader.close()
        writer.close()


def env_of(settings: Settings, tmp_path: Path, receiver: int, store: Any) -> dict[str, str]:
    dsn, port, token, _ = store
    am = tmp_path / "am.yml"
    am.write_text(
        "route: {receiver: hook}\nreceivers:\n"
        f"  - name: hook\n    webhook_configs: [{{url: 'http://127.0.0.1:{receiver}/x'}}]\n"
    )
    return {
        "MONITORING_CONFIG": "",
        "MONITORING_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MONITORING_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "MONITORING_STORAGE__DSN": dsn,
        "MONITORING_STORAGE__QUERY_PORT": str(port),
        "MONITORING_API__TOKEN": token,
        "MONITORING_NOTIFIER__CONFIG": str(am),
        "MONITORING_REPORTING__OUT_DIR": str(tmp_path / "reports"),
        "MONITORING_UI__DASHBOARDS_DIR": str(tmp_path / "dashboards"),
    }


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(app, ["doctor", "--json", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    doc = json.loads(result.stdout)
    text = runner.invoke(app, ["doctor", *args], env=env).stdout
    return result.exit_code, doc, text


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in doc["checks"]}


def test_a_healthy_deployment_is_all_ok(
    kafka_settings: Settings, tmp_path: Path, receiver: int, store: Any
) -> None:
    env = env_of(kafka_settings, tmp_path, receiver, store)
    code, doc, text = doctor(env)
    bad = [c for c in doc["checks"] if c["status"] != "OK"]
    assert bad == [] and code == 0 and doc["status"] == "OK", bad
    checks = by_name(doc)
    assert "Kafka 4.x" in checks["broker"]["detail"]
    assert f"{len(topic_specs(kafka_settings.kafka))} topics" in checks["topics"]["detail"]
    assert "held by pid" in checks["chdb"]["detail"]  # this process holds it, not taken
    n = len(load_migrations())
    assert f"{n} of {n} migrations applied" in checks["migrations"]["detail"]
    assert "ms (+/-" in checks["clock"]["detail"]
    assert set(checks) >= {"config", "schemas", "credentials", "disk", "rules", "receivers"}
    assert all(line.split()[0] == "OK" for line in text.splitlines())


def test_missing_topic_and_too_few_partitions_fail_with_the_fix(
    settings_factory: Any, tmp_path: Path, receiver: int, store: Any
) -> None:
    settings = settings_factory(samples_partitions=3)
    delete_topics(settings.kafka.bootstrap_servers, [topic_name(settings.kafka, ALERTS)])
    env = env_of(settings, tmp_path, receiver, store)  # the environment says 6 partitions
    code, doc, text = doctor(env)
    assert code == 1 and doc["status"] == "FAIL"
    topics = by_name(doc)["topics"]
    assert topics["status"] == "FAIL"
    samples = topic_name(settings.kafka, SAMPLES)
    assert f"{samples}: 3 partitions, settings say 6" in topics["detail"]
    assert f"{topic_name(settings.kafka, ALERTS)}: missing" in topics["detail"]
    assert "monitoring broker topics create" in topics["hint"] and "--grow" in topics["hint"]
    assert "fix: `monitoring broker topics create`" in text
    assert by_name(doc)["broker"]["status"] == "OK"


def test_pending_migrations_fail(
    kafka_settings: Settings, tmp_path: Path, receiver: int, store: Any
) -> None:
    last = len(load_migrations())
    store[3].command(f"ALTER TABLE schema_migrations DELETE WHERE version = {last}")
    deadline = time.monotonic() + 30
    while store[3].query("SELECT count() FROM schema_migrations").result_rows[0][0] != last - 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    code, doc, _ = doctor(env_of(kafka_settings, tmp_path, receiver, store))
    mig = by_name(doc)["migrations"]
    assert code == 1 and mig["status"] == "FAIL"
    assert f"pending: {last}" in mig["detail"] and "store migrate" in mig["hint"]


def test_an_unreachable_broker_fails_fast(
    kafka_settings: Settings, tmp_path: Path, receiver: int, store: Any
) -> None:
    env = env_of(kafka_settings, tmp_path, receiver, store)
    env["MONITORING_KAFKA__BOOTSTRAP_SERVERS"] = "127.0.0.1:1"
    t0 = time.monotonic()
    code, doc, text = doctor(env, "--timeout", "2")
    took = time.monotonic() - t0
    checks = by_name(doc)
    assert code == 1 and checks["broker"]["status"] == "FAIL"
    assert "127.0.0.1:1" in checks["broker"]["detail"]
    assert text.splitlines()[1].startswith("FAIL  broker")
    assert "monitoring broker up" in checks["broker"]["hint"]
    for name in ("topics", "schemas", "clock"):
        assert checks[name] == {**checks[name], "status": "WARN"}
        assert "no broker" in checks[name]["detail"]
    assert checks["migrations"]["status"] == "OK"  # the rest is still checked
    assert took < 60  # two runs (JSON and text), each bounded by --timeout
    print(f"doctor against 127.0.0.1:1 (twice): {took:.1f} s")


def test_a_producer_clock_ahead_fails(
    kafka_settings: Settings, tmp_path: Path, receiver: int, store: Any
) -> None:
    from confluent_kafka import Producer

    from monitoring.wire.codec import AvroCodec

    s = kafka_settings
    codec = AvroCodec.from_directory()
    now = int(time.time() * 1000)
    p = Producer({"bootstrap.servers": s.kafka.bootstrap_servers})
    for ahead_ms in (0, 60_000):  # the second producer's clock runs a minute ahead
        sample = {"name": "skewed", "value": 1.0, "timestamp_ms": now + ahead_ms}
        p.produce(topic_name(s.kafka, SAMPLES), codec.encode("monitoring.MetricSample", sample))
    assert p.flush(30) == 0
    code, doc, _ = doctor(env_of(s, tmp_path, receiver, store))
    check = by_name(doc)["producer clocks"]
    assert code == 1 and check["status"] == "FAIL"
    assert "2 recent samples" in check["detail"] and "max_record_skew" in check["hint"]
    assert by_name(doc)["schemas"]["status"] == "OK"


def test_the_chdb_holder_is_named_and_never_robbed(
    kafka_settings: Settings, tmp_path: Path, receiver: int
) -> None:
    """Processes, because the lock is between processes: `monitoring store migrate`
    creates the directory; a second process holds it (as a store would) and the doctor
    names its pid without opening it; once that process is gone, the doctor reads the
    migrations from the directory itself."""
    import os
    import subprocess
    import sys

    dsn = f"chdb://{tmp_path / 'chdb'}"
    env = env_of(kafka_settings, tmp_path, receiver, (dsn, 1, "", None))
    child_env = {**os.environ, **env}
    monitoring = str(Path(sys.executable).parent / "monitoring")
    subprocess.run([monitoring, "store", "migrate"], env=child_env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from monitoring.sinks.clickhouse.connection "
         f"import connect; c = connect({dsn!r}); print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        code, doc, _ = doctor(env, "--timeout", "2")
        assert code == 1
        checks = by_name(doc)
        assert f"held by pid {holder.pid}" in checks["chdb"]["detail"]
        assert checks["migrations"]["status"] == "FAIL"
        assert f"while pid {holder.pid} (" in checks["migrations"]["detail"]
        assert holder.poll() is None  # still running: the doctor took nothing from it
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(60)
    _, doc, _ = doctor(env, "--timeout", "2")
    checks = by_name(doc)
    assert "free" in checks["chdb"]["detail"]
    assert checks["migrations"]["status"] == "OK"
    assert "opened here" in checks["migrations"]["detail"]
    n = len(load_migrations())
    assert f"{n} of {n} migrations applied" in checks["migrations"]["detail"]
