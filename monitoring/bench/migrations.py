"""``monitoring bench migrations``: the rebuilds 008-012 on a store created before 008.

A fresh chDB directory is migrated to 007 and filled with ``samples`` rows (1,000
series) and ``aggregates`` rows; then ``migrate`` brings it to the last migration, with
or without an old store (a thread with its own client) inserting batches of 1,000
distinct samples meanwhile. It prints how long that took, how many rows the old store
inserted and how many of them the rebuilt table lacks (0 expected), and how long a
``migrate`` with nothing pending takes (what every store start pays).

The last line printed is ``migrate_s=... inserted=... lost=... idle_ms=...``.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

from monitoring.config import Settings
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import default_dir, migrate

_OLD_STORE_SERIES = 1 << 40  # the old store's series id, apart from the filled ones


class MigrationBench(NamedTuple):
    """One run's numbers."""

    migrate_s: float
    versions: list[int]
    inserted: int
    lost: int
    idle_ms: float

    def line(self) -> str:
        return (
            f"migrate_s={self.migrate_s:.2f} inserted={self.inserted} lost={self.lost} "
            f"idle_ms={self.idle_ms:.1f}"
        )


def run(samples: int, aggregates: int, inserting: bool) -> MigrationBench:
    """Fill a pre-008 store, migrate it (an old store inserting if asked), count."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-migrations-"))
    old = workdir / "migrations_001_007"
    old.mkdir()
    for f in sorted(default_dir().glob("*.sql"))[:7]:
        shutil.copy(f, old / f.name)
    base = Settings.load(None).storage
    storage = base.model_copy(update={"dsn": f"chdb://{workdir / 'chdb'}"})
    client = connect(storage.dsn)
    writer = connect(storage.dsn)
    stop = threading.Event()
    inserted = [0]
    t0 = int(time.time() * 1000) - 3_600_000  # inside the retentions

    def old_store() -> None:
        while not stop.is_set():
            n = inserted[0]
            writer.command(
                f"INSERT INTO samples (series_id, ts, value) SELECT {_OLD_STORE_SERIES}, "
                f"fromUnixTimestamp64Milli(toInt64({t0} + {n} + number), 'UTC'), "
                f"{n} + number FROM numbers(1000)"
            )
            inserted[0] = n + 1000

    try:
        migrate(client, storage, old)
        client.command(
            "INSERT INTO samples SELECT number % 1000, fromUnixTimestamp64Milli(toInt64("
            f"{t0} + intDiv(number, 1000) * 1000), 'UTC'), number FROM numbers({samples})"
        )
        client.command(
            "INSERT INTO aggregates (series_id, series, name, labels, window_ms, "
            "window_start, window_end, count, sum, min, max, mean, last, p50, p90, p99, "
            "closed_by, version) SELECT number % 1000, 's', 'n', map(), 10000, "
            f"fromUnixTimestamp64Milli(toInt64({t0} + intDiv(number, 1000) * 10000), 'UTC'), "
            f"now64(3), 1, number, 0, 0, 0, 0, 0, 0, 0, 'time', 1 FROM numbers({aggregates})"
        )
        thread = threading.Thread(target=old_store, daemon=True)
        if inserting:
            thread.start()
        start = time.perf_counter()
        ran = migrate(client, storage)
        took = time.perf_counter() - start
        stop.set()
        if inserting:
            thread.join()
        kept = client.query(
            f"SELECT count() FROM samples FINAL WHERE series_id = {_OLD_STORE_SERIES}"
        ).result_rows[0][0]
        start = time.perf_counter()
        migrate(client, storage)
        idle = time.perf_counter() - start
        return MigrationBench(
            took, [m.version for m in ran], inserted[0], inserted[0] - int(kept), idle * 1000
        )
    finally:
        stop.set()
        writer.close()
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
