"""Store pieces without ClickHouse or Kafka: migrations, rows, read-only checks, the loop."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from prometheus_client import CollectorRegistry

from monitoring.config import RetentionSettings, Settings, StorageSettings
from monitoring.metrics.samples import Sample
from monitoring.sinks.clickhouse import migrations
from monitoring.sinks.clickhouse.connection import chdb_path
from monitoring.sinks.clickhouse.rows import (
    AGGREGATE_COLUMNS,
    SAMPLE_COLUMNS,
    SERIES_COLUMNS,
    Columns,
    SeriesIds,
    add_aggregate,
    add_samples,
    series_id,
)
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()


# -- migrations -------------------------------------------------------------------
def test_migrations_are_ordered_and_named() -> None:
    migs = migrations.load()
    assert [m.version for m in migs] == sorted(m.version for m in migs)
    assert [m.name for m in migs][:3] == ["series", "samples", "aggregates"]


def test_migration_files_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "010_b.sql").write_text("SELECT 2;")
    (tmp_path / "002_c.sql").write_text("SELECT 3;")
    assert [m.version for m in migrations.load(tmp_path)] == [1, 2, 10]
    (tmp_path / "01_dup.sql").write_text("SELECT 4;")
    with pytest.raises(ValueError, match="version 1"):
        migrations.load(tmp_path)
    (tmp_path / "01_dup.sql").unlink()
    (tmp_path / "oops.sql").write_text("")
    with pytest.raises(ValueError, match="NNN_name"):
        migrations.load(tmp_path)


class RebuildLock:
    mark = "/* migration-lock:t */"

    def check(self) -> None:
        pass


class RebuildClient:
    """Answers the rebuild's queries: one insert running at the swap, then none."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.running = ["q1"]

    def command(self, sql: str, parameters: Any = None) -> None:
        self.commands.append(sql.split("\n")[1].split(" (")[0][:40])

    def query(self, sql: str, parameters: Any = None) -> Any:
        class R:
            result_rows: list[tuple[Any, ...]] = []

        r = R()
        if "FROM system.tables" in sql:
            r.result_rows = [(1 if parameters["t"] == "samples" else 0,)]
        elif "FROM system.parts" in sql:
            r.result_rows = [("all_1_1_0",)]
        elif "FROM system.columns" in sql:
            r.result_rows = [("series_id",), ("ts",), ("value",)]
        elif "query_kind = 'Insert'" in sql:
            r.result_rows = [("q1",)]
        elif "query_id IN" in sql:
            r.result_rows = [(q,) for q in self.running]
            self.running = []
        return r


def test_the_rebuilds_copy_late_rows_after_the_swap_and_before_the_drop() -> None:
    """008 and 012 are the rebuilds; the catch-up runs between EXCHANGE and DROP, after
    the inserts running at the swap ended."""
    from monitoring.sinks.clickhouse.rebuild import Rebuild

    p = migrations.params(StorageSettings())
    swaps = {m.version: migrations.rebuilt(m.statements(p)) for m in migrations.load()}
    assert {v: s for v, s in swaps.items() if s} == {
        8: ("samples", "samples_rekeyed"),
        12: ("aggregates", "aggregates_rekeyed"),
    }
    client = RebuildClient()
    mig = next(m for m in migrations.load() if m.version == 8)
    Rebuild(client, RebuildLock(), "samples", "samples_rekeyed").run(mig.statements(p))  # type: ignore[arg-type]
    assert client.commands == [
        "DROP TABLE IF EXISTS samples_rekeyed",
        "CREATE TABLE samples_rekeyed",
        "INSERT INTO samples_rekeyed SELECT serie",
        "EXCHANGE TABLES samples AND samples_reke",
        "INSERT INTO samples",
        "DROP TABLE samples_rekeyed",
    ]
    assert client.running == []  # it asked until the insert ended


def test_templates_take_retention_and_codec_from_settings() -> None:
    st = StorageSettings(retention=RetentionSettings(samples="2d", aggregates="90d"))
    sql = "\n".join(s for m in migrations.load() for s in m.statements(migrations.params(st)))
    assert "toIntervalSecond(172800)" in sql and "toIntervalSecond(7776000)" in sql
    assert "CODEC(Delta, ZSTD(3))" in sql and "$" not in sql
    lz4 = StorageSettings(compression="lz4")
    sql = "\n".join(s for m in migrations.load() for s in m.statements(migrations.params(lz4)))
    assert "CODEC(Delta, LZ4)" in sql and "ZSTD" not in sql
    none = StorageSettings(compression="none")
    sql = "\n".join(s for m in migrations.load() for s in m.statements(migrations.params(none)))
    assert "CODEC(NONE)" in sql and "Delta" not in sql


