"""Every Kafka client's connection settings: the one place ``kafka.security`` is read.

``client_security(kafka)`` turns ``kafka.bootstrap_servers`` and ``kafka.security``
into both forms the project's clients take: a librdkafka dict (confluent-kafka's
producers, consumers and admin clients: ``client_config``) and Faust's credentials
(aiokafka: ``faust_credentials``). No module builds a client from a raw
``bootstrap.servers`` (``tests/unit/test_kafka_client.py`` checks the tree).

A bare ``"host:port"`` string instead of KafkaSettings means a plaintext broker at
that address (benchmarks and tests on the local broker); every process configured by
Settings passes its KafkaSettings.

>>> from monitoring.config import KafkaSettings
>>> client_config(KafkaSettings(), **{"group.id": "g"})
{'bootstrap.servers': '127.0.0.1:9092', 'security.protocol': 'PLAINTEXT', 'group.id': 'g'}
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from monitoring.config import KafkaSecurity, KafkaSettings

KafkaTarget = KafkaSettings | str
MAX_PASSWORD_FILE_BYTES = 4096


class KafkaAccessDenied(RuntimeError):
    """The broker refused the client's credentials, or the TLS handshake failed:
    retrying will not help; the message says what to check."""


class KafkaSecurityError(ValueError):
    """``kafka.security`` names a file that cannot be read or used; the message says which."""


def _settings(kafka: KafkaTarget) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka


def read_password(sec: KafkaSecurity) -> str:
    """``password``, or the first line of ``password_file`` (at most 4 KiB)."""
    if not sec.password_file:
        return sec.password.get_secret_value()
    path = Path(sec.password_file)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PASSWORD_FILE_BYTES + 1)
    except OSError as e:
        raise KafkaSecurityError(
            f"kafka.security.password_file {path}: cannot read ({e.strerror})"
        ) from None
    if len(raw) > MAX_PASSWORD_FILE_BYTES:
        raise KafkaSecurityError(
            f"kafka.security.password_file {path}: over {MAX_PASSWORD_FILE_BYTES} bytes"
        )
    try:
        lines = raw.decode().splitlines()
    except UnicodeDecodeError:
        raise KafkaSecurityError(f"kafka.security.password_file {path}: not UTF-8") from None
    if not lines or not lines[0]:
        raise KafkaSecurityError(f"kafka.security.password_file {path}: empty first line")
    return lines[0]


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context: trusts ``ssl_cafile`` (or the system's CAs), presents the
    client certificate when set, checks the host name unless turned off."""
    try:
        ctx = ssl.create_default_context(cafile=sec.ssl_cafile or None)
        if sec.ssl_certfile:
            ctx.load_cert_chain(
                sec.ssl_certfile,
                sec.ssl_keyfile,
                password=sec.ssl_key_password.get_secret_value() or None,
            )
    except (OSError, ssl.SSLError) as e:
        raise KafkaSecurityError(f"kafka.security TLS files: {e}") from None
    ctx.check_hostname = sec.check_hostname
    return ctx


@dataclass(frozen=True)
class ClientSecurity:
    """``kafka.security`` for both client libraries: ``librdkafka`` (a dict without
    ``bootstrap.servers``) and ``faust`` (Faust's credentials, None for PLAINTEXT)."""

    librdkafka: dict[str, Any] = field(repr=False)
    faust: CredentialsT | None = field(repr=False)


def client_security(kafka: KafkaTarget) -> ClientSecurity:
    """The one translation of ``kafka.security`` into client settings (reads the
    password file and the TLS files: raises KafkaSecurityError naming a bad one)."""
    sec = _settings(kafka).security
    conf: dict[str, Any] = {"security.protocol": sec.protocol}
    ctx = ssl_context(sec) if sec.tls else None
    if sec.tls:
        conf["ssl.endpoint.identification.algorithm"] = "https" if sec.check_hostname else "none"
        if sec.ssl_cafile:
            conf["ssl.ca.location"] = sec.ssl_cafile
        if sec.ssl_certfile:
            conf["ssl.certificate.location"] = sec.ssl_certfile
            conf["ssl.key.location"] = sec.ssl_keyfile
            if sec.ssl_key_password.get_secret_value():
                conf["ssl.key.password"] = sec.ssl_key_password.get_secret_value()
    faust: CredentialsT | None = None
    if sec.sasl:
        password = read_password(sec)
        conf.update(
            {
                "sasl.mechanisms": sec.sasl_mechanism,
                "sasl.username": sec.username,
                "sasl.password": password,
            }
        )
        faust = SASLCredentials(
            username=sec.username, password=password, ssl_context=ctx, mechanism=sec.sasl_mechanism
        )
    elif ctx is not None:
        faust = SSLCredentials(ctx)
    return ClientSecurity(librdkafka=conf, faust=faust)


