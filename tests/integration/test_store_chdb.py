"""The store against a real embedded ClickHouse (chDB) in tmp_path; no Kafka needed.

chDB serves one data directory per process at a time: every fixture here closes its
clients, and the store's own process is run as a subprocess where it must hold the
directory (the query tests).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures.store import StoreMessage
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.sinks.clickhouse.connection import connect_read_only
from monitoring.sinks.clickhouse.footprint import storage_footprint
from monitoring.sinks.clickhouse.migrations import load as load_migrations
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.query_server import QueryFailed, QueryServer, query_store
from monitoring.sinks.clickhouse.rows import series_id
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
NOW = int(time.time() * 1000) // 10_000 * 10_000
REPO = Path(__file__).resolve().parents[2]


def aggregate(start: int, mean: float, series: str = 'lat{svc="a"}') -> dict[str, Any]:
    return {
        "series": series, "name": "lat", "labels": {"svc": "a"}, "window_ms": 10_000,
        "window_start_ms": start, "window_end_ms": start + 10_000, "count": 5, "sum": 5 * mean,
        "min": mean, "max": mean, "mean": mean, "last": mean, "p50": mean, "p90": mean,
        "p99": mean, "closed_by": "watermark",
    }  # fmt: skip


def agg_msg(start: int, mean: float, emitted: int) -> StoreMessage:
    return StoreMessage(CODEC.encode("monitoring.Aggregate", aggregate(start, mean)), emitted)


def batch_msg(points: list[tuple[int, float]], name: str = "cpu") -> StoreMessage:
    rec = {
        "source": "t", "series": [f'{name}{{host="h"}}'], "kinds": ["GAUGE"],
        "units": ["percent"],
        "series_index": [0] * len(points), "timestamps_ms": [t for t, _ in points],
        "values": [v for _, v in points],
    }  # fmt: skip
    return StoreMessage(CODEC.encode("monitoring.MetricBatch", rec), NOW)


class Consumer:
    """Commits can be made to fail, like a crash between insert and commit."""

    def __init__(self, crash_on_commit: bool = False) -> None:
        self.crash_on_commit = crash_on_commit
        self.commits = 0

    def commit(self, asynchronous: bool = True) -> None:
        if self.crash_on_commit:
            raise SystemExit("killed before commit")
        self.commits += 1


def new_store(chdb_settings: Settings, chdb_client: Any, consumer: Any) -> Store:
    return Store(
        chdb_settings, Writer(chdb_client, StoreMetrics(CollectorRegistry())), consumer, CODEC
    )


def rows(chdb_client: Any, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in chdb_client.query(sql).result_rows]


def test_migrations_create_tables_once(chdb_client: Any, chdb_settings: Settings) -> None:
    tables = {r[0] for r in rows(chdb_client, "SHOW TABLES")}
    assert {
        "series", "samples", "aggregates", "anomalies", "deliveries", "logs", "log_templates",
        "schema_migrations",
    } <= tables  # fmt: skip
    assert migrate(chdb_client, chdb_settings.storage) == []
    assert rows(chdb_client, "SELECT count() FROM schema_migrations") == [(len(load_migrations()),)]
    ddl = rows(chdb_client, "SELECT create_table_query FROM system.tables WHERE name = 'samples'")
    assert "toIntervalSecond(604800)" in ddl[0][0] and "ReplacingMergeTree" in ddl[0][0]


def test_crash_between_insert_and_commit_is_invisible(
    chdb_client: Any, chdb_settings: Settings
) -> None:
    msgs = [agg_msg(NOW - 60_000 + 10_000 * i, float(i), NOW + i) for i in range(5)]
    msgs.append(batch_msg([(NOW - 30_000 + 10_000 * i, 50.0 + i) for i in range(3)]))
    crashed = new_store(chdb_settings, chdb_client, Consumer(crash_on_commit=True))
    for m in msgs:
        crashed.handle(m)
    with pytest.raises(SystemExit):
        crashed.flush_and_commit()  # rows are in ClickHouse, offsets are not committed
    replay = new_store(chdb_settings, chdb_client, Consumer())  # a restarted store re-reads them
    for m in msgs:
        replay.handle(m)
    replay.flush_and_commit()
    assert rows(chdb_client, "SELECT count() FROM aggregates") == [(10,)]  # physically twice
    assert rows(chdb_client, "SELECT count() FROM aggregates FINAL") == [(5,)]
    assert rows(chdb_client, "SELECT count() FROM samples FINAL") == [(3,)]
    # one series row per series (samples define series; aggregates carry their labels)
    assert rows(chdb_client, "SELECT count() FROM series") == [(2,)]
    got = rows(chdb_client, "SELECT name, kind, unit, toUnixTimestamp64Milli(first_seen) "
                       "FROM series FINAL")  # fmt: skip
    assert got == [("cpu", "GAUGE", "percent", NOW - 30_000)]


def test_last_emitted_version_of_a_window_wins(chdb_client: Any, chdb_settings: Settings) -> None:
    store = new_store(chdb_settings, chdb_client, Consumer())
    start = NOW - 20_000
    store.handle(agg_msg(start, 1.0, emitted=NOW + 1))
    store.flush_and_commit()
    store.handle(agg_msg(start, 2.0, emitted=NOW + 5))  # re-emitted with late data
    store.handle(agg_msg(start, 0.5, emitted=NOW + 3))  # an older emission replayed late
    store.flush_and_commit()
    sid = series_id('lat{svc="a"}')
    assert rows(
        chdb_client, f"SELECT mean, version FROM aggregates FINAL WHERE series_id = {sid}"
    ) == [(2.0, NOW + 5)]


def test_duplicate_samples_collapse(chdb_client: Any, chdb_settings: Settings) -> None:
    store = new_store(chdb_settings, chdb_client, Consumer())
    points = [(NOW - 10_000 * i, float(i)) for i in range(10)]
    for _ in range(3):
        store.handle(batch_msg(points))
        store.flush_and_commit()
    assert rows(chdb_client, "SELECT count() FROM samples") == [(30,)]
    assert rows(chdb_client, "SELECT count(), sum(value) FROM samples FINAL") == [(10, 45.0)]
    chdb_client.command("OPTIMIZE TABLE samples FINAL")
    assert rows(chdb_client, "SELECT count() FROM samples") == [(10,)]
    assert rows(chdb_client, "SELECT count() FROM series FINAL") == [(1,)]


def scraped_day(n_series: int, jitter_ms: int = 0, seed: int = 7) -> tuple[Any, Any, Any]:
    """n_series scraped every 10 s for a day: a third counters (small integer steps),
    a third CPU-like gauges (random walk, 1-2 decimals), a third memory bytes."""
    rng = np.random.default_rng(seed)
    n_points = 8640
    sids = np.array([series_id(f'm{{i="{i}"}}') for i in range(n_series)], dtype=np.uint64)
    phase = rng.integers(0, 10_000, (n_series, 1))
    ts = NOW - 86_400_000 + phase + np.arange(n_points)[None, :] * 10_000
    if jitter_ms:
        ts = ts + rng.integers(0, jitter_ms + 1, ts.shape)
    k = n_series // 3
    vals = np.empty((n_series, n_points))
    vals[:k] = rng.integers(0, 10**6, (k, 1)) + np.cumsum(rng.poisson(3, (k, n_points)), axis=1)
    cpu = np.clip(50 + np.cumsum(rng.normal(0, 0.45, (k, n_points)), axis=1), 0, 100)
    dec = np.where(rng.random((k, 1)) < 0.5, 1, 2)
    vals[k : 2 * k] = np.round(cpu * 10.0**dec) / 10.0**dec
    m = n_series - 2 * k
    steps = rng.integers(-50, 60, (m, n_points)) * 4096 * (rng.random((m, n_points)) < 0.3)
    vals[2 * k :] = rng.integers(10**8, 10**10, (m, 1)) // 4096 * 4096 + np.cumsum(steps, axis=1)
    return np.repeat(sids, n_points), ts.ravel(), vals.ravel()


@pytest.mark.slow
def test_bytes_per_sample_of_regular_scrapes(chdb_client: Any) -> None:
    sids, ts, vals = scraped_day(300)
    chdb_client.insert("samples", [sids.tolist(), ts.tolist(), vals.tolist()],
                  column_names=["series_id", "ts", "value"], column_oriented=True)  # fmt: skip
    fp = storage_footprint(chdb_client, optimize=True)
    print("footprint", json.dumps(fp))
    assert fp["tables"]["samples"]["rows"] == 300 * 8640
    assert fp["bytes_per_sample"] <= 1.3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_endpoint_answers_select_rejects_insert(
    chdb_client: Any, chdb_settings: Settings
) -> None:
    registry = CollectorRegistry()
    store = new_store(chdb_settings, chdb_client, Consumer())
    store.handle(agg_msg(NOW - 10_000, 3.0, NOW))
    store.flush_and_commit()
    q = connect_read_only(chdb_settings.storage.dsn)  # a second handle on the same directory
    server = QueryServer(q, registry, "127.0.0.1", 0, store.health).start()
    base = "http://{}:{}".format(*server.address)
    try:
        host, port = server.address
        body = query_store(host, port, "SELECT series, mean, window_start FROM aggregates")
        assert body is not None and body["columns"] == ["series", "mean", "window_start"]
        assert body["rows"][0][:2] == ['lat{svc="a"}', 3.0]
        with pytest.raises(QueryFailed, match="only SELECT"):
            query_store(host, port, "INSERT INTO samples VALUES (1, now(), 1)")
        with pytest.raises(QueryFailed, match="nowhere"):
            query_store(host, port, "SELECT nope FROM nowhere")
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            assert json.loads(r.read())["status"] == "ok"
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            assert r.status == 200
    finally:
        server.stop()
        q.close()
    assert rows(chdb_client, "SELECT count() FROM samples") == [(0,)]


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "from monitoring.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_query_cli_goes_through_the_running_store(
    chdb_client: Any, chdb_settings: Settings, tmp_path: Path
) -> None:
    store = new_store(chdb_settings, chdb_client, Consumer())
    for i in range(3):
        store.handle(agg_msg(NOW - 10_000 * (i + 1), float(i), NOW))
    store.flush_and_commit()
    chdb_client.close()  # hand the directory over to the store process
    port = free_port()
    env = {**os.environ, "MONITORING_STORAGE__DSN": chdb_settings.storage.dsn,
           "MONITORING_STORAGE__QUERY_PORT": str(port),
           "MONITORING_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",  # no broker: still serves
           "PYTHONPATH": str(REPO)}  # fmt: skip
    env.pop("MONITORING_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from monitoring.cli import main; main()", "store", "run"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:  # refused, reset, or a read timed out on a loaded machine
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "store did not start"
                time.sleep(0.2)
        out = cli(["query", "--format", "json"], env, tmp_path)  # the directory is locked:
        assert out.returncode == 0, out.stderr  # only the store can answer
        assert [r["mean"] for r in json.loads(out.stdout)] == [0.0, 1.0, 2.0]
        out = cli(
            ["query", "SELECT count() AS n FROM aggregates FINAL", "-f", "tsv"], env, tmp_path
        )
        assert out.stdout.split() == ["n", "3"]
        out = cli(["query", "DROP TABLE aggregates"], env, tmp_path)
        assert out.returncode == 1 and "not allowed" in out.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = cli(["query", "--series", 'lat{svc="a"}', "-f", "tsv"], env, tmp_path)  # direct
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 4


def test_retention_of_deliveries_and_anomalies(chdb_client: Any, chdb_settings: Settings) -> None:
    from datetime import timedelta

    from monitoring.sinks.clickhouse.migrations import apply_retention

    def ddl(table: str) -> str:
        q = f"SELECT create_table_query FROM system.tables WHERE name = '{table}'"
        return str(rows(chdb_client, q)[0][0])

    assert f"toIntervalSecond({90 * 86_400})" in ddl("deliveries")  # set by migrate
    assert f"toIntervalSecond({30 * 86_400})" in ddl("anomalies")
    retention = chdb_settings.storage.retention.model_copy(update={"aggregates": timedelta(days=9)})
    changed = apply_retention(
        chdb_client, chdb_settings.storage.model_copy(update={"retention": retention})
    )
    assert {"aggregates", "anomalies"} <= set(changed) and "deliveries" not in changed
    assert f"toIntervalSecond({9 * 86_400})" in ddl("anomalies")