def test_statements_split_and_comments_dropped() -> None:
    m = migrations.Migration(1, "x", "-- a comment; with a semicolon\nCREATE A;\n\nCREATE B\n;\n")
    assert m.statements({}) == ["CREATE A", "CREATE B"]


class FakeClient:
    """Records commands; answers schema_migrations from what was inserted, and the
    migration lock's tables from those created."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.recorded: list[list[Any]] = []
        self.locks: list[tuple[str, str]] = []

    def command(self, sql: str, **_: Any) -> None:
        self.commands.append(sql)
        if sql.startswith("CREATE TABLE schema_migrations_lock_"):
            self.locks.append((sql.split()[2], sql.rsplit("COMMENT '", 1)[1].rstrip("'")))

    def query(self, sql: str, **_: Any) -> Any:
        if "system.tables" in sql:
            rows: list[Any] = list(self.locks)
        elif "schema_migrations" in sql:
            rows = [(v, c) for v, _n, c in self.recorded]
        else:
            rows = []
        return type("R", (), {"result_rows": rows})()

    def insert(self, table: str, rows: list[list[Any]], **_: Any) -> None:
        if table == "schema_migrations":
            self.recorded.extend(rows)


def test_migrate_applies_once_and_refuses_edited_files(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE=Log;")
    (tmp_path / "002_b.sql").write_text("CREATE TABLE IF NOT EXISTS b (x UInt8) ENGINE=Log;")
    client: Any = FakeClient()
    ran = migrations.migrate(client, StorageSettings(), tmp_path)
    assert [m.version for m in ran] == [1, 2]
    assert migrations.migrate(client, StorageSettings(), tmp_path) == []
    (tmp_path / "002_b.sql").write_text("CREATE TABLE b2 (x UInt8) ENGINE=Log;")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        migrations.migrate(client, StorageSettings(), tmp_path)


# -- identity and rows ------------------------------------------------------------
def test_series_id_is_blake2b_64() -> None:
    key = 'cpu{host="a"}'
    expected = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    assert series_id(key) == expected
    assert series_id('cpu_usage{host="a"}') == 11714087398754349081  # pinned across versions
    assert 0 <= series_id(key) < 2**64 and series_id(key) != series_id('cpu{host="b"}')


def test_samples_become_columns_and_series_rows_once() -> None:
    ids, out, series = SeriesIds(), Columns(SAMPLE_COLUMNS), Columns(SERIES_COLUMNS)
    s1 = Sample('m{a="1"}', "m", {"a": "1"}, 1_000, 1.5, "COUNTER", "bytes")
    s2 = s1._replace(timestamp_ms=2_000, value=2.5)
    assert add_samples([s1, s2], ids, out, series) == 2
    sid = series_id('m{a="1"}')
    assert out.data == [[sid, sid], [1_000, 2_000], [1.5, 2.5]]
    assert len(series) == 1
    assert [c[0] for c in series.data] == [sid, 'm{a="1"}', "m", {"a": "1"}, "COUNTER",
                                           "bytes", 1_000, 2_000]  # fmt: skip
    add_samples([s1], ids, out, series)
    assert len(series) == 1 and len(out) == 3
    assert out.take()[0] == [sid] * 3 and len(out) == 0


def aggregate(start: int = 0, mean: float = 1.0, series: str = 'm{a="1"}') -> dict[str, Any]:
    return {
        "series": series, "name": "m", "labels": {"a": "1"}, "window_ms": 10_000,
        "window_start_ms": start, "window_end_ms": start + 10_000, "count": 3, "sum": 3 * mean,
        "min": mean, "max": mean, "mean": mean, "last": mean, "p50": mean, "p90": mean,
        "p99": mean, "closed_by": "watermark",
    }  # fmt: skip


def test_aggregate_row_has_every_schema_field() -> None:
    out = Columns(AGGREGATE_COLUMNS)
    add_aggregate(aggregate(20_000), 7, SeriesIds(), out)
    row = dict(zip(out.names, (c[0] for c in out.data), strict=True))
    fields = {f["name"] for f in CODEC.latest("monitoring.Aggregate").parsed["fields"]}
    renamed = {"window_start_ms": "window_start", "window_end_ms": "window_end"}
    assert {renamed.get(f, f) for f in fields} <= set(row)
    assert row["series_id"] == series_id('m{a="1"}') and row["version"] == 7
    assert row["window_start"] == 20_000 and row["window_end"] == 30_000


def test_chdb_paths() -> None:
    assert chdb_path("chdb:///.data/chdb") == Path(".data/chdb")
    assert chdb_path("chdb:///./x") == Path("x")
    assert chdb_path("chdb:///abs/dir") == Path("/abs/dir")
    assert chdb_path("chdb://memory") is None
    assert chdb_path("http://localhost:8123") is None


# -- the consume loop with fakes -------------------------------------------------------
class FakeMessage:
    """The parts of confluent_kafka.Message the store reads."""

    def __init__(self, value: bytes | None, topic: str = "t", ts: int = 1_000) -> None:
        self._value, self._topic, self._ts = value, topic, ts

    def error(self) -> None:
        return None

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return self._topic

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._ts


class FlakyClient:
    """Fails the first ``failures`` inserts, then records them."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.inserted: dict[str, int] = {}

    def insert(self, table: str, data: list[list[Any]], **_: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("clickhouse down")
        self.inserted[table] = self.inserted.get(table, 0) + len(data[0])


class FakeConsumer:
    def __init__(self) -> None:
        self.commits = 0
        self.paused = False

    def commit(self, asynchronous: bool = True) -> None:
        assert asynchronous is False
        self.commits += 1

    def assignment(self) -> list[int]:
        return [0]

    def pause(self, parts: list[int]) -> None:
        self.paused = True

    def resume(self, parts: list[int]) -> None:
        self.paused = False


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_store(client: Any, batch_size: int = 1000) -> tuple[Store, FakeConsumer, Clock, Any]:
    registry = CollectorRegistry()
    settings = Settings.load(None)
    settings = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"batch_size": batch_size})}
    )
    consumer, clock = FakeConsumer(), Clock()
    store = Store(settings, Writer(client, StoreMetrics(registry)), consumer, CODEC, clock)
    return store, consumer, clock, registry


