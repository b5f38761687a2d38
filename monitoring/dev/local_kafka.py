"""A real single-node Apache Kafka (KRaft) broker on loopback, without Docker.

The broker and its dependencies come from Maven Central (``infra/kafka/pom.xml``) into
``.local/kafka/libs``; each broker has its own data directory ``.local/kafka/<port>``
holding the rendered ``server.properties``, the KRaft log dirs, its logs and a pid file.
The process is detached (its own session), so it outlives the command that started it:

Example::

    kafka = LocalKafka(port=9092)
    kafka.fetch(); kafka.start()
    kafka.stop()

``LocalKafka(port=9096, secure=True)`` is a separate broker whose client listener is
SASL_SSL: a CA and a broker certificate (``monitoring.dev.kafka_tls``), SCRAM-SHA-512
and -256 users ``admin`` (the broker's own, inter-broker), ``monitoring`` (a developer's
client, allowed everything) and one per process kind (``monitoring-worker``...,
``runtime.acls``), passwords generated into ``<data_dir>/security/<user>.password``
(mode 0600); ``client_settings(user)`` are the KafkaSettings a client needs. It runs
KRaft's ``StandardAuthorizer`` (nothing allowed without an ACL); ``apply_acls`` adds a
deployment's ACLs. The controller listener stays PLAINTEXT on loopback.

``start`` and ``stop`` are idempotent and serialised by a file lock, so several
processes (test sessions, CLI calls) can ask for the same broker at once.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template

import structlog

from monitoring.config import KafkaSecurity, KafkaSettings
from monitoring.runtime.acls import ROLES, Acl, to_binding, username
from monitoring.runtime.kafka_client import KafkaTarget, bootstrap_of

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra" / "kafka"
DEFAULT_ROOT = REPO_ROOT / ".local" / "kafka"
LOOPBACK = "127.0.0.1"
BROKER_USER = "admin"  # the secure broker's own SCRAM user (inter-broker; a super user)
CLIENT_USER = "monitoring"  # a developer's SCRAM user: every operation on everything
ROLE_USERS = tuple(username(r) for r in ROLES)  # one per process kind (runtime.acls)
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
# the broker's own user, and the PLAINTEXT controller listener's principal (loopback
# only; the broker registers with and heartbeats to the controller through it)
SUPER_USERS = (f"User:{BROKER_USER}", "User:ANONYMOUS")
# ACLs of CLIENT_USER: a literal "*" is every resource of the type
DEVELOPER_ACLS = (
    *(
        Acl(f"User:{CLIENT_USER}", resource, "*", "literal", "All")
        for resource in ("topic", "group", "transactional-id")
    ),
    Acl(f"User:{CLIENT_USER}", "cluster", "kafka-cluster", "literal", "All"),
)
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
SECURE_PORT = 9096  # `monitoring broker up --secure` (its controller on 9097)

_log = structlog.get_logger(component="local_kafka")  # lazy: honours configure_logging()


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerStatus:
    """What ``LocalKafka.status()`` reports."""

    running: bool
    pid: int | None
    port: int
    bootstrap: str
    data_dir: Path
    answering: bool
    managed: bool  # started by LocalKafka (pid file) rather than some other process


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID, base64url without padding (22 chars). Like
    Kafka's ``Uuid.randomUuid`` it never starts with ``-``, which command-line tools
    would read as an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def broker_answers(kafka: KafkaTarget, timeout: float = 3.0) -> bool:
    """True if a Kafka broker at ``kafka`` returns cluster metadata with a broker."""
    host, _, port = bootstrap_of(kafka).split(",")[0].rpartition(":")
    if not port_open(host or LOOPBACK, int(port), timeout=min(timeout, 1.0)):
        return False
    from monitoring.runtime.admin import admin_client

    try:
        md = admin_client(kafka).list_topics(timeout=timeout)
    except Exception:
        return False
    return bool(md.brokers)


def _pid_alive(pid: int) -> bool:
    """Is ``pid`` a live (non-zombie) process? Reaps it if it is our exited child."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _is_kafka(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no procfs: trust the pid file
    return b"kafka.Kafka" in cmdline


