"""``monitoring broker up --secure`` for real: a SASL_SSL broker on a free port with its
own data directory, the client settings it prints and writes (naming the password
file, not the password), a user per process kind with the prefix's ACLs, ``status``
finding it secure, ``reset`` removing it."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from monitoring.cli.broker import app
from monitoring.config import KafkaSecurity, KafkaSettings
from monitoring.dev.local_kafka import LocalKafka
from monitoring.runtime.admin import list_topics, wait_for_broker
from monitoring.runtime.kafka_client import read_password

pytestmark = [pytest.mark.integration, pytest.mark.own_broker]


def _free_pair() -> int:
    """A port whose successor (the controller's) is free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture
def port() -> Iterator[int]:
    p = _free_pair()
    yield p
    broker = LocalKafka(port=p)
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)


def test_up_secure_prints_its_client_settings(port: int) -> None:
    runner = CliRunner()
    up = runner.invoke(app, ["up", "--secure", "--port", str(port), "--heap", "256m",
                             "--topics", "--timeout", "180"])  # fmt: skip
    assert up.exit_code == 0, up.output
    broker = LocalKafka(port=port)
    assert broker.secure  # found from its data directory
    env = dict(
        line.split("=", 1) for line in (broker.security_dir / "client.env").read_text().splitlines()
    )
    sec = KafkaSecurity(
        protocol=env["MONITORING_KAFKA__SECURITY__PROTOCOL"],
        username=env["MONITORING_KAFKA__SECURITY__USERNAME"],
        password_file=env["MONITORING_KAFKA__SECURITY__PASSWORD_FILE"],
        ssl_cafile=env["MONITORING_KAFKA__SECURITY__SSL_CAFILE"],
    )
    kafka = KafkaSettings(
        bootstrap_servers=env["MONITORING_KAFKA__BOOTSTRAP_SERVERS"], security=sec
    )
    assert sec.protocol == "SASL_SSL" and kafka.bootstrap_servers == f"127.0.0.1:{port}"
    password = read_password(sec)
    assert password not in up.output
    assert password not in (broker.security_dir / "client.yaml").read_text()
    assert (broker.security_dir / "monitoring.password").stat().st_mode & 0o077 == 0
    # the client settings work, and `up` created the project's topics over SASL_SSL
    assert wait_for_broker(kafka, timeout=60).brokers
    assert "monitoring.metrics.samples" in list_topics(kafka, prefix="monitoring.")
    # a user per process kind, the prefix's ACLs applied: the worker's sees its topics
    worker_env = (broker.security_dir / "monitoring-worker.env").read_text()
    assert "MONITORING_KAFKA__SECURITY__USERNAME=monitoring-worker" in worker_env
    worker = broker.client_settings("monitoring-worker")
    assert read_password(worker.security) not in worker_env + up.output
    assert "monitoring.metrics.samples" in list_topics(worker, prefix="monitoring.")

    status = runner.invoke(app, ["status", "--port", str(port)])
    assert status.exit_code == 0, status.output
    reset = runner.invoke(app, ["reset", "--yes", "--port", str(port)])
    assert reset.exit_code == 0, reset.output
    assert not broker.data_dir.exists()
