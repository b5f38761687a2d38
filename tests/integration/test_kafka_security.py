"""Kafka security against a real SASL_SSL broker (``secure_kafka``: SCRAM users, a
generated CA): the pipeline end to end over SASL_SSL, a wrong password and an
untrusted CA each refused at start with a clear message within a bound, and the
secrets in no log or settings dump."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from fixtures.dataset import generate, oracle
from fixtures.secure_kafka import security_overrides
from pydantic import SecretStr

from monitoring.config import KafkaSettings, Settings
from monitoring.dev.deploy import LocalDeployment
from monitoring.dev.kafka_tls import new_ca
from monitoring.dev.local_kafka import CLIENT_USER, LocalKafka
from monitoring.metrics.collector import MetricsCollector
from monitoring.ops import doctor
from monitoring.ops.checks import Status
from monitoring.runtime.admin import BrokerAccessDenied, ensure_topics, wait_for_broker
from monitoring.runtime.kafka_client import read_password

pytestmark = [pytest.mark.integration, pytest.mark.own_broker]

OWN = "name != 'anomaly_score'"
WRONG = "Wr0ng-pa55word-x7"
FAIL_WITHIN_S = 60  # a refused client gives up within this (it must not hang)


def _recent_start(ticks: int) -> int:
    now = int(time.time() * 1000)
    return now - now % 60_000 - (ticks // 60 + 3) * 60_000


def _untrusted_ca(tmp_path: Path) -> Path:
    cert, _ = new_ca("some other CA")
    path = tmp_path / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _secure(broker: LocalKafka, **changes: object) -> KafkaSettings:
    k = broker.client_settings()
    return k.model_copy(update={"security": k.security.model_copy(update=changes)})


def _deployment(broker: LocalKafka, directory: Path) -> LocalDeployment:
    """A deployment (topics created) on the secure broker, as its client."""
    return LocalDeployment(broker.bootstrap, directory, None, None, **security_overrides(broker))


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        raise AssertionError(f"still running after {timeout}s: it must fail, not hang") from None


def test_pipeline_end_to_end_over_sasl_ssl(secure_kafka: LocalKafka, tmp_path: Path) -> None:
    """Producer SDK -> samples -> worker (Faust over SASL_SSL) -> aggregates -> store
    (librdkafka over SASL_SSL) -> chDB, against the exact oracle."""
    d = _deployment(secure_kafka, tmp_path / "p")
    try:
        assert d.settings.kafka.security.protocol == "SASL_SSL"
        d.start_store()
        d.start("worker", "worker")
        points = generate(n_series=20, ticks=90, start_ms=_recent_start(90), late_fraction=0)
        with MetricsCollector(d.settings, batch=True, linger=0.05) as mc:
            for pt in points:
                mc.record(pt.name, pt.value, pt.labels, timestamp_ms=pt.timestamp_ms)
            mc.flush(60)
        expected = oracle(points, d.settings.aggregation.windows_ms)
        d.wait(
            lambda: (
                d.query(f"SELECT count() FROM aggregates FINAL WHERE {OWN}")[0][0] >= len(expected)
            ),
            240,
            f"{len(expected)} aggregate rows over SASL_SSL\n{d.logs()}",
        )
        rows = d.query(
            "SELECT series, window_ms, toUnixTimestamp64Milli(window_start), count, sum "
            f"FROM aggregates FINAL WHERE {OWN}"
        )
        got = {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}
        assert set(got) == set(expected)
        for key, e in expected.items():
            assert got[key] == (e.count, e.sum), key
    finally:
        d.stop_all()
    password = read_password(secure_kafka.client_settings().security)
    for log in tmp_path.glob("p/*.log"):
        assert password not in log.read_text(errors="replace"), log


def test_wrong_password_refused_at_once(secure_kafka: LocalKafka) -> None:
    bad = _secure(secure_kafka, password_file="", password=SecretStr("not-the-password"))
    t0 = time.monotonic()
    with pytest.raises(BrokerAccessDenied, match="refused the credentials of user 'monitoring'"):
        ensure_topics(bad, timeout=FAIL_WITHIN_S)
    assert time.monotonic() - t0 < FAIL_WITHIN_S
    # the right password on the same broker is accepted
    assert wait_for_broker(secure_kafka.client_settings(), timeout=60).brokers


def test_untrusted_ca_refused_at_once(secure_kafka: LocalKafka, tmp_path: Path) -> None:
    bad = _secure(secure_kafka, ssl_cafile=str(_untrusted_ca(tmp_path)))
    t0 = time.monotonic()
    with pytest.raises(BrokerAccessDenied, match=r"TLS with Kafka at .* failed"):
        wait_for_broker(bad, timeout=FAIL_WITHIN_S)
    assert time.monotonic() - t0 < FAIL_WITHIN_S


def test_plaintext_client_of_the_secure_listener_gets_nothing(secure_kafka: LocalKafka) -> None:
    from monitoring.runtime.admin import BrokerUnavailable

    with pytest.raises(BrokerUnavailable):
        wait_for_broker(secure_kafka.bootstrap, timeout=5)


@pytest.mark.parametrize(
    ("role", "change", "reason"),
    [
        ("worker", {"password": WRONG}, "refused the credentials"),
        ("store", {"password": WRONG}, "refused the credentials"),
        ("worker", {"ssl_cafile": None}, "TLS with Kafka"),
        ("store", {"ssl_cafile": None}, "TLS with Kafka"),
    ],
)
def test_process_fails_at_start_naming_the_reason(
    secure_kafka: LocalKafka, tmp_path: Path, role: str, change: dict[str, str | None], reason: str
) -> None:
    """A worker or store given a wrong password or an untrusted CA exits non-zero
    with the reason in its log, within a bound; the password is not in the log."""
    d = _deployment(secure_kafka, tmp_path / "p")
    bad = {k: v if v is not None else str(_untrusted_ca(tmp_path)) for k, v in change.items()}
    if "password" in bad:
        bad["password_file"] = ""
    env = {f"kafka__security__{k}": v for k, v in bad.items()}
    try:
        proc = d.start(role, "bad", **env)
        code = _wait_exit(proc, FAIL_WITHIN_S + 30)
    finally:
        d.stop_all()
    log = (tmp_path / "p" / "bad.log").read_text(errors="replace")
    assert code != 0, log[-2000:]
    assert reason in log, log[-2000:]
    good = read_password(secure_kafka.client_settings(CLIENT_USER).security)
    assert good not in log
    assert WRONG not in log


def _settings(kafka: KafkaSettings) -> Settings:
    base = Settings.load(None)
    return base.model_copy(update={"kafka": kafka.model_copy(update={"topic_prefix": "doc."})})


def test_doctor_says_the_credentials_work(secure_kafka: LocalKafka) -> None:
    results = {r.name: r for r in doctor.run(settings=_settings(secure_kafka.client_settings()))}
    assert results["credentials"].status is Status.OK, results["credentials"]
    assert "SASL_SSL as 'monitoring' (SCRAM-SHA-512)" in results["credentials"].detail
    # the broker line read the API versions over SASL_SSL too
    assert results["broker"].status is Status.OK, results["broker"]
    assert "Kafka 4.x" in results["broker"].detail


def test_doctor_names_a_refused_password(secure_kafka: LocalKafka) -> None:
    bad = _secure(secure_kafka, password_file="", password=SecretStr(WRONG))
    t0 = time.monotonic()
    results = {r.name: r for r in doctor.run(settings=_settings(bad))}
    assert time.monotonic() - t0 < FAIL_WITHIN_S
    for name in ("broker", "credentials"):
        assert results[name].status is Status.FAIL, results[name]
        assert "refused the credentials of user 'monitoring'" in results[name].detail
    assert all(WRONG not in r.detail for r in results.values())


def test_broker_logs_hold_no_password(secure_kafka: LocalKafka) -> None:
    """Kafka prints its configuration at start: the JAAS line (the broker's own SCRAM
    password) is a password-type setting, shown as hidden."""
    assert wait_for_broker(secure_kafka.client_settings(), timeout=60).brokers
    logs = [secure_kafka.stdout_log, *sorted(secure_kafka.logs_dir.glob("*.log"))]
    text = "\n".join(p.read_text(errors="replace") for p in logs if p.is_file())
    assert "SASL_SSL" in text  # the logs are there
    for user in ("admin", CLIENT_USER):
        password = read_password(secure_kafka.client_settings(user).security)
        assert password not in text, user


def test_sdk_producer_names_a_refused_password(secure_kafka: LocalKafka) -> None:
    """The SDK (a library: it logs, it does not end its host) names the refusal."""
    from structlog.testing import capture_logs

    bad = _settings(_secure(secure_kafka, password_file="", password=SecretStr(WRONG)))
    with capture_logs() as logs:
        mc = MetricsCollector(bad, close_timeout=1.0, metadata_timeout=1.0)
        try:
            mc.record("up", 1.0, {"job": "x"})
            deadline = time.monotonic() + FAIL_WITHIN_S
            while not any(e["event"] == "kafka_access_denied" for e in logs):
                assert time.monotonic() < deadline, logs[-5:]
                time.sleep(0.1)
        finally:
            mc.close()
    denied = next(e for e in logs if e["event"] == "kafka_access_denied")
    assert "refused the credentials of user 'monitoring'" in denied["reason"]
    assert all(WRONG not in str(e) for e in logs)
