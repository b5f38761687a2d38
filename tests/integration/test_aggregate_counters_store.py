"""Aggregate v2's counter fields in the store's ``aggregates`` table (migration 010),
against a real embedded ClickHouse (chDB) in tmp_path; no Kafka needed."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures.store import StoreMessage
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import default_dir, load, migrate
from monitoring.sinks.clickhouse.rows import AGGREGATE_COLUMNS, series_id
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.no_broker
CODEC = AvroCodec.from_directory()
NOW = int(time.time() * 1000) // 10_000 * 10_000
COUNTERS = ("first", "increase", "resets")


def record(start: int, series: str) -> dict[str, Any]:
    return {
        "series": series, "name": "req_total", "labels": {}, "window_ms": 10_000,
        "window_start_ms": start, "window_end_ms": start + 10_000, "count": 3, "sum": 30.0,
        "min": 5.0, "max": 15.0, "mean": 10.0, "last": 15.0, "p50": 10.0, "p90": 15.0,
        "p99": 15.0, "closed_by": "watermark",
    }  # fmt: skip


class Consumer:
    def commit(self, asynchronous: bool = True) -> None:
        pass


def test_counter_columns_land_and_v1_rows_are_null(
    chdb_client: Any, chdb_settings: Settings
) -> None:
    store = Store(
        chdb_settings, Writer(chdb_client, StoreMetrics(CollectorRegistry())), Consumer(), CODEC
    )
    v2 = {**record(NOW, "req_total"), "first": 5.0, "increase": 17.5, "resets": 1}
    v1 = record(NOW, "old_total")
    store.handle(StoreMessage(CODEC.encode("monitoring.Aggregate", v2), NOW))
    store.handle(StoreMessage(CODEC.encode("monitoring.Aggregate", v1, version=1), NOW))
    store.flush_and_commit()
    got = {
        r[0]: tuple(r[1:])
        for r in chdb_client.query(
            "SELECT series_id, first, increase, resets, last FROM aggregates FINAL"
        ).result_rows
    }
    assert got == {
        series_id("req_total"): (5.0, 17.5, 1, 15.0),
        series_id("old_total"): (None, None, None, 15.0),
    }
    # the sum of a counter's window increases, as a dashboard computes it
    total = chdb_client.query(
        "SELECT sum(increase) FROM aggregates FINAL WHERE name = 'req_total'"
    ).result_rows
    assert total == [(17.5,)]


def test_rows_stored_before_migration_010_read_as_null(
    chdb_settings: Settings, tmp_path: Path
) -> None:
    before = tmp_path / "migrations_009"
    before.mkdir()
    for path in sorted(default_dir().glob("*.sql")):
        if int(path.name[:3]) <= 9:
            shutil.copy(path, before / path.name)
    client = connect(chdb_settings.storage.dsn)
    try:
        assert len(migrate(client, chdb_settings.storage, before)) == 9
        old_columns = [c for c in AGGREGATE_COLUMNS if c not in COUNTERS]
        rec = record(NOW, "req_total")
        row = [series_id("req_total"), "req_total", "req_total", {}, 10_000, NOW, NOW + 10_000,
               3, 30.0, 5.0, 15.0, 10.0, 15.0, 10.0, 15.0, 15.0, rec["closed_by"], 1]  # fmt: skip
        client.insert("aggregates", [row], column_names=old_columns)
        ran = migrate(client, chdb_settings.storage)  # 001-009 unchanged: 010 and later run
        assert (ran[0].version, ran[0].name) == (10, "aggregate_counters")
        assert [m.version for m in ran] == list(range(10, len(load()) + 1))
        got = client.query("SELECT first, increase, resets, last FROM aggregates FINAL")
        assert [tuple(r) for r in got.result_rows] == [(None, None, None, 15.0)]
    finally:
        client.close()


def _final_rows(client: Any) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in client.query(
            "SELECT series_id, window_ms, toUnixTimestamp64Milli(window_start), last, version, "
            "increase FROM aggregates FINAL ORDER BY series_id, window_ms, window_start"
        ).result_rows
    ]


def _sorting_key(client: Any) -> str:
    return str(
        client.query(
            "SELECT sorting_key FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'aggregates'"
        ).result_rows[0][0]
    )


def test_a_store_from_before_migration_012_keeps_its_windows_and_gets_the_key(
    chdb_settings: Settings, tmp_path: Path
) -> None:
    before = tmp_path / "migrations_011"
    before.mkdir()
    for path in sorted(default_dir().glob("*.sql")):
        if int(path.name[:3]) <= 11:
            shutil.copy(path, before / path.name)
    client = connect(chdb_settings.storage.dsn)
    try:
        assert [m.version for m in migrate(client, chdb_settings.storage, before)][-1] == 11
        assert _sorting_key(client) == "series_id, window_ms, window_start"
        rows = []
        for sid in (7, 3):
            for w in (10_000, 60_000):
                for k in range(3):
                    start = NOW - 3_600_000 + k * w
                    rows.append([sid, f"s{sid}", "req_total", {}, w, start, start + w, 1,
                                 1.0, 1.0, 1.0, 1.0, float(k), 1.0, 1.0, 1.0, "watermark", 1,
                                 None, float(k) if w == 10_000 else None, None])  # fmt: skip
        # one window re-emitted (version 2 wins) and a replayed duplicate (same version)
        again = list(rows[0])
        again[12], again[17] = 99.0, 2
        client.insert("aggregates", [*rows, again, list(rows[1])], column_names=AGGREGATE_COLUMNS)
        expected = _final_rows(client)
        assert len(expected) == 12
        assert next(r[3:5] for r in expected if r[0] == 7) == (99.0, 2)  # the later version
        ran = migrate(client, chdb_settings.storage)
        assert (ran[0].version, ran[0].name) == (12, "aggregates_window_key")
        assert _sorting_key(client) == "window_ms, series_id, window_start"
        tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
        assert "aggregates_rekeyed" not in tables
        assert _final_rows(client) == expected
        client.command("OPTIMIZE TABLE aggregates FINAL")  # merged: the same windows
        assert _final_rows(client) == expected
        assert client.query("SELECT count() FROM aggregates").result_rows[0][0] == 12
        assert migrate(client, chdb_settings.storage) == []
    finally:
        client.close()


def test_a_new_store_has_the_window_size_first_in_the_key(chdb_client: Any) -> None:
    assert _sorting_key(chdb_client) == "window_ms, series_id, window_start"
