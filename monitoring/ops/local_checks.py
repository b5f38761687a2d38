"""Doctor checks on this host: configuration, store migrations and the chDB directory's
holder, free disk, rule files, notifier receivers reachable. Each is bounded."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterable
from glob import glob
from pathlib import Path
from urllib.parse import urlsplit

from monitoring.config import ConfigError, Settings
from monitoring.ops.checks import CheckResult, Status

GIB = 1 << 30
DISK_FAIL = (0.05, 1 * GIB)  # free share, free bytes: below either fails
DISK_WARN = (0.15, 5 * GIB)
MAX_ENDPOINTS = 64
MAX_PARALLEL = 16
# the notifier config the project ships: its receivers are placeholders (127.0.0.1:9095)
SHIPPED_NOTIFIER = (
    Path(__file__).resolve().parents[2] / "infra" / "alertmanager" / "monitoring-alertmanager.yml"
)
# names reserved for examples and documentation (RFC 2606, RFC 6761): never a receiver
_RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
_RESERVED_TLDS = (".example", ".invalid", ".test")


def check_config(config: str | None) -> tuple[CheckResult, Settings | None]:
    """The settings load (file and MONITORING_* environment)."""
    where = config or os.environ.get("MONITORING_CONFIG") or "monitoring.yaml (if present)"
    try:
        settings = Settings.load(config) if config else Settings.load()
    except ConfigError as e:
        return CheckResult(
            "config",
            Status.FAIL,
            str(e)[:500],
            f"fix the key named in {where} or its MONITORING_* override",
        ), None
    return CheckResult("config", Status.OK, f"settings load from {where}"), settings


# -- the chDB directory and the store --------------------------------------------------


def lock_holder(path: Path, locks: str | None = None) -> int | None:
    """The pid holding a flock on ``path`` according to ``/proc/locks`` (None: nobody,
    or not visible from here).

    >>> lock_holder(Path("/"), "1: FLOCK  ADVISORY  WRITE 4242 fd:01:2 0 EOF\\n")
    4242
    """
    try:
        st = path.stat()
        text = locks if locks is not None else Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[1] == "->":
            continue  # a waiter, not the holder
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        dev_ino = parts[5].split(":")
        if len(dev_ino) == 3 and dev_ino[2].isdigit() and int(dev_ino[2]) == st.st_ino:
            return int(parts[4]) if parts[4].isdigit() else None
    return None


def describe_pid(pid: int) -> str:
    """``pid N (command line)``, the command cut to 80 characters."""
    try:
        import psutil

        cmd = " ".join(psutil.Process(pid).cmdline())[:80]
    except Exception:
        cmd = ""
    return f"pid {pid}" + (f" ({cmd})" if cmd else "")


def check_store(settings: Settings, timeout_s: float) -> list[CheckResult]:
    """Migrations applied match infra/clickhouse/migrations, asked of the running store
    through its query endpoint; without a store, read from the DSN directly (a chDB
    directory only when nobody holds it: the lock is never taken from a store)."""
    from monitoring.query.client import StoreClient, store_answers, store_url
    from monitoring.sinks.clickhouse import migrations
    from monitoring.sinks.clickhouse.connection import chdb_locked, chdb_path
    from monitoring.sinks.clickhouse.store import redact

    t0 = time.monotonic()
    wanted = {m.version: m.checksum for m in migrations.load()}
    dsn = settings.storage.dsn
    path = chdb_path(dsn)
    out: list[CheckResult] = []
    url = store_url(settings)
    applied: dict[int, str] | None = None
    source = ""
    holder: int | None = None
    if path is not None:
        status_file = path / "status"
        if not (path / "metadata").exists():  # (ClickHouse removes `status` at exit)
            out.append(
                CheckResult(
                    "chdb",
                    Status.WARN,
                    f"{path}: no store data yet",
                    "`monitoring store run` creates it",
                    time.monotonic() - t0,
                )
            )
        elif chdb_locked(path):
            holder = lock_holder(status_file)
            who = describe_pid(holder) if holder else "another process"
            out.append(CheckResult("chdb", Status.OK, f"{path} held by {who}"))
        else:
            out.append(CheckResult("chdb", Status.OK, f"{path} free (no store runs on it)"))
    try:
        if store_answers(url, timeout_s):
            source = f"the store at {url}"
            token = settings.api.token.get_secret_value()
            with StoreClient(url, token, timeout_s) as client:
                rows = client.sql("SELECT version, checksum FROM schema_migrations").rows
            applied = {int(v): str(c) for v, c in rows}
        elif path is None:
            from monitoring.sinks.clickhouse.connection import connect_read_only

            source = redact(dsn)
            applied = _read_applied(connect_read_only(dsn))
        elif (path / "metadata").exists() and holder is None and not chdb_locked(path):
            from monitoring.sinks.clickhouse.connection import connect

            source = f"{path} (opened here: no store runs)"
            applied = _read_applied(connect(dsn))
    except Exception as e:  # StoreError, clickhouse-connect's, chDB's
        out.append(
            CheckResult(
                "migrations",
                Status.FAIL,
                f"{source or url}: {redact(str(e))[:300]}",
                "start the store (`monitoring store run`), or check storage.dsn",
                time.monotonic() - t0,
            )
        )
        return out
    elapsed = time.monotonic() - t0
    if applied is None:
        why = "no store answers at " + url
        if holder:
            why += f" while {describe_pid(holder)} holds {path}"
        hint = (
            "is that process a store with another storage.query_port, or stuck? "
            "`monitoring store run` serves the endpoint"
        )
        status = Status.FAIL if holder else Status.WARN
        out.append(CheckResult("migrations", status, why, hint if holder else "", elapsed))
        return out
    out.append(migration_result(wanted, applied, source, elapsed))
    return out


def _read_applied(client: object) -> dict[int, str]:
    rows = client.query(  # type: ignore[attr-defined]
        "SELECT version, checksum FROM schema_migrations"
    ).result_rows
    return {int(v): str(c) for v, c in rows}


def migration_result(
    wanted: dict[int, str], applied: dict[int, str], source: str, elapsed_s: float = 0.0
) -> CheckResult:
    """Compare the migration files' checksums with those recorded in the store.

    >>> migration_result({1: "a", 2: "b"}, {1: "a"}, "s").detail
    's: 1 of 2 migrations applied, pending: 2'
    >>> migration_result({1: "a"}, {1: "x"}, "s").status.value
    'FAIL'
    """
    pending = sorted(set(wanted) - set(applied))
    changed = sorted(v for v in wanted if v in applied and applied[v] != wanted[v])
    unknown = sorted(set(applied) - set(wanted))
    n = f"{len(set(wanted) & set(applied))} of {len(wanted)} migrations applied"
    if changed:
        return CheckResult(
            "migrations",
            Status.FAIL,
            f"{source}: {n}, changed since applied: {changed}",
            "a released migration file was edited: restore it and add a new one",
            elapsed_s,
        )
    if pending:
        return CheckResult(
            "migrations",
            Status.FAIL,
            f"{source}: {n}, pending: " + ", ".join(map(str, pending)),
            "`monitoring store migrate` (the store also migrates when it starts)",
            elapsed_s,
        )
    if unknown:
        return CheckResult(
            "migrations",
            Status.WARN,
            f"{source}: {n}, unknown to this build: {unknown}",
            "this build is older than the store",
            elapsed_s,
        )
    return CheckResult("migrations", Status.OK, f"{source}: {n}", elapsed_s=elapsed_s)


# -- disk ------------------------------------------------------------------------------


def data_dirs(settings: Settings) -> list[tuple[str, Path]]:
    """(what, directory) of every place the deployment writes on this host."""
    from monitoring.sinks.clickhouse.connection import chdb_path

    out: list[tuple[str, Path]] = []
    path = chdb_path(settings.storage.dsn)
    if path is not None:
        out.append(("store", path))
    host = settings.kafka.bootstrap_servers.split(",")[0].rpartition(":")[0]
    if host in ("127.0.0.1", "localhost", "[::1]"):
        from monitoring.dev.local_kafka import DEFAULT_ROOT

        out.append(("broker", DEFAULT_ROOT))
    out.append(("reports", Path(settings.reporting.out_dir)))
    out.append(("dashboards", Path(settings.ui.dashboards_dir)))
    if settings.logging.file:
        out.append(("logs", Path(settings.logging.file).parent))
    return out


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_status(free: int, total: int) -> Status:
    """FAIL below 5 % or 1 GiB free, WARN below 15 % or 5 GiB.

    >>> [disk_status(f * GIB, 100 * GIB).value for f in (50, 10, 0.5)]
    ['OK', 'WARN', 'FAIL']
    """
    share = free / total if total else 0.0
    if share < DISK_FAIL[0] or free < DISK_FAIL[1]:
        return Status.FAIL
    if share < DISK_WARN[0] or free < DISK_WARN[1]:
        return Status.WARN
    return Status.OK


def check_disk(dirs: Iterable[tuple[str, Path]]) -> list[CheckResult]:
    """Free space of each filesystem holding a data directory (one line each)."""
    by_dev: dict[int, tuple[list[str], Path]] = {}
    for what, path in dirs:
        p = _existing(path)
        dev = p.stat().st_dev
        names, _ = by_dev.setdefault(dev, ([], p))
        names.append(what)
    out = []
    for names, p in by_dev.values():
        u = shutil.disk_usage(p)
        status = disk_status(u.free, u.total)
        detail = (
            f"{', '.join(names)} on {p}: {u.free / GIB:.1f} GiB free of {u.total / GIB:.1f} GiB "
            f"({100 * u.free / max(u.total, 1):.0f} %)"
        )
        hint = (
            "free space: shorter kafka.retention or storage.retention, `monitoring report` "
            "retention, old logs; see docs/operations.md (disk is full)"
        )
        out.append(CheckResult("disk", status, detail, hint))
    return out


# -- rules and receivers ----------------------------------------------------------------


def check_rules(settings: Settings) -> CheckResult:
    """Every file of ``alerting.rules`` loads (as ``monitoring rules check`` does)."""
    from monitoring.alerts.rules import load_rule_file

    patterns = settings.alerting.rules
    if not patterns:
        return CheckResult("rules", Status.OK, "no rule files configured (alerting.rules)")
    files: list[str] = []
    for pat in patterns:
        found = sorted(glob(pat))
        if not found:
            return CheckResult("rules", Status.FAIL, f"{pat}: no such file", "fix alerting.rules")
        files += found
    bad = []
    n = 0
    for f in files[:1000]:
        rs = load_rule_file(Path(f))
        n += len(rs.rules) + len(rs.recordings)
        if rs.errors:
            bad.append(f"{f}: {rs.errors[0]}"[:300])
    if bad:
        return CheckResult(
            "rules",
            Status.FAIL,
            f"{len(bad)} of {len(files)} files fail: " + bad[0],
            "`monitoring rules check FILE` lists every problem",
        )
    return CheckResult("rules", Status.OK, f"{n} rules in {len(files)} file(s) load")


def receiver_endpoints(settings: Settings) -> list[tuple[str, str, int]]:
    """(receiver, host, port) of every configured integration and the reports' mail
    relay; raises ValueError (naming the receiver) when the notifier config is bad."""
    import yaml

    from monitoring.alerts.manager_config import ManagerConfig
    from monitoring.alerts.receivers import parse_receivers

    out: list[tuple[str, str, int]] = []
    path = Path(settings.notifier.config)
    if path.exists():
        ManagerConfig.load(path)
        for name, r in parse_receivers(yaml.safe_load(path.read_text())).items():
            for e in r.email_configs:
                out.append((name, e.host, e.port))
            urls = [c.api_url.get_secret_value() for c in r.slack_configs]
            urls += [c.url for c in r.pagerduty_configs]
            urls += [c.url.get_secret_value() for c in r.webhook_configs]
            urls += [c.url.get_secret_value() for c in r.alertmanager_configs]
            for u in urls:
                parts = urlsplit(u)
                port = parts.port or (443 if parts.scheme == "https" else 80)
                out.append((name, parts.hostname or "", port))
    rep = settings.reporting
    if rep.schedule != "off" and rep.email.to:
        host, _, mail_port = rep.email.smarthost.rpartition(":")
        port = int(mail_port) if mail_port.isdigit() else 25
        out.append(("reports e-mail", host.strip("[]"), port))
    return out


def is_reserved(host_or_address: str) -> bool:
    """Whether a host name (or the domain of an e-mail address) is one reserved for
    examples: ``example.com``, ``*.example``, ``*.invalid``, ``*.test``...

    >>> is_reserved("ml-team@example.com"), is_reserved("hooks.example"), is_reserved("a.io")
    (True, True, False)
    """
    h = host_or_address.rpartition("@")[2].strip().strip("<>").rstrip(".").lower()
    if any(h == d or h.endswith("." + d) for d in _RESERVED_DOMAINS):
        return True
    return any(h == t[1:] or h.endswith(t) for t in _RESERVED_TLDS)


def placeholder_receivers(settings: Settings) -> set[str]:
    """Receivers that are examples, not real ones: every receiver of the config the
    project ships (``SHIPPED_NOTIFIER``, its endpoints on 127.0.0.1:9095 and :2525), an
    e-mail receiver whose recipients are all at reserved domains, an integration whose
    URL's host is one; the reports' mail when its recipients are."""
    import yaml

    from monitoring.alerts.receivers import parse_receivers

    out: set[str] = set()
    path = Path(settings.notifier.config)
    if path.exists():
        shipped = SHIPPED_NOTIFIER.exists() and path.resolve() == SHIPPED_NOTIFIER
        for name, r in parse_receivers(yaml.safe_load(path.read_text())).items():
            urls = [c.api_url.get_secret_value() for c in r.slack_configs]
            urls += [c.url for c in r.pagerduty_configs]
            urls += [c.url.get_secret_value() for c in r.webhook_configs]
            urls += [c.url.get_secret_value() for c in r.alertmanager_configs]
            hosts = [urlsplit(u).hostname or "" for u in urls]
            hosts += [e.host for e in r.email_configs]
            mail_to = [a for e in r.email_configs for a in e.to.split(",") if a.strip()]
            example_mail = bool(r.email_configs) and all(is_reserved(a) for a in mail_to)
            if shipped or example_mail or (hosts and all(is_reserved(h) for h in hosts)):
                out.add(name)
    rep = settings.reporting
    recipients = [a for a in rep.email.to.split(",") if a.strip()]
    if recipients and all(is_reserved(a) for a in recipients):
        out.add("reports e-mail")
    return out


def _connect(host: str, port: int, timeout_s: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return ""
    except OSError as e:
        return e.strerror or str(e)


def _connect_all(targets: list[tuple[str, int]], timeout_s: float) -> dict[tuple[str, int], str]:
    """``_connect`` to every target, ``MAX_PARALLEL`` at once, in daemon threads: the
    whole within about twice ``timeout_s`` even when a name's resolution hangs (the
    resolver ignores socket timeouts); what has not answered by then is "timed out"."""
    results: dict[tuple[str, int], str] = {}
    slots = threading.Semaphore(MAX_PARALLEL)
    lock = threading.Lock()

    def one(target: tuple[str, int]) -> None:
        try:
            error = _connect(target[0], target[1], timeout_s)
        finally:
            slots.release()
        with lock:
            results[target] = error

    deadline = time.monotonic() + 2 * timeout_s + 1
    threads = []
    for t in targets:
        if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            break
        th = threading.Thread(target=one, args=(t,), name="doctor-connect", daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    with lock:
        return {t: results.get(t, f"timed out after {2 * timeout_s + 1:g} s") for t in targets}


def check_receivers(settings: Settings, timeout_s: float) -> CheckResult:
    """A TCP connection to each receiver's host and port (bounded, in parallel); no
    notification is ever sent."""
    t0 = time.monotonic()
    try:
        endpoints = receiver_endpoints(settings)
    except (ConfigError, ValueError, OSError) as e:
        return CheckResult(
            "receivers",
            Status.FAIL,
            str(e)[:300],
            f"fix {settings.notifier.config}",
            time.monotonic() - t0,
        )
    targets = sorted({(h, p) for _, h, p in endpoints})[:MAX_ENDPOINTS]
    if not targets:
        return CheckResult("receivers", Status.OK, "no receivers configured")
    try:
        examples = placeholder_receivers(settings)
    except (ConfigError, ValueError, OSError):
        examples = set()
    errors = _connect_all(targets, timeout_s)
    down = [(h, p, errors[(h, p)]) for h, p in targets if errors[(h, p)]]
    elapsed = time.monotonic() - t0
    if not down:
        return CheckResult(
            "receivers",
            Status.OK,
            f"{len(targets)} endpoint(s) accept connections",
            elapsed_s=elapsed,
        )
    names = sorted({n for n, h, p in endpoints if errors.get((h, p))})
    first = ", ".join(f"{h}:{p} ({e})" for h, p, e in down[:3])
    if names and all(n in examples for n in names):
        return CheckResult(
            "receivers",
            Status.WARN,
            f"{len(down)} of {len(targets)} endpoint(s) unreachable, all of placeholder "
            f"receivers (the shipped example, or example.com addresses): {first}; receivers "
            + ", ".join(names[:5]),
            f"point notifier.config ({settings.notifier.config}) at your own receivers",
            elapsed,
        )
    real = [n for n in names if n not in examples]
    names = real + [n for n in names if n in examples]
    return CheckResult(
        "receivers",
        Status.FAIL,
        f"{len(down)} of {len(targets)} endpoint(s) unreachable: {first}; receivers "
        + ", ".join(names[:5]),
        "check the receiver's URL or smarthost in the notifier config, and the network "
        "(proxy, firewall) from this host",
        elapsed,
    )
