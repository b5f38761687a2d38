"""Versioned DDL: ``infra/clickhouse/migrations/NNN_name.sql``, applied in order, once.

Each applied file is recorded in ``schema_migrations`` (version, name, checksum of the
template). Files are templates: ``$codec`` (from ``storage.compression``),
``$samples_ttl_seconds`` and ``$aggregates_ttl_seconds`` (from ``storage.retention``).
Statements use ``IF NOT EXISTS``, so a run interrupted half-way can simply be repeated.
Pending migrations run under :class:`~monitoring.sinks.clickhouse.migration_lock.
MigrationLock` (one store at a time); a table rebuilt with ``EXCHANGE TABLES`` keeps the
rows inserted during the rebuild (:mod:`monitoring.sinks.clickhouse.rebuild`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from clickhouse_connect.driver.client import Client

from monitoring.config import StorageSettings
from monitoring.log import get_logger
from monitoring.sinks.clickhouse.connection import with_receive_timeout
from monitoring.sinks.clickhouse.migration_lock import MigrationLock
from monitoring.sinks.clickhouse.rebuild import Rebuild

log = get_logger("migrations")
_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[a-z0-9_]+)\.sql$", re.ASCII)
# ZSTD(3) measured smaller than ZSTD(1) and ZSTD(6) on scraped samples (see footprint).
CODECS = {"zstd": "ZSTD(3)", "lz4": "LZ4", "none": ""}
_TTL_TABLES = {"samples": ("ts", "samples"), "aggregates": ("window_start", "aggregates")}
_TTL_TABLES["logs"] = ("timestamp", "logs")
_TTL_TABLES["anomalies"] = ("ts", "aggregates")  # kept as long as the anomaly_score series
_TTL_TABLES["deliveries"] = ("time", "deliveries")  # 006 has none: set by apply_retention
_TTL_TABLES["alert_events"] = ("starts_at", "deliveries")  # 011: as the delivery log
_TTL_TABLES["alert_acks"] = ("time", "deliveries")

_CREATE_LOG = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    template: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]

    def statements(self, params: dict[str, str]) -> list[str]:
        """The rendered SQL statements (split on ``;`` at line ends, comments dropped)."""
        sql = Template(self.template).substitute(params)
        lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
        return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip()]


def default_dir() -> Path:
    """``infra/clickhouse/migrations`` next to the package."""
    return Path(__file__).resolve().parents[3] / "infra" / "clickhouse" / "migrations"


def load(directory: Path | None = None) -> list[Migration]:
    """Migrations of ``directory`` in version order; duplicate versions are an error."""
    found: dict[int, Migration] = {}
    for path in sorted((directory or default_dir()).glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise ValueError(f"{path}: migration files are named NNN_name.sql")
        version = int(m.group("version"))
        if version in found:
            raise ValueError(f"{path}: version {version} also used by {found[version].name}")
        found[version] = Migration(version, m.group("name"), path.read_text())
    return [found[v] for v in sorted(found)]


def params(storage: StorageSettings) -> dict[str, str]:
    """Template parameters from the storage settings."""
    c = CODECS[storage.compression]
    return {
        "codec": f"CODEC({c or 'NONE'})",
        "delta": f"CODEC(Delta, {c})" if c else "CODEC(NONE)",
        "t64": f"CODEC(T64, {c})" if c else "CODEC(NONE)",
        "samples_ttl_seconds": str(int(storage.retention.samples.total_seconds())),
        "aggregates_ttl_seconds": str(int(storage.retention.aggregates.total_seconds())),
        "logs_ttl_seconds": str(int(storage.retention.logs.total_seconds())),
        "deliveries_ttl_seconds": str(int(storage.retention.deliveries.total_seconds())),
    }


def applied(client: Client) -> dict[int, str]:
    """Version -> checksum of the migrations already recorded."""
    client.command(_CREATE_LOG)
    rows = client.query("SELECT version, checksum FROM schema_migrations").result_rows
    return {int(v): str(c) for v, c in rows}


LOCK_WAIT_S = 900.0  # how long a store waits for another's migrations (a rebuild copies a table)
LOCK_TTL_S = 60.0  # a holder neither beating nor running a query this long is taken over
# a client that migrates waits this long for a statement's answer: a rebuild's copy of a
# large table takes as long as it takes (the writer's client gives up after 30 s)
MIGRATE_RECEIVE_TIMEOUT_S = 24 * 3600
_EXCHANGE = re.compile(r"^EXCHANGE\s+TABLES\s+(?P<x>\w+)\s+AND\s+(?P<y>\w+)$", re.I | re.ASCII)


def migrate_dsn(dsn: str) -> str:
    """``dsn`` for a client that runs migrations: a server's answer is waited for
    ``MIGRATE_RECEIVE_TIMEOUT_S`` (unless the DSN sets ``send_receive_timeout``).

    >>> migrate_dsn("http://ch:8123/db")
    'http://ch:8123/db?send_receive_timeout=86400'
    """
    return with_receive_timeout(dsn, MIGRATE_RECEIVE_TIMEOUT_S)


def migrate(
    client: Client,
    storage: StorageSettings,
    directory: Path | None = None,
    *,
    lock_wait_s: float = LOCK_WAIT_S,
    lock_ttl_s: float = LOCK_TTL_S,
    lock_poll_s: float = 0.5,
    stop: Callable[[], bool] | None = None,
) -> list[Migration]:
    """Apply pending migrations in order and record them; return the ones applied.

    Pending migrations run under the :class:`MigrationLock` (one store at a time; the
    others wait, then find them recorded, or raise LockWaitStopped once ``stop()``). A
    recorded migration whose file changed since is reported, never re-run. Run it on a
    client of :func:`migrate_dsn`.
    """
    migrations = load(directory)
    if pending(migrations, applied(client)):
        lock = MigrationLock(client, ttl_s=lock_ttl_s, poll_s=lock_poll_s)
        lock.acquire(lock_wait_s, stop)
        try:
            ran = _apply(client, lock, pending(migrations, applied(client)), params(storage))
        except BaseException as e:
            if isinstance(e, Exception):
                _wait_idle(lock, stop)
            # not released: the lock expires lock_ttl_s after its last statement ended
            log.warning("migration_failed_lock_left", holder=lock.holder, ttl_s=lock_ttl_s)
            raise
        lock.release()
    else:
        ran = []
    apply_retention(client, storage)
    return ran


def _wait_idle(lock: MigrationLock, stop: Callable[[], bool] | None) -> None:
    """After a failed statement, wait until none of the holder's runs on the server: a
    client timeout leaves it running, and a retry must not start it over meanwhile."""
    try:
        if lock.wait_idle(stop):
            return
        log.warning("migration_statement_not_waited_for", holder=lock.holder, why="stopping")
    except Exception as e:  # the server is gone: the lock's ttl covers the rest
        log.warning("migration_statement_not_waited_for", holder=lock.holder, why=str(e)[:300])


def pending(migrations: list[Migration], done: dict[int, str]) -> list[Migration]:
    """The migrations not recorded in ``done``; a recorded one that changed is an error."""
    out = []
    for mig in migrations:
        if mig.version not in done:
            out.append(mig)
        elif done[mig.version] != mig.checksum:
            raise RuntimeError(
                f"migration {mig.version}_{mig.name} changed after it was applied; "
                "add a new migration instead of editing it"
            )
    return out


def rebuilt(statements: list[str]) -> tuple[str, str] | None:
    """``(x, y)`` of a migration that rebuilds ``x`` with ``EXCHANGE TABLES x AND y``.

    >>> rebuilt(["CREATE TABLE t_new (a UInt8)", "EXCHANGE TABLES t AND t_new"])
    ('t', 't_new')
    """
    for stmt in statements:
        if m := _EXCHANGE.match(stmt):
            return m.group("x"), m.group("y")
    return None


def _apply(
    client: Client, lock: MigrationLock, todo: list[Migration], p: dict[str, str]
) -> list[Migration]:
    for mig in todo:
        stmts = mig.statements(p)
        swap = rebuilt(stmts)
        if swap is None:
            for stmt in stmts:
                lock.check()
                client.command(f"{lock.mark}\n{stmt}")
        else:
            Rebuild(client, lock, *swap).run(stmts)
        lock.check()
        client.insert(
            "schema_migrations",
            [[mig.version, mig.name, mig.checksum]],
            column_names=["version", "name", "checksum"],
        )
    return todo


def apply_retention(client: Client, storage: StorageSettings) -> list[str]:
    """Bring table TTLs in line with ``storage.retention`` if they changed; return tables."""
    p = params(storage)
    changed = []
    for table, (column, key) in _TTL_TABLES.items():
        seconds = p[f"{key}_ttl_seconds"]
        ddl = client.query(
            "SELECT create_table_query FROM system.tables "
            "WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": table},
        ).result_rows
        if not ddl or f"toIntervalSecond({seconds})" in ddl[0][0]:
            continue
        client.command(
            f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + toIntervalSecond({seconds})",
            settings={"materialize_ttl_after_modify": 0},
        )
        changed.append(table)
    return changed
