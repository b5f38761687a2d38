"""Store migrations under concurrent stores, against chDB (issue 18): stores migrating
one database at once apply each migration once and lose no row; rows inserted during the
rebuilds of 008 and 012 (an old store in a rolling upgrade) are all there after them; a
lock left by a killed holder is taken over, a live one running a long statement is not;
a rebuild interrupted after its swap keeps the old table's rows, one interrupted before
it drops its partial copy.

chDB serves one process per directory, so the "stores" are threads with their own
clients on one engine, as stores are clients of one ClickHouse server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitoring.config import Settings, StorageSettings
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migration_lock import MigrationLock, generations
from monitoring.sinks.clickhouse.migrations import default_dir, load, migrate, params

pytestmark = pytest.mark.no_broker

ALL = [m.version for m in load()]
NOW_MS = int(time.time() * 1000) // 1000 * 1000
T0_MS = NOW_MS - 3_600_000  # inside both retentions


@pytest.fixture
def storage(tmp_path: Path) -> StorageSettings:
    return Settings.load(None).storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'chdb'}"})


@pytest.fixture
def clients(storage: StorageSettings) -> Iterator[list[Any]]:
    """Clients of the one engine, closed after the test (chDB then frees the directory)."""
    opened: list[Any] = []
    yield opened
    for c in opened:
        c.close()


def client_of(storage: StorageSettings, clients: list[Any]) -> Any:
    c = connect(storage.dsn)
    clients.append(c)
    return c


def up_to_7(storage: StorageSettings, client: Any, tmp_path: Path) -> None:
    """The tables as a store before 008 left them (the same files, so the same checksums)."""
    old = tmp_path / "migrations_001_007"
    old.mkdir()
    for f in sorted(default_dir().glob("*.sql"))[:7]:
        shutil.copy(f, old / f.name)
    assert [m.version for m in migrate(client, storage, old)] == list(range(1, 8))


class Inserter:
    """An old store: inserts distinct samples and aggregates in batches until stopped;
    ``samples`` and ``aggregates`` count the rows it was told were stored."""

    def __init__(self, client: Any, batch: int = 2_000) -> None:
        self.client = client
        self.batch = batch
        self.samples = 0
        self.aggregates = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def insert(self) -> None:
        """One batch of each table, at numbers not used before."""
        n, b = self.samples, self.batch
        self.client.command(
            f"INSERT INTO samples (series_id, ts, value) SELECT number % 97, "
            f"fromUnixTimestamp64Milli(toInt64({T0_MS} + number), 'UTC'), number "
            f"FROM numbers({n}, {b})"
        )
        self.samples += b
        n = self.aggregates
        self.client.command(
            "INSERT INTO aggregates (series_id, series, name, labels, window_ms, window_start, "
            "window_end, count, sum, min, max, mean, last, p50, p90, p99, closed_by, version) "
            f"SELECT number % 89, 'cpu', 'cpu', map(), 10000, "
            f"fromUnixTimestamp64Milli(toInt64({T0_MS} + number * 10), 'UTC'), "
            f"fromUnixTimestamp64Milli(toInt64({T0_MS} + number * 10 + 10000), 'UTC'), "
            f"1, number, number, number, number, number, number, number, number, 'time', 1 "
            f"FROM numbers({n}, {b})"
        )
        self.aggregates += b

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.insert()
        except BaseException as e:  # reported by the test
            self.error = e

    def __enter__(self) -> Inserter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive()


def check_all_there(client: Any, ins: Inserter) -> None:
    """Each migration recorded once, the new keys, and every inserted row (each distinct)."""
    versions = client.query("SELECT version FROM schema_migrations ORDER BY version")
    assert [int(r[0]) for r in versions.result_rows] == ALL
    keys = dict(
        client.query(
            "SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase() "
            "AND name IN ('samples', 'aggregates')"
        ).result_rows
    )
    assert keys == {
        "samples": "series_id, ts, value",
        "aggregates": "window_ms, series_id, window_start",
    }
    n = client.query("SELECT count(), uniqExact(value) FROM samples FINAL").result_rows[0]
    assert (int(n[0]), int(n[1])) == (ins.samples, ins.samples)
    n = client.query("SELECT count(), uniqExact(sum) FROM aggregates FINAL").result_rows[0]
    assert (int(n[0]), int(n[1])) == (ins.aggregates, ins.aggregates)
    assert client.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() "
        "AND name LIKE '%rekeyed'"
    ).result_rows == [(0,)]


def test_stores_migrating_at_once_apply_each_migration_once_and_lose_no_row(
    storage: StorageSettings, clients: list[Any], tmp_path: Path
) -> None:
    """Four stores start together on a database before 008 while an old store inserts."""
    first = client_of(storage, clients)
    up_to_7(storage, first, tmp_path)
    ins = Inserter(client_of(storage, clients), batch=5_000)
    for _ in range(20):
        ins.insert()  # 100,000 rows in each table before the rebuilds
    ran: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def store(i: int, c: Any) -> None:
        try:
            start.wait(timeout=60)
            ran[i] = [m.version for m in migrate(c, storage, lock_wait_s=300)]
        except BaseException as e:
            errors.append(e)

    stores = [
        threading.Thread(target=store, args=(i, client_of(storage, clients))) for i in range(4)
    ]
    with ins:
        for t in stores:
            t.start()
        for t in stores:
            t.join(timeout=400)
    assert not errors, errors
    assert ins.error is None, ins.error
    assert sorted(v for vs in ran.values() for v in vs) == list(range(8, 13))
    assert sum(1 for vs in ran.values() if vs) == 1  # one store applied them, in order
    check_all_there(first, ins)
    gens = generations(first)
    assert len(gens) == 1


class InsertBeforeExchange:
    """A client that has an old store insert a batch just before each EXCHANGE (after the
    copy) and another insert running while it exchanges."""

    def __init__(self, client: Any, ins: Inserter, slow: Any) -> None:
        self._client = client
        self._ins = ins
        self._slow = slow
        self.exchanges = 0
        self.threads: list[threading.Thread] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def command(self, cmd: str, *args: Any, **kwargs: Any) -> Any:
        if "EXCHANGE TABLES" in cmd:
            self.exchanges += 1
            self._ins.insert()
            table = "samples" if "EXCHANGE TABLES samples " in cmd else "aggregates"
            running = threading.Thread(target=self._slow_insert, args=(table,), daemon=True)
            running.start()
            deadline = time.monotonic() + 60
            while not self._client.query(
                "SELECT count() FROM system.processes WHERE query_kind = 'Insert' "
                "AND position(query, 'sleepEachRow') > 0"
            ).result_rows[0][0]:
                assert time.monotonic() < deadline, "the slow insert did not start"
                time.sleep(0.01)
            self.threads.append(running)
        return self._client.command(cmd, *args, **kwargs)

    def _slow_insert(self, table: str) -> None:
        """An insert still running at the swap: into the old table, committed after it."""
        if table == "samples":
            self._slow.command(
                "INSERT INTO samples (series_id, ts, value) SELECT 1, "
                f"fromUnixTimestamp64Milli(toInt64({NOW_MS - 1000} - number), 'UTC'), "
                "-1 - number FROM numbers(20) WHERE sleepEachRow(0.05) = 0 "
                "SETTINGS max_block_size = 1"
            )
            return
        self._slow.command(
            "INSERT INTO aggregates (series_id, series, name, labels, window_ms, window_start, "
            "window_end, count, sum, min, max, mean, last, p50, p90, p99, closed_by, version) "
            f"SELECT 1, 'x', 'x', map(), 1000, fromUnixTimestamp64Milli(toInt64({NOW_MS - 1000} "
            f"- number * 1000), 'UTC'), now64(3), 1, -1 - number, 0, 0, 0, 0, 0, 0, 0, 'time', "
            "1 FROM numbers(20) WHERE sleepEachRow(0.05) = 0 SETTINGS max_block_size = 1"
        )


def test_rows_an_old_store_inserts_during_a_rebuild_are_kept(
    storage: StorageSettings, clients: list[Any], tmp_path: Path
) -> None:
    """Rows inserted after the copy and before the EXCHANGE (deterministically), and by an
    insert still running at the EXCHANGE, land in the rebuilt table."""
    first = client_of(storage, clients)
    up_to_7(storage, first, tmp_path)
    ins = Inserter(client_of(storage, clients))
    ins.insert()
    wrapped = InsertBeforeExchange(
        client_of(storage, clients), ins, slow=client_of(storage, clients)
    )
    assert [m.version for m in migrate(wrapped, storage)] == list(range(8, 13))
    assert wrapped.exchanges == 2
    for t in wrapped.threads:
        t.join(timeout=60)
        assert not t.is_alive()
    ins.samples += 20  # the slow inserts' rows, values -1..-20, sums -1..-20
    ins.aggregates += 20
    check_all_there(first, ins)


def test_rows_inserted_all_along_the_rebuilds_are_kept(
    storage: StorageSettings, clients: list[Any], tmp_path: Path
) -> None:
    """An old store inserting without pause throughout 008 and 012 loses nothing."""
    first = client_of(storage, clients)
    up_to_7(storage, first, tmp_path)
    ins = Inserter(client_of(storage, clients), batch=1_000)
    for _ in range(50):
        ins.insert()
    with ins:
        migrate(client_of(storage, clients), storage)
        deadline = time.monotonic() + 300
        while ins.samples < 60_000:  # a few batches after the rebuilds, too
            assert ins.error is None, ins.error
            assert time.monotonic() < deadline, "the inserter stopped inserting"
            time.sleep(0.01)
    assert ins.error is None, ins.error
    check_all_there(first, ins)


HOLDER = """
import sys, time
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migration_lock import MigrationLock
lock = MigrationLock(connect(sys.argv[1]), holder="doomed")
lock.acquire(wait_s=60)
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_left_by_a_killed_holder_is_taken_over(
    storage: StorageSettings, clients: list[Any]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, storage.dsn],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"  # ends at its exit if it fails
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    client = client_of(storage, clients)
    assert [(g.gen, g.holder) for g in generations(client)] == [(1, "doomed")]
    with capture_logs() as logs:
        assert [m.version for m in migrate(client, storage, lock_ttl_s=1.0)] == ALL
    taken = [e for e in logs if e["event"] == "migration_lock_taken_over"]
    assert [(e["stale_holder"], e["generation"]) for e in taken] == [("doomed", 1)]
    gens = generations(client)
    assert [g.gen for g in gens] == [2] and gens[0].holder != "doomed"