def sample_msg(ts: int, value: float = 1.0, name: str = "cpu") -> FakeMessage:
    rec = {"name": name, "value": value, "timestamp_ms": ts, "labels": {"host": "a"},
           "kind": "GAUGE", "unit": "", "source": ""}  # fmt: skip
    return FakeMessage(CODEC.encode("monitoring.MetricSample", rec))


NOW = 1_700_000_000_000


def test_bad_events_are_counted_not_fatal() -> None:
    store, _, _, registry = make_store(FlakyClient())
    store.handle(FakeMessage(b"garbage-bytes-here"))
    store.handle(FakeMessage(None))  # a tombstone: the worker dead-letters it the same way
    store.handle(sample_msg(NOW, float("nan")))
    store.handle(sample_msg(NOW, name="bad name"))
    log = {"timestamp_ms": 1, "service": "a", "message": "m"}
    store.handle(FakeMessage(CODEC.encode("monitoring.LogRecord", log)))
    store.handle(sample_msg(NOW))
    assert store.writer.pending == 2  # one sample plus its series row
    for reason in ("bad-marker", "not-bytes", "non-finite-value", "bad-name", "unexpected-record"):
        value = registry.get_sample_value(
            "monitoring_store_invalid_events_total", {"reason": reason}
        )
        assert value == 1, reason


def test_flush_on_batch_size_or_interval() -> None:
    client = FlakyClient()
    store, consumer, clock, _ = make_store(client, batch_size=3)
    store.handle(sample_msg(NOW))
    assert not store.maybe_flush()
    clock.t = 1.5  # flush_interval is 1s
    assert store.maybe_flush()
    assert client.inserted == {"series": 1, "samples": 1} and consumer.commits == 1
    store.handle(sample_msg(NOW + 1))
    store.handle(sample_msg(NOW + 2))
    store.handle(sample_msg(NOW + 3))
    assert store.maybe_flush()  # batch_size reached without waiting
    assert client.inserted["samples"] == 4 and consumer.commits == 2


def test_insert_failure_backs_off_pauses_and_never_commits() -> None:
    client = FlakyClient(failures=2)
    store, consumer, clock, registry = make_store(client)
    store.handle(sample_msg(NOW))
    clock.t = 2.0
    assert not store.maybe_flush()
    assert consumer.commits == 0 and consumer.paused and store.health()["status"] == "degraded"
    clock.t = 2.1
    assert not store.maybe_flush()  # still backing off: no attempt
    clock.t = 2.6
    assert not store.maybe_flush()  # second failure, backoff doubles
    assert store.backoff == 1.0 and consumer.commits == 0
    clock.t = 3.7
    assert store.maybe_flush()
    assert consumer.commits == 1 and not consumer.paused and client.inserted["samples"] == 1
    assert registry.get_sample_value("monitoring_store_insert_failures_total",
                                     {"table": "series"}) == 2  # fmt: skip


def test_aggregate_version_is_the_message_timestamp() -> None:
    client = FlakyClient()
    store, _, _, _ = make_store(client)
    msg = FakeMessage(CODEC.encode("monitoring.Aggregate", aggregate(NOW)), ts=NOW + 42)
    store.handle(msg)
    buf = store.writer.buffers["aggregates"]
    assert buf.data[buf.names.index("version")] == [NOW + 42]
