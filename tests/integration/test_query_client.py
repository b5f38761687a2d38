"""monitoring.query.client against the store's real query server on a chDB store.

The server is the store's own QueryServer with both protocols, in this process on an
ephemeral port, behind a guard with a token; the store has the Prometheus data set and
more (fixtures/viz_store.py). No Kafka broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from fixtures.viz_store import HOSTILE, HOUR, VizStore, served_viz_store
from pydantic import SecretStr

from monitoring.query.client import (
    StoreClient,
    StoreError,
    StoreUnavailable,
    local_store,
    open_store,
)

pytestmark = pytest.mark.no_broker
TOKEN = "client-t0ken-4411"
NOW_MS = int(time.time() * 1000) // HOUR * HOUR


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VizStore, str]]:
    with served_viz_store(tmp_path_factory.mktemp("client"), NOW_MS, TOKEN) as served:
        yield served


@pytest.fixture
def client(store: tuple[VizStore, str]) -> Iterator[StoreClient]:
    with StoreClient(store[1], TOKEN, timeout_s=30) as c:
        yield c


def test_query_range_gives_numpy_series(client: StoreClient) -> None:
    end = datetime.fromtimestamp(NOW_MS / 1000, UTC)
    got = client.query_range(
        'sum by (service) (rate(http_requests_total{status="500"}[5m]))',
        end - timedelta(hours=2), end, timedelta(minutes=1),
    )  # fmt: skip
    assert sorted(s.labels["service"] for s in got) == ["api", "checkout"]
    for s in got:
        assert s.t_ms.dtype == np.int64 and s.values.dtype == np.float64
        assert len(s.t_ms) == 121 and s.t_ms[0] == NOW_MS - 2 * HOUR and s.t_ms[-1] == NOW_MS
        assert np.all(np.diff(s.t_ms) == 60_000)
    checkout = next(s for s in got if s.labels["service"] == "checkout")
    api = next(s for s in got if s.labels["service"] == "api")
    assert checkout.values.mean() > 5 * api.values.mean()  # 2 % errors against 0.1 %


def test_instant_query_and_scalar(client: StoreClient) -> None:
    got = client.query("node_cpu_usage_percent", NOW_MS / 1000)
    assert sorted(s.labels["host"] for s in got) == ["node-0", "node-1", "node-2"]
    assert all(s.name == "node_cpu_usage_percent" and len(s.values) == 1 for s in got)
    assert all(0 <= s.values[0] <= 100 and s.t_ms[0] == NOW_MS for s in got)
    (scalar,) = client.query("1 + 2", NOW_MS / 1000)
    assert scalar.labels == {} and scalar.values.tolist() == [3.0]


def test_hostile_labels_come_back_verbatim(client: StoreClient) -> None:
    (s,) = client.query("hostile_gauge", NOW_MS / 1000)
    assert {k: v for k, v in s.labels.items() if k != "__name__"} == HOSTILE


def test_sql_with_bound_parameters(client: StoreClient) -> None:
    table = client.sql(
        "SELECT name, count() AS n FROM series FINAL WHERE name LIKE {p:String} "
        "GROUP BY name ORDER BY name",
        {"p": "node_%"},
    )
    assert table.columns == ["name", "n"] and table.types[1] == "UInt64"
    assert table.records() == [
        {"name": "node_cpu_usage_percent", "n": 3},
        {"name": "node_memory_used_bytes", "n": 3},
        {"name": "node_temperature_celsius", "n": 6},
    ]


def test_prometheus_errors_become_store_errors(client: StoreClient) -> None:
    with pytest.raises(StoreError) as e:
        client.query("sum(rate(x[5m]", NOW_MS / 1000)
    assert e.value.error_type == "bad_data" and e.value.status == 400
    assert "parse error" in str(e.value)
    with pytest.raises(StoreError) as e:
        client.query_range("up", NOW_MS / 1000 - 86_400 * 30, NOW_MS / 1000, 1)
    assert e.value.error_type == "bad_data" and "11,000 points" in str(e.value)


def test_sql_refusals_become_store_errors(client: StoreClient) -> None:
    with pytest.raises(StoreError) as e:
        client.sql("INSERT INTO series (series_id) VALUES (1)")
    assert e.value.error_type == "clickhouse" and "DB::Exception" in str(e.value)
    with pytest.raises(StoreError) as e:
        client.sql("SELECT nope FROM series")
    assert e.value.status >= 400 and "nope" in str(e.value)


def test_token_is_required(store: tuple[VizStore, str]) -> None:
    with StoreClient(store[1], "wrong") as c, pytest.raises(StoreError) as e:
        c.query("up")
    assert e.value.status == 401


def test_response_size_is_bounded(store: tuple[VizStore, str]) -> None:
    with StoreClient(store[1], TOKEN, max_response_bytes=4096) as c:
        assert c.query("1", NOW_MS / 1000)[0].values.tolist() == [1.0]
        with pytest.raises(StoreError, match="larger than 4096 bytes"):
            c.query_range("http_requests_total", NOW_MS / 1000 - 7200, NOW_MS / 1000, 15)


def test_no_store_is_unavailable() -> None:
    with StoreClient("http://127.0.0.1:1") as c, pytest.raises(StoreUnavailable):
        c.query("up")


def test_in_process_store_when_none_runs(store: tuple[VizStore, str]) -> None:
    viz = store[0]
    with local_store(viz.settings) as c:
        (s,) = c.query('up{instance="i0"}', NOW_MS / 1000)
        assert s.values.tolist() == [1.0]
        assert c.sql("SELECT count() FROM anomalies FINAL").rows == [[4]]


def test_open_store_prefers_the_running_one(store: tuple[VizStore, str]) -> None:
    viz, url = store
    settings = viz.settings.model_copy(
        update={"api": viz.settings.api.model_copy(update={"token": SecretStr(TOKEN)})}
    )
    with open_store(settings, url) as c:
        assert c.base_url == url
        assert c.sql("SELECT 1 AS one").rows == [[1]]


def test_parameter_values_arrive_as_they_are(client: StoreClient) -> None:
    """Strings, lists of strings and times bound as parameters come back unchanged:
    quotes, backslashes, tabs, newlines and non-ASCII text included."""
    hostile = ["a'b", 'c"d', "é ü 中", "x\\y", "tab\there", "line\nbreak", "]}", ""]
    table = client.sql(
        "SELECT {names:Array(String)} AS names, {one:String} AS one, {n:Array(Int64)} AS n",
        {"names": hostile, "one": hostile[0] + hostile[3] + hostile[5], "n": [1, -2]},
    )
    assert table.rows[0] == [hostile, hostile[0] + hostile[3] + hostile[5], [1, -2]]
    # an aware time is the instant it names, whatever its zone
    plus2 = datetime(2026, 1, 1, 2, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))
    table = client.sql("SELECT toString({t:DateTime64(3, 'UTC')})", {"t": plus2})
    assert table.rows[0][0] == "2026-01-01 00:00:00.250"


ZONED = """
import json, sys
from datetime import UTC, datetime
from monitoring.config import Settings
from monitoring.query.client import local_store
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate

settings = Settings.load(None)
migrate(connect(settings.storage.dsn), settings.storage)  # a store directory
with local_store(settings) as client:
    table = client.sql(
        "SELECT toUnixTimestamp64Milli({t:DateTime64(3)}), toString(toDateTime64(0, 3))",
        {"t": datetime(2026, 1, 1, tzinfo=UTC)},
    )
print(json.dumps(table.rows[0]))
"""


def test_sql_times_are_utc_whatever_the_stores_zone(tmp_path: Path) -> None:
    """A store process in Tokyo time (TZ is process-wide, hence a subprocess): a time
    bound as a parameter is still the UTC instant the client meant, and times print in
    UTC, as the reports' periods and plots' axes assume."""
    import json
    import os
    import subprocess
    import sys

    store_dir = tmp_path / "tokyo"
    env = {**os.environ, "TZ": "Asia/Tokyo", "MONITORING_STORAGE__DSN": f"chdb://{store_dir}"}
    done = subprocess.run(
        [sys.executable, "-c", ZONED, str(store_dir)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        1_767_225_600_000, "1970-01-01 00:00:00.000",
    ]  # fmt: skip