def test_a_live_holder_running_a_long_statement_is_not_taken_over(
    storage: StorageSettings, clients: list[Any]
) -> None:
    """Its statements carry its mark, so a waiter sees it running past the ttl."""
    a = MigrationLock(client_of(storage, clients), ttl_s=1.5, poll_s=0.05)
    a.acquire(wait_s=10)
    b = MigrationLock(client_of(storage, clients), ttl_s=1.5, poll_s=0.05)
    got = threading.Event()

    def wait_for_it() -> None:
        b.acquire(wait_s=60)
        got.set()

    long = threading.Thread(target=a.client.command, args=(f"{a.mark}\nSELECT sleep(3)",))
    long.start()  # no beat for two ttls
    deadline = time.monotonic() + 60
    while not b._running(a.holder):
        assert time.monotonic() < deadline, "the long statement did not start"
        time.sleep(0.01)
    waiter = threading.Thread(target=wait_for_it, daemon=True)
    waiter.start()
    long.join(timeout=60)
    assert not got.is_set()
    a.check()  # still the holder: LockLost otherwise
    a.release()
    waiter.join(timeout=60)
    assert got.is_set()
    assert b.took_over is None  # it found the lock released, not stale
    b.release()


def leftover_after_interrupted_008(
    storage: StorageSettings, clients: list[Any], tmp_path: Path, swapped: bool
) -> list[tuple[str, str]]:
    """008 run up to its copy (and its EXCHANGE if ``swapped``), rows inserted after the
    copy, then the whole migration again: the leftover events it logged; every row kept."""
    client = client_of(storage, clients)
    up_to_7(storage, client, tmp_path)
    ins = Inserter(client)
    ins.insert()
    stmts = next(m for m in load() if m.version == 8).statements(params(storage))
    assert stmts[-2].startswith("EXCHANGE") and stmts[-1] == "DROP TABLE samples_rekeyed"
    for stmt in stmts[:-2]:
        client.command(stmt)
    ins.insert()  # after the copy: only in the old table
    if swapped:
        client.command(stmts[-2])  # swapped, then killed before the catch-up and the drop
    with capture_logs() as logs:
        assert [m.version for m in migrate(client, storage)] == list(range(8, 13))
    check_all_there(client, ins)
    return [
        (e["event"], e["table"]) for e in logs if str(e["event"]).startswith("rebuild_leftover")
    ]


