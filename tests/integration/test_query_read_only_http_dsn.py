"""Issue 13, finding 1, through an http DSN's code path: the read-only gate with
clickhouse-connect's HTTP client (what ``storage.query_dsn = http://...`` opens) refuses
the whole hostile table of ``test_query_read_only`` with nothing written and nothing
read from outside the database, and still runs the allowed statements. No ClickHouse
server is installed here, so the server is a chDB store behind the real QueryServer
(its own gate stands behind the client's, as a read-only user's profile would). That
server runs ``system.settings`` read-only, so clickhouse-connect, which checks each
per-query setting against it on the client side, would refuse the gate's limits as
"readonly" before sending anything; a ClickHouse server's ``readonly=2`` user (what
docs/security.md asks for) may change them, so the client is told to send them
(``invalid_setting_action = send``) and the server decides. Then such a user on the
engine itself, and the engine's memory limit, which the table does not reach."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect import common
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.config import QueryLimits, Settings
from monitoring.promql import Matcher
from monitoring.query import clickhouse_http
from monitoring.query.source import StoreSource
from monitoring.sinks.clickhouse.connection import connect, connect_read_only
from monitoring.sinks.clickhouse.query_server import QueryServer
from monitoring.sinks.clickhouse.read_only import ReadOnlyQueries

from .test_query_read_only import ALLOWED, HOSTILE, LIMITS, SECRET

pytestmark = [pytest.mark.no_broker]
TOKEN = "http-dsn-t0ken"
# clickhouse-connect reads system.settings (about 1,900 rows) when it connects
NOT_SELECT = {"SHOW", "DESCRIBE", "EXISTS", "EXPLAIN"}
SERVER_LIMITS = QueryLimits(timeout="3s", max_result_rows=10_000, max_result_bytes=4 << 20)


@pytest.fixture
def world(tmp_path: Path, chdb_client: Any, chdb_settings: Settings) -> Iterator[dict[str, Any]]:
    """A chDB store with rows served as a ClickHouse server, a secret file beside it,
    and a read-only client to it over HTTP, as an http ``storage.query_dsn`` gives."""
    chdb_client.command(
        "INSERT INTO series (series_id, series, name, labels) "
        "SELECT number, concat('s', toString(number)), 'm', map() FROM numbers(3)"
    )
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    upstream = connect_read_only(chdb_settings.storage.dsn, SERVER_LIMITS)
    guard = Guard.for_bind("127.0.0.1", token=TOKEN, max_body_bytes=256 * 1024)
    server = QueryServer(upstream, CollectorRegistry(), "127.0.0.1", 0, limits=SERVER_LIMITS,
                         guard=guard, protocols=[clickhouse_http.routes]).start()  # fmt: skip
    host, port = server.address
    action = common.get_setting("invalid_setting_action")
    common.set_setting("invalid_setting_action", "send")
    q = connect_read_only(f"http://reader:{TOKEN}@{host}:{port}/", LIMITS)
    try:
        yield {"client": chdb_client, "q": q, "dir": tmp_path}
    finally:
        common.set_setting("invalid_setting_action", action)
        q.close()
        server.stop()
        upstream.close()


def fill(sql: str, world: dict[str, Any]) -> str:
    return sql.replace("{secret}", str(world["dir"] / "secret.txt")).replace(
        "{out}", str(world["dir"] / "written.txt")
    )


def test_the_hostile_table_is_refused_through_an_http_dsn(world: dict[str, Any]) -> None:
    gate = ReadOnlyQueries(world["q"], LIMITS)
    assert type(world["q"]).__name__ == "HttpClient"
    # the path works, so the refusals below are not a broken client; the store as a
    # server refuses the gate's EXPLAIN AST of SHOW, DESCRIBE... (its own gate): SELECTs
    selects = [s for s in ALLOWED if s.split()[0].upper() not in NOT_SELECT]
    assert len(selects) >= 10
    for sql in selects:
        assert gate.run(sql)["columns"], sql
    passed, leaked = [], []
    for what, sql in HOSTILE:
        try:
            gate.run(fill(sql, world))
        except Exception as e:  # each must fail, with whatever error
            if SECRET in str(e):
                leaked.append(what)
        else:
            passed.append(what)
    assert not passed and not leaked, (passed, leaked)
    assert not (world["dir"] / "written.txt").exists()
    c = world["client"]
    assert c.query("SELECT count() FROM series").result_rows == [(3,)]
    assert c.query("EXISTS TABLE x").result_rows == [(0,)]


def test_the_memory_limit_holds(chdb_client: Any, chdb_settings: Settings) -> None:
    """``storage.query.max_memory_bytes`` stops a query that would hold more."""
    q = connect_read_only(chdb_settings.storage.dsn, LIMITS)
    try:
        small = ReadOnlyQueries(q, LIMITS.model_copy(update={"max_memory_bytes": 16 << 20}))
        with pytest.raises(Exception, match=r"[Mm]emory limit"):
            small.run("SELECT length(groupArray(number)) FROM numbers(5000000)")
        # the same statement under the default limit runs
        assert ReadOnlyQueries(q, LIMITS).run(
            "SELECT length(groupArray(number)) FROM numbers(5000000)"
        )["rows"] == [[5_000_000]]
    finally:
        q.close()


def test_a_read_only_user_of_the_server_gets_the_limits_and_is_refused_writes(
    chdb_client: Any, chdb_settings: Settings, tmp_path: Path
) -> None:
    """A ``readonly=2`` user (what docs/security.md asks of ``storage.query_dsn``) may
    set the limits but not ``readonly`` itself, even to 1: the gate's settings followed
    the user, or every query failed. The engine session here is what such a user gets."""
    chdb_client.command(
        "INSERT INTO series (series_id, series, name, labels) "
        "SELECT number, concat('s', toString(number)), 'm', map() FROM numbers(3)"
    )
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    user = connect(chdb_settings.storage.dsn, readonly=2)
    try:
        gate = ReadOnlyQueries(user, LIMITS)
        assert gate.run("SELECT count() FROM series")["rows"] == [[3]]
        assert "readonly" not in gate.settings  # the user's own readonly=2 holds
        with pytest.raises(Exception, match="Limit for result exceeded"):
            gate.run("SELECT number FROM numbers(5000)")
        for what, sql in HOSTILE:
            with pytest.raises(Exception) as info:
                gate.run(fill(sql, {"dir": tmp_path}))
            assert SECRET not in str(info.value), what
        with pytest.raises(Exception, match=r"READONLY|readonly"):  # past the gate, the engine
            user.command("INSERT INTO series (series_id) VALUES (9)", settings=gate.settings)
    finally:
        user.close()
    assert chdb_client.query("SELECT count() FROM series").result_rows == [(3,)]
    assert not (tmp_path / "written.txt").exists()


def test_the_prometheus_sources_reads_follow_a_read_only_user(
    chdb_client: Any, chdb_settings: Settings
) -> None:
    """The PromQL source's sample reads put their settings in the statement and added
    ``readonly=1``: a ``readonly=2`` user's every range query failed there too."""
    chdb_client.command(
        "INSERT INTO series (series_id, series, name, labels, first_seen, last_seen) "
        "VALUES (1, 'm', 'm', map(), now64(3) - 60, now64(3))"
    )
    chdb_client.command("INSERT INTO samples (series_id, ts, value) VALUES (1, now64(3) - 30, 7)")
    user = connect(chdb_settings.storage.dsn, readonly=2)
    try:
        now = int(time.time() * 1000) + 1_000
        source = StoreSource(user, ReadOnlyQueries(user, LIMITS).settings, now_ms=now)
        [series] = source.select([Matcher("__name__", "=", "m")], now - 3_600_000, now)
        assert series.labels == {"__name__": "m"} and list(series.values) == [7.0]
    finally:
        user.close()
