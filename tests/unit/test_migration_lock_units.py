"""The migration lock and the rebuilds with fake clients: the migrating client's timeout,
a statement the client gave up on, stopping while waiting, the rebuild's failure modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from monitoring.cli import store as store_cli
from monitoring.config import Settings, StorageSettings
from monitoring.sinks.clickhouse import connection, migrations
from monitoring.sinks.clickhouse.migration_lock import LockWaitStopped
from monitoring.sinks.clickhouse.rebuild import Rebuild, RebuildIncomplete
from monitoring.sinks.clickhouse.writer import SEND_RECEIVE_TIMEOUT_S


def rows(r: list[Any]) -> Any:
    return type("R", (), {"result_rows": r})()


class LockClient:
    """Answers schema_migrations from what was inserted, the lock's tables from those
    created (or ``locks``), a lock table's state from ``state``, and system.processes
    with ``running`` (a marked statement of the holder runs while it is positive; each
    look counts it down)."""

    def __init__(self, locks: list[tuple[str, str]] | None = None) -> None:
        self.commands: list[str] = []
        self.recorded: list[list[Any]] = []
        self.locks = locks or []
        self.state = (1, "2026-12-07 05:00:00.000", 0)
        self.state_reads = 0
        self.running = 0
        self.fail: str | None = None  # a command containing this times out

    def command(self, sql: str, **_: Any) -> None:
        if self.fail is not None and self.fail in sql:
            self.running = 3  # still running on the server after the client gave up
            raise OperationalError("HTTPConnectionPool: Read timed out. (read timeout=30)")
        self.commands.append(sql)
        if sql.startswith("CREATE TABLE schema_migrations_lock_"):
            self.locks.append((sql.split()[2], sql.rsplit("COMMENT '", 1)[1].rstrip("'")))

    def query(self, sql: str, **_: Any) -> Any:
        if "system.tables" in sql:
            return rows(list(self.locks))
        if "system.processes" in sql:
            running, self.running = self.running, max(0, self.running - 1)
            return rows([(int(running > 0),)])
        if "FROM schema_migrations_lock_" in sql:
            self.state_reads += 1
            return rows([self.state])
        if "schema_migrations" in sql:
            return rows([(v, c) for v, _n, c in self.recorded])
        return rows([])

    def insert(self, table: str, data: list[list[Any]], **_: Any) -> None:
        if table == "schema_migrations":
            self.recorded.extend(data)


def files(tmp_path: Path) -> Path:
    (tmp_path / "001_a.sql").write_text("CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE=Log;")
    (tmp_path / "002_b.sql").write_text("INSERT INTO a SELECT 1;")
    return tmp_path


def test_a_statement_the_client_gave_up_on_is_waited_for_before_the_migration_fails(
    tmp_path: Path,
) -> None:
    """A client timeout leaves the statement running on the server: the migration fails
    only once it ended (the store's retry would otherwise start the copy over)."""
    client = LockClient()
    client.fail = "INSERT INTO a"
    with pytest.raises(OperationalError, match="timed out"):
        migrations.migrate(client, StorageSettings(), files(tmp_path), lock_poll_s=0.001)  # type: ignore[arg-type]
    assert client.running == 0  # it looked until the statement was gone
    assert [v for v, *_ in client.recorded] == [1]


def test_stopping_ends_the_wait_for_another_store_s_lock(tmp_path: Path) -> None:
    """SIGTERM while another store migrates: the wait (15 min) ends at the next look."""
    client = LockClient(locks=[("schema_migrations_lock_1", "other")])

    def stop() -> bool:
        return client.state_reads >= 3  # set while it waited

    with pytest.raises(LockWaitStopped):
        migrations.migrate(
            client,  # type: ignore[arg-type]
            StorageSettings(),
            files(tmp_path),
            lock_wait_s=900,
            lock_poll_s=0.001,
            stop=stop,
        )
    assert client.state_reads == 3 and client.recorded == []


def test_store_run_migrates_on_a_client_that_waits_for_a_long_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a server the writer's client gives up after 30 s; the migrations run on a
    client of their own that waits for hours, closed after them."""
    opened: list[FakeDsnClient] = []
    used: list[str] = []

    def connect(dsn: str) -> FakeDsnClient:
        opened.append(FakeDsnClient(dsn))
        return opened[-1]

    def migrate(client: FakeDsnClient, _storage: Any, **kw: Any) -> list[Any]:
        assert callable(kw["stop"])
        used.append(client.dsn)
        return []

    monkeypatch.setattr(connection, "connect", connect)
    monkeypatch.setattr(migrations, "migrate", migrate)
    settings = Settings.load(None)
    server = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"dsn": "http://ch:8123/db"})}
    )
    stop = store_cli.threading.Event()
    opened_client = store_cli._open(server, stop)
    assert opened_client is not None
    writer = opened_client[0]
    assert writer.dsn == f"http://ch:8123/db?send_receive_timeout={SEND_RECEIVE_TIMEOUT_S}"
    assert used == ["http://ch:8123/db?send_receive_timeout=86400"]
    assert [c.closed for c in opened] == [False, True]
    opened.clear()
    used.clear()
    chdb = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"dsn": "chdb:///x"})}
    )
    assert store_cli._open(chdb, stop) is not None  # in-process: no timeout, one client
    assert used == ["chdb:///x"] and len(opened) == 1


class FakeDsnClient:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.closed = False

    def close(self) -> None:
        self.closed = True


class RebuildLock:
    mark = "/* migration-lock:t */"

    def check(self) -> None:
        pass


class RebuildClient:
    """The rebuild's queries: ``tables`` (name -> sorting key) exist, ``running`` inserts
    run in system.processes for ever."""

    def __init__(self, tables: dict[str, str], running: list[str] | None = None) -> None:
        self.commands: list[str] = []
        self.tables = tables
        self.running = running or []

    def command(self, sql: str, parameters: Any = None) -> None:
        self.commands.append(sql.split("\n")[1].split(" (")[0][:40])

    def query(self, sql: str, parameters: Any = None) -> Any:
        if "sorting_key FROM system.tables" in sql:
            return rows([(t, k) for t, k in self.tables.items() if t in parameters["t"]])
        if "FROM system.tables" in sql:
            return rows([(int(parameters["t"] in self.tables),)])
        if "FROM system.parts" in sql:
            return rows([("all_1_1_0",)])
        if "FROM system.columns" in sql:
            return rows([("series_id",), ("ts",), ("value",)])
        if "query_kind = 'Insert'" in sql or "query_id IN" in sql:
            return rows([(q,) for q in self.running])
        return rows([])


def rebuild_008() -> list[str]:
    mig = next(m for m in migrations.load() if m.version == 8)
    return mig.statements(migrations.params(StorageSettings()))


OLD_KEY, NEW_KEY = "series_id, ts", "series_id, ts, value"


def test_inserts_outlasting_the_wait_fail_the_rebuild_before_the_old_table_is_dropped() -> None:
    client = RebuildClient({"samples": OLD_KEY}, running=["q1"])
    rebuild = Rebuild(client, RebuildLock(), "samples", "samples_rekeyed", inflight_wait_s=0)  # type: ignore[arg-type]
    with pytest.raises(RebuildIncomplete, match="1 inserts"):
        rebuild.run(rebuild_008())
    assert client.commands[-1] == "EXCHANGE TABLES samples AND samples_reke"  # not dropped


def test_a_rebuild_without_its_final_drop_is_refused_before_it_starts() -> None:
    client = RebuildClient({"samples": OLD_KEY})
    stmts = rebuild_008()
    stmts[-1] = "DROP TABLE IF EXISTS samples_rekeyed"  # the catch-up would never run
    with pytest.raises(ValueError, match="must DROP TABLE samples_rekeyed after"):
        Rebuild(client, RebuildLock(), "samples", "samples_rekeyed").run(stmts)  # type: ignore[arg-type]
    assert client.commands == []


@pytest.mark.parametrize(
    ("x_key", "y_key", "first"),
    [
        (NEW_KEY, OLD_KEY, "INSERT INTO samples"),  # swapped: y is the old table, kept
        (OLD_KEY, NEW_KEY, "DROP TABLE samples_rekeyed"),  # not swapped: y is a partial copy
    ],
)
def test_a_leftover_copy_is_kept_only_if_the_run_had_swapped(
    x_key: str, y_key: str, first: str
) -> None:
    client = RebuildClient({"samples": x_key, "samples_rekeyed": y_key})
    Rebuild(client, RebuildLock(), "samples", "samples_rekeyed").run(rebuild_008())  # type: ignore[arg-type]
    assert client.commands[0] == first
    assert client.commands[1] == "DROP TABLE IF EXISTS samples_rekeyed"


def test_a_leftover_copy_that_cannot_be_told_apart_is_refused() -> None:
    client = RebuildClient({"samples": NEW_KEY, "samples_rekeyed": NEW_KEY})
    with pytest.raises(RuntimeError, match="do not tell whether"):
        Rebuild(client, RebuildLock(), "samples", "samples_rekeyed").run(rebuild_008())  # type: ignore[arg-type]
    assert client.commands == []