def test_a_rebuild_interrupted_after_its_exchange_keeps_the_old_table_s_late_rows(
    storage: StorageSettings, clients: list[Any], tmp_path: Path
) -> None:
    """A store killed between 008's EXCHANGE and its catch-up left the old table, with rows
    the copy missed, as samples_rekeyed: the next run keeps them before starting over."""
    assert leftover_after_interrupted_008(storage, clients, tmp_path, swapped=True) == [
        ("rebuild_leftover_kept", "samples_rekeyed")
    ]


def test_a_rebuild_interrupted_before_its_exchange_drops_its_partial_copy(
    storage: StorageSettings, clients: list[Any], tmp_path: Path
) -> None:
    """A store stopped after 008's copy and before its EXCHANGE left the new, partly
    filled table as samples_rekeyed: the next run drops it (copying it into samples would
    be wasted work, or fail for a changed type) and starts over."""
    assert leftover_after_interrupted_008(storage, clients, tmp_path, swapped=False) == [
        ("rebuild_leftover_dropped", "samples_rekeyed")
    ]


def test_a_failed_migration_leaves_the_lock_to_expire(
    storage: StorageSettings, clients: list[Any], tmp_path: Path
) -> None:
    """A migration that fails is not released (its statement may still run on a server
    after a client timeout): the next run takes the lock over after the ttl."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "001_a.sql").write_text("CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Log;")
    (bad / "002_b.sql").write_text("SELECT no_such_function();")
    client = client_of(storage, clients)
    with pytest.raises(Exception, match="no_such_function"):
        migrate(client, storage, bad, lock_ttl_s=0.5)
    (bad / "002_b.sql").write_text("CREATE TABLE IF NOT EXISTS b (x UInt8) ENGINE = Log;")
    with capture_logs() as logs:
        assert [m.version for m in migrate(client, storage, bad, lock_ttl_s=0.5)] == [2]
    assert [e["generation"] for e in logs if e["event"] == "migration_lock_taken_over"] == [1]