def client_config(kafka: KafkaTarget, **extra: Any) -> dict[str, Any]:
    """librdkafka settings for a confluent-kafka Producer, Consumer or AdminClient:
    the bootstrap servers, ``kafka.security``, then ``extra``."""
    k = _settings(kafka)
    return {
        "bootstrap.servers": k.bootstrap_servers,
        **client_security(k).librdkafka,
        **extra,
    }


def faust_credentials(kafka: KafkaTarget) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for ``kafka.security`` (None: plaintext)."""
    return client_security(kafka).faust


def bootstrap_of(kafka: KafkaTarget) -> str:
    """The bootstrap servers of a target, for messages and logs."""
    return _settings(kafka).bootstrap_servers


# librdkafka's errors that retrying cannot fix: the broker refused who we are, or we
# refused who it is (both arrive through error_cb while a client keeps retrying)
_DENIED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
_TLS = {KafkaError._SSL}
# the broker's authorizer refused an operation: an ACL is missing (runtime.acls)
_UNAUTHORIZED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
}


def authorization_problem(
    kafka: KafkaTarget, err: KafkaError, operation: str = "", resource: str = ""
) -> str | None:
    """A clear reason when ``err`` means the broker's authorizer refused an operation
    (an ACL is missing), naming the user, the operation and the resource when known;
    else None."""
    kind = _UNAUTHORIZED.get(err.code())
    if kind is None:
        return None
    k = _settings(kafka)
    user = k.security.username if k.security.sasl else "ANONYMOUS"
    what = f"{kind} {resource!r}" if resource else kind
    return (
        f"Kafka at {k.bootstrap_servers} denied user {user!r} {operation or 'access'} on "
        f"{what} ({err.name()}: {err.str()}): the principal User:{user} lacks an ACL; "
        "`monitoring broker acls` prints those each process needs, or check "
        "kafka.security.username"
    )


def read_refusal(kafka: KafkaTarget, err: KafkaError, topic: str) -> str | None:
    """``authorization_problem`` for a consumer's error event on ``topic``: the topic is
    named when the refusal is the topic's (a group's refusal is not about it)."""
    named = topic if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED else ""
    return authorization_problem(kafka, err, "Read", named)


def access_problem(kafka: KafkaTarget, err: KafkaError) -> str | None:
    """A clear reason when ``err`` means the broker refused the credentials or the TLS
    handshake failed (wrong password, untrusted certificate), or its authorizer refused
    an operation (``authorization_problem``), else None."""
    k = _settings(kafka)
    sec = k.security
    reason = err.str()
    if err.code() in _DENIED:
        return (
            f"Kafka at {k.bootstrap_servers} refused the credentials of user "
            f"{sec.username!r} ({sec.sasl_mechanism}): {reason}; check "
            "kafka.security.username and password (or password_file)"
        )
    if err.code() in _TLS:
        ca = sec.ssl_cafile or "the system's CAs"
        return (
            f"TLS with Kafka at {k.bootstrap_servers} failed: {reason}; the broker's "
            f"certificate must be signed by kafka.security.ssl_cafile ({ca}) and name the "
            "host (or set check_hostname false)"
        )
    return authorization_problem(kafka, err)


def raise_on_access_error(kafka: KafkaTarget) -> Callable[[KafkaError], None]:
    """An ``error_cb`` that raises KafkaAccessDenied (from the client's ``poll``,
    ``consume`` or ``flush``) when the broker refuses the credentials or TLS fails; a
    process fails at start with the reason instead of retrying for ever."""

    def on_error(err: KafkaError) -> None:
        problem = access_problem(kafka, err)
        if problem is not None:
            raise KafkaAccessDenied(problem)

    return on_error


def report_access_errors(
    kafka: KafkaTarget, report: Callable[[str], None]
) -> Callable[[KafkaError], None]:
    """An ``error_cb`` that hands ``report`` the reason when the broker refuses the
    credentials or TLS fails, for clients that keep running (the SDK's producers:
    a library logs, it does not end its host process)."""

    def on_error(err: KafkaError) -> None:
        problem = access_problem(kafka, err)
        if problem is not None:
            report(problem)

    return on_error


class AccessRefusals:
    """The first refusal (wrong credentials, untrusted certificate) any of a process's
    clients reports, for a process that must stop on it rather than retry for ever
    (``monitoring receive``, ``scrape``, ``collect system``: their producers are the
    SDK's, which only log): ``error_cb()`` goes into each client's settings;
    ``on_refused(reason)`` runs once, on the client's thread, and ``reason`` keeps it.
    """

    def __init__(self, kafka: KafkaTarget, on_refused: Callable[[str], None]) -> None:
        self.kafka = kafka
        self.on_refused = on_refused
        self.reason: str | None = None
        self._lock = threading.Lock()

    def error_cb(self) -> Callable[[KafkaError], None]:
        """An ``error_cb`` for one more client."""
        return report_access_errors(self.kafka, self._report)

    def _report(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        self.on_refused(reason)
