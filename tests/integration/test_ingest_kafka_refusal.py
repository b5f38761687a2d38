"""The ingest processes (``monitoring receive``, ``scrape``, ``collect system``, ``logs
ship``) given a wrong password or an untrusted CA for a real SASL_SSL broker exit
non-zero, naming the reason, within a bound, as the worker and the store do; so do the
operators' commands (status, dlq, state rebuild, store backfill). No password in a log.
(Their producers are the SDK's, which only logs a refusal: a library does not end its
host, a process does.)"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from fixtures.secure_kafka import security_overrides

from monitoring.dev.deploy import BIN, LocalDeployment
from monitoring.dev.kafka_tls import new_ca
from monitoring.dev.local_kafka import CLIENT_USER, LocalKafka
from monitoring.runtime.kafka_client import read_password

pytestmark = [pytest.mark.integration, pytest.mark.own_broker]

WRONG = "Wr0ng-pa55word-ingest"
FAIL_WITHIN_S = 90  # a refused process gives up within this (it must not hang)


def _untrusted_ca(tmp_path: Path) -> Path:
    cert, _ = new_ca("some other CA")
    path = tmp_path / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def deployment(
    secure_kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalDeployment]:
    """Topics on the secure broker (created as its client), for every case."""
    d = LocalDeployment(
        secure_kafka.bootstrap,
        tmp_path_factory.mktemp("refusal"),
        None,
        None,
        **security_overrides(secure_kafka),
    )
    yield d
    d.delete_topics()


def _command(role: str, tmp_path: Path) -> list[str]:
    if role == "receive":
        return ["receive", "--port", "0"]
    if role == "collect":
        return ["collect", "system", "--interval", "1"]
    if role == "ship":
        log = tmp_path / "app.log"
        log.write_text("hello\n")
        return ["logs", "ship", str(log), "--service", "app", "--from-start"]
    config = tmp_path / "scrape.yml"  # a target that never answers: the Kafka side fails
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 500ms}\n"
        "scrape_configs:\n  - job_name: app\n    static_configs: [{targets: ['127.0.0.1:9']}]\n"
    )
    return ["scrape", "--config", str(config)]


@pytest.mark.parametrize(
    ("role", "change", "reason"),
    [
        ("receive", "password", "refused the credentials of user 'monitoring'"),
        ("scrape", "password", "refused the credentials of user 'monitoring'"),
        ("collect", "password", "refused the credentials of user 'monitoring'"),
        ("collect", "ca", "TLS with Kafka"),
        ("ship", "password", "refused the credentials of user 'monitoring'"),
    ],
)
def test_ingest_process_fails_at_start_naming_the_reason(
    secure_kafka: LocalKafka,
    deployment: LocalDeployment,
    tmp_path: Path,
    role: str,
    change: str,
    reason: str,
) -> None:
    d = deployment
    bad = (
        {"password": WRONG, "password_file": ""}
        if change == "password"
        else {"ssl_cafile": str(_untrusted_ca(tmp_path))}
    )
    env = {**d.env, **{f"MONITORING_KAFKA__SECURITY__{k.upper()}": v for k, v in bad.items()}}
    log = tmp_path / f"{role}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN), *_command(role, tmp_path)], env=env, stdout=out, stderr=out
        )
    try:
        code = proc.wait(FAIL_WITHIN_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        raise AssertionError(
            f"{role} still runs {FAIL_WITHIN_S}s after Kafka refused it: it must fail, not "
            f"retry for ever\n{log.read_text(errors='replace')[-2000:]}"
        ) from None
    text = log.read_text(errors="replace")
    assert code == 1, text[-2000:]
    said = [line for line in text.splitlines() if line.startswith("error: ")]
    assert said and reason in said[-1], text[-2000:]
    assert WRONG not in text
    assert read_password(secure_kafka.client_settings(CLIENT_USER).security) not in text


TOOLS = {
    "status": ["status", "--json"],
    "dlq": ["dlq", "list"],
    "rebuild": ["state", "rebuild", "aggregation"],
    "backfill": ["store", "backfill", "--from", "10m", "--timeout", "60"],
    "replay": ["dlq", "replay", "--all"],
    "produce": ["produce", "sample", "up", "1"],
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_operator_commands_name_a_refused_password(
    secure_kafka: LocalKafka, deployment: LocalDeployment, tmp_path: Path, tool: str
) -> None:
    """The operators' commands given a wrong password end non-zero naming it, within a
    bound, instead of reporting an empty topic or a broker that does not answer."""
    env = {
        **deployment.env,
        "MONITORING_KAFKA__SECURITY__PASSWORD": WRONG,
        "MONITORING_KAFKA__SECURITY__PASSWORD_FILE": "",
        "MONITORING_STORAGE__DSN": f"chdb://{tmp_path / 'chdb'}",
    }
    try:
        done = subprocess.run(
            [str(BIN), *TOOLS[tool]], env=env, capture_output=True, timeout=FAIL_WITHIN_S
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{tool} still runs after {FAIL_WITHIN_S}s") from None
    text = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode != 0, text[-2000:]
    assert "refused the credentials of user 'monitoring'" in text, text[-2000:]
    assert WRONG not in text