class LocalKafka:
    """One single-node KRaft broker (broker and controller in one JVM) on 127.0.0.1."""

    def __init__(
        self,
        root: Path | str = DEFAULT_ROOT,
        port: int = 9092,
        controller_port: int | None = None,
        heap: str = "512m",
        data_dir: Path | str | None = None,
        pom: Path | str = INFRA_DIR / "pom.xml",
        config_template: Path | str = INFRA_DIR / "server.properties",
        log4j_config: Path | str = INFRA_DIR / "log4j2.properties",
        node_id: int = 1,
        cds: bool = True,
        secure: bool | None = None,
    ) -> None:
        self.root = Path(root)
        self.port = port
        self.controller_port = controller_port if controller_port is not None else port + 1
        self.heap = heap
        self.data_dir = Path(data_dir) if data_dir is not None else self.root / str(port)
        self.pom = Path(pom)
        self.config_template = Path(config_template)
        self.log4j_config = Path(log4j_config)
        self.node_id = node_id
        self.cds = cds
        # None: secure if this data directory was made by a secure broker
        self.secure = secure if secure is not None else self.security_dir.is_dir()
        self._proc: subprocess.Popen[bytes] | None = None
        self.last_start_seconds: float | None = None  # how long the last start() took

    # ------------------------------------------------------------------ paths
    @property
    def libs_dir(self) -> Path:
        return self.root / "libs"

    @property
    def stamp_file(self) -> Path:
        return self.root / "libs.stamp"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.data_dir / "kafka.out"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def cds_archive(self) -> Path:
        """Class-data-sharing archive of Kafka's classes (for these libs): faster JVM start."""
        return self.root / "cds" / f"kafka-{self._pom_hash()[:12]}.jsa"

    @property
    def _cds_dump(self) -> Path:
        return self.cds_archive.with_suffix(f".{self.port}.dump")

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    # ------------------------------------------------------------------ security
    @property
    def security_dir(self) -> Path:
        return self.data_dir / "security"

    def password_file(self, user: str) -> Path:
        return self.security_dir / f"{user}.password"

    def _password(self, user: str) -> str:
        """The user's SCRAM password, generated once (mode 0600)."""
        path = self.password_file(user)
        if not path.exists():
            self.security_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24) + "\n")
        return path.read_text().splitlines()[0]

    def client_settings(self, user: str = CLIENT_USER) -> KafkaSettings:
        """KafkaSettings of a client of this broker (SASL_SSL as ``user`` when secure)."""
        if not self.secure:
            return KafkaSettings(bootstrap_servers=self.bootstrap)
        security = KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            username=user,
            password_file=str(self.password_file(user)),
            ssl_cafile=str(self.security_dir / "ca.pem"),
        )
        return KafkaSettings(bootstrap_servers=self.bootstrap, security=security)

    def write_client_config(self, user: str = CLIENT_USER) -> tuple[Path, Path]:
        """``security/client.env`` (MONITORING_* variables) and ``security/client.yaml``
        (a ``kafka:`` section): what a client of this broker needs. They name the
        password file, never the password."""
        if not self.secure:  # its security/ directory would make it look secure
            raise LocalKafkaError(f"the broker on port {self.port} is not a secure one")
        k = self.client_settings(user)
        sec = k.security
        fields = {
            "protocol": sec.protocol,
            "sasl_mechanism": sec.sasl_mechanism,
            "username": sec.username,
            "password_file": sec.password_file,
            "ssl_cafile": sec.ssl_cafile,
        }
        env = [f"MONITORING_KAFKA__BOOTSTRAP_SERVERS={k.bootstrap_servers}"] + [
            f"MONITORING_KAFKA__SECURITY__{key.upper()}={value}" for key, value in fields.items()
        ]
        yaml_lines = ["kafka:", f'  bootstrap_servers: "{k.bootstrap_servers}"', "  security:"]
        yaml_lines += [f'    {key}: "{value}"' for key, value in fields.items()]
        self.security_dir.mkdir(parents=True, exist_ok=True)
        stem = "client" if user == CLIENT_USER else user
        env_file, yaml_file = self.security_dir / f"{stem}.env", self.security_dir / f"{stem}.yaml"
        env_file.write_text("\n".join(env) + "\n")
        yaml_file.write_text("\n".join(yaml_lines) + "\n")
        return env_file, yaml_file

    def _secure_config(self, text: str) -> str:
        """The rendered config with its listeners replaced by SASL_SSL + SCRAM and TLS."""
        from monitoring.dev.kafka_tls import issue

        tls = issue(self.security_dir)
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{self._password(BROKER_USER)}";'
        )
        secure = {
            "listeners": f"SASL_SSL://{LOOPBACK}:{self.port},"
            f"CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"SASL_SSL://{LOOPBACK}:{self.port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            **{
                f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config": jaas
                for m in SCRAM_MECHANISMS
            },
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls.broker_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca_cert),
            "ssl.client.auth": "none",
            "ssl.endpoint.identification.algorithm": "https",
            "authorizer.class.name": AUTHORIZER,
            "super.users": ";".join(SUPER_USERS),
            "allow.everyone.if.no.acl.found": "false",
        }
        kept = [line for line in text.splitlines() if line.split("=", 1)[0].strip() not in secure]
        return (
            "\n".join(
                [*kept, "", "# --- secure: SASL_SSL (SCRAM) client listener, PEM TLS ---"]
                + [f"{k}={v}" for k, v in secure.items()]
            )
            + "\n"
        )

    def _scram_args(self) -> list[str]:
        if not self.secure:
            return []
        if self.is_formatted() and not self.password_file(CLIENT_USER).exists():
            raise LocalKafkaError(
                f"{self.log_dirs} was formatted without SCRAM users: use another port "
                "(its own data directory) for the secure broker, or reset this one"
            )
        return [
            f"--add-scram={m}=[name={user},password={self._password(user)}]"
            for user in (BROKER_USER, CLIENT_USER, *ROLE_USERS)
            for m in SCRAM_MECHANISMS
        ]

    def add_users(self, users: tuple[str, ...], timeout: float = 30.0) -> None:
        """Create (or set again) SCRAM users with their generated passwords, as the
        broker's administrator: users a storage formatted before them lacks, or extra
        ones (tests)."""
        from confluent_kafka.admin import (
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialAlteration,
            UserScramCredentialUpsertion,
        )

        from monitoring.runtime.admin import admin_client

        admin = admin_client(self.client_settings(BROKER_USER))
        for m in SCRAM_MECHANISMS:  # one alteration per user and request
            upserts: list[UserScramCredentialAlteration] = [
                UserScramCredentialUpsertion(
                    user,
                    ScramCredentialInfo(getattr(ScramMechanism, m.replace("-", "_")), 4096),
                    self._password(user).encode(),
                )
                for user in users
            ]
            for user, fut in admin.alter_user_scram_credentials(upserts).items():
                try:
                    fut.result(timeout)
                except Exception as e:
                    raise LocalKafkaError(f"creating SCRAM user {user!r}: {e}") from e

    def apply_acls(self, acls: list[Acl] | tuple[Acl, ...], timeout: float = 30.0) -> None:
        """Create ``acls`` as the broker's administrator (idempotent) and wait until the
        broker's authorizer holds them all."""
        from confluent_kafka.admin import (
            AclBindingFilter,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        from monitoring.runtime.admin import admin_client

        if not self.secure:
            raise LocalKafkaError(f"the broker on port {self.port} runs no authorizer")
        admin = admin_client(self.client_settings(BROKER_USER))
        wanted = {to_binding(a) for a in acls}
        for binding, fut in admin.create_acls(list(wanted), request_timeout=timeout).items():
            try:
                fut.result(timeout)
            except Exception as e:
                raise LocalKafkaError(f"creating ACL {binding}: {e}") from e
        every = AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, None, None,  # type: ignore[arg-type]
            AclOperation.ANY, AclPermissionType.ANY,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            have = set(admin.describe_acls(every, request_timeout=timeout).result(timeout))
            if wanted <= have:
                return
            if time.monotonic() > deadline:
                raise LocalKafkaError(f"{len(wanted - have)} ACLs not in effect after {timeout}s")
            time.sleep(0.1)

    # ------------------------------------------------------------------ fetch
    def _pom_hash(self) -> str:
        return hashlib.sha256(self.pom.read_bytes()).hexdigest()

    def is_fetched(self) -> bool:
        """True if the libs exist and were fetched from the current pom."""
        if not self.libs_dir.is_dir() or not any(self.libs_dir.glob("kafka_2.13-*.jar")):
            return False
        try:
            return self.stamp_file.read_text().strip() == self._pom_hash()
        except OSError:
            return False

    def fetch(self, force: bool = False) -> Path:
        """Copy Kafka and its runtime dependencies from Maven into ``libs`` (idempotent).

        Refetches when the pom changed since the last fetch (a stamp records its hash).
        The new jars are fetched beside the old ones and swapped in at the end, so a
        running broker keeps working.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock("fetch"):
            if not force and self.is_fetched():
                return self.libs_dir
            mvn = shutil.which("mvn")
            if mvn is None:
                raise LocalKafkaError("Maven (mvn) is not on PATH: it fetches Kafka")
            tmp = self.root / "libs.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            cmd = [
                mvn, "-q", "-B", "-f", str(self.pom), "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
            ]  # fmt: skip
            _log.info("fetching kafka from maven", pom=str(self.pom), into=str(self.libs_dir))
            t0 = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
                out = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
                raise LocalKafkaError(
                    f"mvn failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(out)
                )
            old = self.root / "libs.old"
            shutil.rmtree(old, ignore_errors=True)
            if self.libs_dir.exists():
                self.libs_dir.rename(old)
            tmp.rename(self.libs_dir)
            shutil.rmtree(old, ignore_errors=True)
            self.stamp_file.write_text(self._pom_hash() + "\n")
            jars = len(list(self.libs_dir.glob("*.jar")))
            _log.info("fetched kafka", jars=jars, seconds=round(time.monotonic() - t0, 1))
            return self.libs_dir

    # ------------------------------------------------------------------ state
    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        lock_dir = self.root if name == "fetch" else self.data_dir
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f".{name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and _is_kafka(pid):
            return pid
        return None

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _pid_alive(pid)

    def status(self) -> BrokerStatus:
        """Running (our pid file, or any broker answering on the port), pid, port."""
        pid = self._read_pid()
        answering = broker_answers(self.client_settings(), timeout=2.0)
        return BrokerStatus(
            running=pid is not None or answering,
            pid=pid,
            port=self.port,
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
            answering=answering,
            managed=pid is not None,
        )

    # ------------------------------------------------------------------ start
    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").exists():
            return str(Path(java_home) / "bin" / "java")
        java = shutil.which("java")
        if java is None:
            raise LocalKafkaError("java is not on PATH (Kafka needs Java 17+)")
        return java

    def _classpath(self) -> str:
        return str(self.libs_dir / "*")

    def _jvm_flags(self) -> list[str]:
        return [
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:MaxDirectMemorySize=256m",
            "-XX:MaxMetaspaceSize=256m",
            "-XX:ReservedCodeCacheSize=96m",
            "-XX:ParallelGCThreads=2",
            "-XX:ConcGCThreads=1",
            "-XX:CICompilerCount=2",
            "-XX:+ExitOnOutOfMemoryError",
            "-Xss512k",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            *self._cds_flags(),
        ]

    def _cds_flags(self) -> list[str]:
        # The first broker to run dumps the classes it loaded when it exits
        # (AppCDS, JDK 13+); later starts map that archive: about 25% faster.
        if not self.cds:
            return []
        if self.cds_archive.exists():
            return [f"-XX:SharedArchiveFile={self.cds_archive}"]
        self.cds_archive.parent.mkdir(parents=True, exist_ok=True)
        return [f"-XX:ArchiveClassesAtExit={self._cds_dump}"]

    def _finish_cds(self, clean_exit: bool) -> None:
        dump = self._cds_dump
        if not dump.exists():
            return
        if clean_exit and dump.stat().st_size > 0 and not self.cds_archive.exists():
            os.replace(dump, self.cds_archive)
            _log.info("saved class-data-sharing archive", path=str(self.cds_archive))
        else:
            dump.unlink(missing_ok=True)

    def render_config(self) -> Path:
        """Write ``server.properties`` for this port into the data directory."""
        text = Template(self.config_template.read_text()).substitute(
            port=self.port,
            controller_port=self.controller_port,
            log_dir=str(self.log_dirs),
            node_id=self.node_id,
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.secure:
            text = self._secure_config(text)
        # a secure broker's file holds its own SCRAM password
        fd = os.open(self.properties_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return self.properties_file

    def is_formatted(self) -> bool:
        """True if the KRaft storage (meta.properties) was formatted."""
        return (self.log_dirs / "meta.properties").exists()

    def format_storage(self, cluster_id: str | None = None) -> str:
        """Format the KRaft log dir with the storage tool; return the cluster id."""
        cluster_id = cluster_id or new_cluster_id()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self._java(), "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
            f"-Dkafka.logs.dir={self.logs_dir}", f"-Dlog4j2.configurationFile={self.log4j_config}",
            "-cp", self._classpath(), "kafka.tools.StorageTool", "format",
            f"--cluster-id={cluster_id}", "-c", str(self.properties_file), "--ignore-formatted",
        ]  # fmt: skip
        scram = self._scram_args()
        # the SCRAM passwords in an @argument file (the tool's argparse4j reads one argument
        # a line; 0600, removed after), not in the command line that every local user can
        # read in /proc/<pid>/cmdline
        args_file = self.security_dir / "storage-format.args"
        if scram:
            self.security_dir.mkdir(parents=True, exist_ok=True)
            args_file.unlink(missing_ok=True)
            fd = os.open(args_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write("".join(a + "\n" for a in scram))  # one argument a line
            cmd.append(f"@{args_file}")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        finally:
            args_file.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise LocalKafkaError(
                f"kafka storage format failed (exit {proc.returncode}):\n"
                + (proc.stdout + proc.stderr).strip()
            )
        _log.info("formatted kafka storage", cluster_id=cluster_id, dir=str(self.log_dirs))
        return cluster_id

    def start(self, timeout: float = 90.0) -> BrokerStatus:
        """Start the broker if it is not running, and wait until it answers metadata.

        Idempotent: a broker already running (ours, or any answering on the port)
        returns at once. Raises LocalKafkaError with the log tail if it fails.
        """
        if not self.is_fetched():
            self.fetch()
        with self._lock("broker"):
            pid = self._read_pid()
            if pid is not None:
                self._wait_ready(pid, timeout)
                return self.status()
            if port_open(LOOPBACK, self.port):
                if broker_answers(self.client_settings()):
                    _log.info("a broker not managed here already answers", port=self.port)
                    return self.status()
                raise LocalKafkaError(f"port {self.port} is taken by something that is not Kafka")
            if port_open(LOOPBACK, self.controller_port):
                raise LocalKafkaError(f"controller port {self.controller_port} is already taken")
            t0 = time.monotonic()
            self.render_config()
            if not self.is_formatted():
                self.format_storage()
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            cmd = [
                self._java(),
                *self._jvm_flags(),
                "-cp",
                self._classpath(),
                "kafka.Kafka",
                str(self.properties_file),
            ]
            with open(self.stdout_log, "ab") as out:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.data_dir,
                )
            self.pid_file.write_text(f"{self._proc.pid}\n")
            _log.info("starting kafka", pid=self._proc.pid, port=self.port, heap=self.heap)
            self._wait_ready(self._proc.pid, timeout)
            elapsed = time.monotonic() - t0
            _log.info("kafka ready", port=self.port, pid=self._proc.pid, seconds=round(elapsed, 2))
            self.last_start_seconds = elapsed
            self._warn_if_logging_disabled()
            if self.secure:
                self.add_users(ROLE_USERS)  # a storage formatted before them lacks them
                self.apply_acls(DEVELOPER_ACLS)
            return self.status()

    def _wait_ready(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self._alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise LocalKafkaError(
                    f"kafka (pid {pid}) exited during startup on port {self.port}.\n"
                    + self.log_tail(40)
                )
            if broker_answers(self.client_settings(), timeout=2.0):
                return
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"kafka (pid {pid}) did not answer on {self.bootstrap} within "
                    f"{timeout:.0f}s.\n" + self.log_tail(40)
                )
            time.sleep(0.2)

    def _warn_if_logging_disabled(self) -> None:
        try:
            head = self.stdout_log.read_text(errors="replace")[-20000:]
        except OSError:
            return
        if "NOP" in head and "StaticLoggerBinder" in head:
            _log.warning(
                "kafka logging is disabled: slf4j-api 1.x found with log4j-slf4j2-impl; "
                "add org.slf4j:slf4j-api 2.0.x to infra/kafka/pom.xml",
                libs=str(self.libs_dir),
            )

    # ------------------------------------------------------------------ stop
    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM the broker (controlled shutdown), SIGKILL after ``timeout``.

        Idempotent; returns True if a broker was running and has stopped. Only a
        broker started by LocalKafka (pid file) is stopped.
        """
        with self._lock("broker"):
            pid = self._read_pid()
            if pid is None:
                self.pid_file.unlink(missing_ok=True)
                return False
            _log.info("stopping kafka", pid=pid, port=self.port)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            clean_exit = not self._alive(pid)
            if not clean_exit:
                _log.warning("kafka did not stop in time, killing", pid=pid, timeout=timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while self._alive(pid):
                    time.sleep(0.05)
            self.pid_file.unlink(missing_ok=True)
            self._proc = None
            self._finish_cds(clean_exit)
            _log.info("kafka stopped", port=self.port)
            return True

    def destroy(self) -> None:
        """Stop the broker and delete its data directory (topics, offsets, logs)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        _log.info("kafka data deleted", dir=str(self.data_dir))

    reset = destroy

    # ------------------------------------------------------------------ logs
    def log_tail(self, lines: int = 50) -> str:
        """The last ``lines`` of the broker's server.log and of its stdout/stderr."""
        parts = []
        for path in (self.server_log, self.stdout_log):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(parts) if parts else f"(no logs under {self.data_dir})"
