"""The ``samples`` table's key against chDB: a replayed sample collapses, two distinct
values of one series in the same millisecond do not (issue 13, finding 12), on a fresh
store and on one created before migration 008 with rows in it; and ``series.last_seen``
follows the samples."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from fixtures.store import StoreMessage
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.metrics.samples import Sample, SampleBatch
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import default_dir, migrate
from monitoring.sinks.clickhouse.rows import series_id
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
T0 = int(time.time() * 1000) // 1000 * 1000 - 60_000  # inside the retention
KEY = 'cpu{host="h"}'


def batch(points: list[tuple[int, float]]) -> StoreMessage:
    rec = {
        "source": "t", "series": [KEY], "kinds": ["GAUGE"], "units": [""],
        "series_index": [0] * len(points), "timestamps_ms": [t for t, _ in points],
        "values": [v for _, v in points],
    }  # fmt: skip
    return StoreMessage(CODEC.encode("monitoring.MetricBatch", rec), T0)


class Consumer:
    def commit(self, asynchronous: bool = True) -> None:
        pass


def store_points(settings: Settings, client: Any, points: list[tuple[int, float]]) -> None:
    store = Store(settings, Writer(client, StoreMetrics(CollectorRegistry())), Consumer(), CODEC)
    store.handle(batch(points))
    store.flush_and_commit()


def stored(client: Any) -> list[tuple[int, float]]:
    """(ts ms, value) of the series after merging everything."""
    client.command("OPTIMIZE TABLE samples FINAL")
    rows = client.query(
        "SELECT toUnixTimestamp64Milli(ts), value FROM samples WHERE series_id = {s:UInt64} "
        "ORDER BY ts, value",
        parameters={"s": series_id(KEY)},
    ).result_rows
    return [(int(t), float(v)) for t, v in rows]


# same millisecond: 1.0 and 2.0 are distinct samples; a whole replay of the message
SAME_MS = [(T0, 1.0), (T0, 2.0), (T0 + 1, 3.0)]


def test_distinct_values_in_one_millisecond_are_kept_and_replays_collapse(
    chdb_client: Any, chdb_settings: Settings
) -> None:
    for _ in range(3):  # the message and two replays of it
        store_points(chdb_settings, chdb_client, SAME_MS)
    assert stored(chdb_client) == SAME_MS
    count = chdb_client.query("SELECT count() FROM samples FINAL").result_rows[0][0]
    assert count == 3


def test_a_store_from_before_migration_008_keeps_its_rows_and_gets_the_key(
    chdb_settings: Settings, tmp_path: Path
) -> None:
    # migrated with 001-007 only: a store of the code before 008
    old_dir = tmp_path / "old_migrations"
    old_dir.mkdir()
    for f in sorted(default_dir().glob("*.sql")):
        if int(f.name[:3]) < 8:
            shutil.copy(f, old_dir)
    old = connect(chdb_settings.storage.dsn)
    try:
        assert [m.version for m in migrate(old, chdb_settings.storage, old_dir)][-1] == 7
        store_points(chdb_settings, old, [(T0 - 5, 0.5), *SAME_MS])
        assert stored(old) == [(T0 - 5, 0.5), (T0, 2.0), (T0 + 1, 3.0)]  # 1.0 collapsed
        assert migrate(old, chdb_settings.storage)[0].version == 8
        ddl = old.query(
            "SELECT sorting_key, primary_key FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'samples'"
        ).result_rows[0]
        assert tuple(ddl) == ("series_id, ts, value", "series_id, ts")
        tables = {r[0] for r in old.query("SHOW TABLES").result_rows}
        assert "samples_rekeyed" not in tables
        assert stored(old) == [(T0 - 5, 0.5), (T0, 2.0), (T0 + 1, 3.0)]  # rows kept
        store_points(chdb_settings, old, SAME_MS)  # now the 1.0 stays
        assert stored(old) == [(T0 - 5, 0.5), *SAME_MS]
        assert migrate(old, chdb_settings.storage) == []
    finally:
        old.close()


def test_last_seen_in_chdb_follows_the_samples(chdb_client: Any, chdb_settings: Settings) -> None:
    now = int(time.time() * 1000) - 600_000
    writer = Writer(chdb_client, StoreMetrics(CollectorRegistry()))  # refresh 1 min
    for minute in range(5):
        writer.add_sample_batch(
            SampleBatch.from_samples([Sample("cpu", "cpu", {}, now + minute * 60_000, 1.0)])
        )
        writer.flush()
    first, last = chdb_client.query(
        "SELECT toUnixTimestamp64Milli(first_seen), toUnixTimestamp64Milli(last_seen) "
        "FROM series FINAL WHERE series_id = {s:UInt64}",
        parameters={"s": series_id("cpu")},
    ).result_rows[0]
    assert (first, last) == (now, now + 4 * 60_000)


def test_the_footprint_of_a_time_range_alone(chdb_client: Any) -> None:
    """``samples_before``: bytes per row of the rows before a time, the rest ignored."""
    from monitoring.sinks.clickhouse.footprint import samples_before

    rows = [[series_id(f"m{i % 10}"), T0 + i * 1000, float(i % 7)] for i in range(2_000)]
    chdb_client.insert("samples", list(map(list, zip(*rows, strict=True))),
                       column_names=["series_id", "ts", "value"], column_oriented=True)  # fmt: skip
    per_row = samples_before(chdb_client, T0 + 1_000_000)
    assert per_row is not None and 0 < per_row < 30
    assert samples_before(chdb_client, T0) is None  # no row before
    tables = {r[0] for r in chdb_client.query("SHOW TABLES").result_rows}
    assert "samples_footprint" not in tables
