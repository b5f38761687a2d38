"""kafka.security: validation, the one translation into librdkafka and Faust settings,
secrets kept out of dumps, and no Kafka client built outside ``runtime.kafka_client``."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import SecretStr, ValidationError

from monitoring.config import KafkaSecurity, KafkaSettings, Settings
from monitoring.dev.kafka_tls import issue
from monitoring.runtime.kafka_client import (
    MAX_PASSWORD_FILE_BYTES,
    KafkaAccessDenied,
    KafkaSecurityError,
    access_problem,
    authorization_problem,
    client_config,
    client_security,
    faust_credentials,
    raise_on_access_error,
    read_password,
)

PASSWORD = "s3cr3t-Pa55word-q9"
ROOT = Path(__file__).resolve().parents[2] / "monitoring"


def _kafka(**security: object) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers="b:9093", security=KafkaSecurity(**security))


def test_plaintext_by_default() -> None:
    assert client_config(KafkaSettings()) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }
    assert faust_credentials(KafkaSettings()) is None
    # a bare address is a plaintext broker there
    assert client_config("h:1", **{"group.id": "g"})["bootstrap.servers"] == "h:1"


def test_sasl_ssl_with_password(tmp_path: Path) -> None:
    tls = issue(tmp_path)
    k = _kafka(
        protocol="SASL_SSL", username="u", password=SecretStr(PASSWORD), ssl_cafile=str(tls.ca_cert)
    )
    conf = client_config(k, acks="all")
    assert conf == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(tls.ca_cert),
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": PASSWORD,
        "acks": "all",
    }
    creds = faust_credentials(k)
    assert isinstance(creds, SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (creds.username, creds.password) == ("u", PASSWORD)
    assert isinstance(creds.ssl_context, ssl.SSLContext) and creds.ssl_context.check_hostname
    assert PASSWORD not in repr(creds) and PASSWORD not in repr(client_security(k))


def test_password_file_first_line_and_sha256(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(PASSWORD + "\nignored\n")
    k = _kafka(
        protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256", username="u",
        password_file=str(f),
    )  # fmt: skip
    conf = client_config(k)
    assert (conf["sasl.password"], conf["sasl.mechanisms"]) == (PASSWORD, "SCRAM-SHA-256")
    creds = faust_credentials(k)
    assert isinstance(creds, SASLCredentials) and creds.protocol.value == "SASL_PLAINTEXT"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read"),
        (b"", "empty first line"),
        (b"x" * (MAX_PASSWORD_FILE_BYTES + 1), "over 4096 bytes"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_password_file_named(tmp_path: Path, content: bytes | None, reason: str) -> None:
    f = tmp_path / "pw"
    if content is not None:
        f.write_bytes(content)
    sec = KafkaSecurity(protocol="SASL_SSL", username="u", password_file=str(f))
    with pytest.raises(KafkaSecurityError, match=reason):
        read_password(sec)


def test_ssl_only_and_no_hostname_check(tmp_path: Path) -> None:
    tls = issue(tmp_path)
    k = _kafka(protocol="SSL", ssl_cafile=str(tls.ca_cert), check_hostname=False)
    conf = client_config(k)
    assert conf["ssl.endpoint.identification.algorithm"] == "none"
    assert "sasl.username" not in conf
    creds = faust_credentials(k)
    assert isinstance(creds, SSLCredentials) and not creds.context.check_hostname


def test_missing_ca_file_named(tmp_path: Path) -> None:
    k = _kafka(protocol="SSL", ssl_cafile=str(tmp_path / "nope.pem"))
    with pytest.raises(KafkaSecurityError, match="TLS files"):
        client_security(k)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"protocol": "SASL_SSL", "password": "p"}, "needs a username"),
        ({"protocol": "SASL_SSL", "username": "u"}, "exactly one of password and password_file"),
        (
            {"protocol": "SASL_SSL", "username": "u", "password": "p", "password_file": "f"},
            "exactly one of password and password_file",
        ),
        ({"protocol": "SSL", "ssl_certfile": "c.pem"}, "go together"),
        ({"protocol": "SASL_PLAINTEXT", "username": "u", "password": "p", "ssl_cafile": "a"},
         "has no TLS"),
        ({"protocol": "TLS"}, "PLAINTEXT"),
        ({"sasl_mechanism": "PLAIN"}, "SCRAM-SHA-512"),
    ],
)  # fmt: skip
def test_invalid_security_rejected(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        KafkaSecurity.model_validate(fields)


def test_secrets_redacted_in_every_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITORING_KAFKA__SECURITY__PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MONITORING_KAFKA__SECURITY__USERNAME", "u")
    monkeypatch.setenv("MONITORING_KAFKA__SECURITY__PASSWORD", PASSWORD)
    monkeypatch.setenv("MONITORING_KAFKA__SECURITY__SSL_KEY_PASSWORD", PASSWORD + "k")
    s = Settings.load(None)
    assert s.kafka.security.password.get_secret_value() == PASSWORD
    for dump in (repr(s), str(s), s.model_dump_json(), str(s.model_dump()), repr(s.kafka)):
        assert PASSWORD not in dump


def test_access_errors_explained() -> None:
    k = _kafka(protocol="SASL_SSL", username="u", password=SecretStr("p"))
    auth = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")
    msg = access_problem(k, auth)
    assert msg is not None and "refused the credentials of user 'u'" in msg
    tls = KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed")
    msg = access_problem(k, tls)
    assert msg is not None and "ssl_cafile" in msg
    assert access_problem(k, KafkaError(KafkaError._TRANSPORT, "down")) is None
    with pytest.raises(KafkaAccessDenied, match="refused"):
        raise_on_access_error(k)(auth)
    raise_on_access_error(k)(KafkaError(KafkaError._ALL_BROKERS_DOWN, "down"))  # no raise


def test_faust_app_gets_the_credentials(tmp_path: Path) -> None:
    from monitoring.runtime.app import create_app

    f = tmp_path / "pw"
    f.write_text(PASSWORD)
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", username="u", password_file=str(f))
    s = Settings.load(None)
    s = s.model_copy(update={"kafka": s.kafka.model_copy(update={"security": security})})
    creds = create_app(s).conf.broker_credentials
    assert isinstance(creds, SASLCredentials) and creds.password == PASSWORD


def test_config_show_redacts_the_kafka_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from monitoring.cli.config import app

    monkeypatch.chdir(tmp_path)  # no monitoring.yaml here
    monkeypatch.delenv("MONITORING_CONFIG", raising=False)
    monkeypatch.setenv("MONITORING_KAFKA__SECURITY__PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MONITORING_KAFKA__SECURITY__USERNAME", "u")
    monkeypatch.setenv("MONITORING_KAFKA__SECURITY__PASSWORD", PASSWORD)
    out = CliRunner().invoke(app, ["show"])
    assert out.exit_code == 0, out.output
    assert PASSWORD not in out.output
    assert "protocol: SASL_SSL" in out.output and "password: '***'" in out.output


# librdkafka's bootstrap setting, and the Settings address handed to a client builder
# (which would drop kafka.security): only runtime/kafka_client.py builds clients.
_RAW = re.compile(r"""["']bootstrap\.servers["']""")
_ADDRESS_ONLY = re.compile(
    r"\b(read_table|admin_client|list_topics|describe_topics|delete_topics|wait_for_broker"
    r"|broker_answers|BrokerOffsets|LogShipper|client_config|ensure_topics)\(\s*"
    r"[\w.]*\.bootstrap_servers\b"
)


def test_no_client_built_outside_kafka_client() -> None:
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "kafka_client.py" and path.parent.name == "runtime":
            continue
        text = path.read_text()
        for pattern in (_RAW, _ADDRESS_ONLY):
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                offenders.append(f"{path.relative_to(ROOT.parent)}:{line}: {m.group(0)}")
    assert not offenders, (
        "kafka.security would be dropped: build librdkafka configs with "
        "runtime.kafka_client.client_config(settings.kafka, **extra) and pass settings.kafka "
        "(not its .bootstrap_servers) to admin/changelog/log-shipper helpers:\n"
        + "\n".join(offenders)
    )


def test_authorization_errors_name_the_user_operation_and_resource() -> None:
    k = _kafka(protocol="SASL_SSL", username="monitoring-store", password=SecretStr("p"))
    err = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed")
    msg = authorization_problem(k, err, "Write", "p.metrics.aggregates")
    assert msg is not None
    assert "denied user 'monitoring-store' Write on topic 'p.metrics.aggregates'" in msg
    assert "User:monitoring-store lacks an ACL" in msg
    txn = KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    assert "transactional id" in (access_problem(k, txn) or "")
    plain = authorization_problem(KafkaSettings(), err)
    assert plain is not None and "user 'ANONYMOUS'" in plain
    assert authorization_problem(k, KafkaError(KafkaError._TRANSPORT)) is None
    with pytest.raises(KafkaAccessDenied, match="denied user"):
        raise_on_access_error(k)(err)
