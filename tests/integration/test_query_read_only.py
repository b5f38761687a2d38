"""The store's read-only SQL path against a real chDB: what users may run, and a table
of hostile statements that must each be refused with nothing written and nothing read
from outside the database, in-process and through the HTTP endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitoring.config import QueryLimits, Settings
from monitoring.sinks.clickhouse.connection import connect_read_only
from monitoring.sinks.clickhouse.query_server import QueryFailed, QueryServer, query_store
from monitoring.sinks.clickhouse.read_only import NotReadOnly, ReadOnlyQueries, jsonable

SECRET = "s3cr3t-canary-7f1e"
LIMITS = QueryLimits(timeout="2s", max_result_rows=1000, max_result_bytes=1 << 20)


@pytest.fixture
def world(tmp_path: Path, chdb_client: Any, chdb_settings: Settings) -> Iterator[dict[str, Any]]:
    """A migrated store with rows, a secret file beside it, and a read-only handle."""
    chdb_client.command(
        "INSERT INTO series (series_id, series, name, labels) "
        "SELECT number, concat('s', toString(number)), 'm', map() FROM numbers(3)"
    )
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    q = connect_read_only(chdb_settings.storage.dsn)
    yield {"client": chdb_client, "q": q, "dir": tmp_path, "secret": secret}
    q.close()


ALLOWED = [
    "SELECT 1",
    " select 1 ;",
    "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
    "SHOW TABLES",
    "DESCRIBE samples",
    "EXISTS TABLE samples",
    "SHOW CREATE TABLE samples",
    "EXPLAIN SELECT 1",
    "-- a comment\nSELECT ';' AS semicolon",
    "(SELECT 1)",
    "SELECT count() FROM series FINAL",
    "SELECT number FROM numbers(5)",
    "SELECT 1 UNION ALL SELECT 2",
    "SELECT 'INTO OUTFILE' AS text",
    "SELECT `file` FROM (SELECT 1 AS `file`)",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_read_only_statements_run(world: dict[str, Any], sql: str) -> None:
    result = ReadOnlyQueries(world["q"], LIMITS).run(sql)
    assert result["columns"]


def test_rows_come_back_as_json_values(world: dict[str, Any]) -> None:
    out = ReadOnlyQueries(world["q"], LIMITS).run(
        "SELECT series_id, series FROM series ORDER BY series_id"
    )
    assert out["columns"] == ["series_id", "series"]
    assert out["rows"] == [[0, "s0"], [1, "s1"], [2, "s2"]]


# {secret}: a file outside the database; {out}: a path nothing may create.
HOSTILE = [
    ("file read", "SELECT * FROM file('{secret}', 'LineAsString')"),
    ("file read, upper case", "SELECT * FROM FILE('{secret}', 'LineAsString')"),
    ("file read, scalar", "SELECT file('{secret}')"),
    ("file read in WITH", "WITH file('{secret}') AS f SELECT f"),
    (
        "file read in subquery",
        "SELECT * FROM numbers(1) WHERE 1 IN (SELECT length(line) "
        "FROM file('{secret}', 'LineAsString'))",
    ),
    (
        "file read in JOIN",
        "SELECT * FROM numbers(1) AS a JOIN file('{secret}', 'LineAsString') AS b ON 1 = 1",
    ),
    ("url fetch", "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')"),
    ("remote", "SELECT * FROM remote('127.0.0.1:9000', system.one)"),
    ("remoteSecure", "SELECT * FROM remoteSecure('127.0.0.1:9440', system.one)"),
    ("s3", "SELECT * FROM s3('http://127.0.0.1:9/b/k', 'CSV')"),
    ("executable", "SELECT * FROM executable('id', 'TSV', 'x String')"),
    ("mysql", "SELECT * FROM mysql('127.0.0.1:3306', 'd', 't', 'u', 'p')"),
    ("postgresql", "SELECT * FROM postgresql('127.0.0.1:5432', 'd', 't', 'u', 'p')"),
    ("input", "SELECT * FROM input('x String')"),
    ("file write", "SELECT 1 INTO OUTFILE '{out}'"),
    ("file write, truncate", "SELECT 1 INTO OUTFILE '{out}' TRUNCATE"),
    ("file write, parenthesised", "(SELECT 1) INTO OUTFILE '{out}'"),
    ("file write from SHOW", "SHOW TABLES INTO OUTFILE '{out}'"),
    ("file write from DESCRIBE", "DESCRIBE samples INTO OUTFILE '{out}'"),
    ("file write from EXPLAIN", "EXPLAIN SELECT 1 INTO OUTFILE '{out}'"),
    ("file write after comment", "SELECT 1 /* x */ INTO /* y */ OUTFILE '{out}'"),
    ("settings override", "SELECT 1 SETTINGS readonly = 0"),
    ("settings raise limits", "SELECT * FROM numbers(10) SETTINGS max_result_rows = 100000000"),
    ("multi-statement", "SELECT 1; DROP TABLE series"),
    ("multi-statement, backtick trick", "SELECT `;` FROM (SELECT 1 AS `;`); DROP TABLE series"),
    ("multi-statement, string trick", "SELECT ';'; INSERT INTO series (series_id) VALUES (9)"),
    ("unclosed comment swallowing settings", "SELECT * FROM series /*"),
    ("line comment swallowing the limits", "SELECT number FROM numbers(5000) --"),
    ("insert", "INSERT INTO series (series_id) VALUES (9)"),
    ("insert select", "INSERT INTO series (series_id) SELECT 9"),
    ("drop", "DROP TABLE series"),
    ("truncate", "TRUNCATE TABLE series"),
    ("alter delete", "ALTER TABLE series DELETE WHERE 1"),
    ("create file table", "CREATE TABLE x (s String) ENGINE = File(LineAsString, '{secret}')"),
    ("set", "SET readonly = 0"),
    ("system", "SYSTEM SHUTDOWN"),
    ("kill", "KILL QUERY WHERE 1"),
    ("grant", "GRANT ALL ON *.* TO default"),
    ("optimize", "OPTIMIZE TABLE series FINAL"),
    ("explain of an insert", "EXPLAIN SYNTAX INSERT INTO series (series_id) VALUES (9)"),
    ("explain reading a file", "EXPLAIN SYNTAX SELECT file('{secret}')"),
    ("huge result", "SELECT number FROM numbers(100000000)"),
    ("huge bytes", "SELECT repeat('x', 10000) FROM numbers(1000)"),
    ("slow query", "SELECT sum(cityHash64(number)) FROM numbers(100000000000)"),
    ("format override", "SELECT 1 FORMAT TabSeparated"),
    ("empty", "  ;  "),
    ("NUL byte", "SELECT 1\0"),
    ("over the size limit", "SELECT '" + "x" * 70_000 + "'"),
]


def _fill(sql: str, world: dict[str, Any]) -> str:
    return sql.replace("{secret}", str(world["secret"])).replace(
        "{out}", str(world["dir"] / "written.txt")
    )


def _unchanged(world: dict[str, Any]) -> None:
    assert not (world["dir"] / "written.txt").exists()
    c = world["client"]
    assert c.query("SELECT count() FROM series").result_rows == [(3,)]
    assert c.query("EXISTS TABLE x").result_rows == [(0,)]


@pytest.mark.parametrize(("what", "sql"), HOSTILE, ids=[w for w, _ in HOSTILE])
def test_hostile_statement_is_refused(world: dict[str, Any], what: str, sql: str) -> None:
    with pytest.raises(Exception) as info:
        ReadOnlyQueries(world["q"], LIMITS).run(_fill(sql, world))
    message = str(info.value)
    assert message and SECRET not in message
    _unchanged(world)


@pytest.mark.parametrize(("what", "sql"), HOSTILE, ids=[w for w, _ in HOSTILE])
def test_hostile_statement_is_refused_over_http(world: dict[str, Any], what: str, sql: str) -> None:
    server = QueryServer(world["q"], CollectorRegistry(), "127.0.0.1", 0, limits=LIMITS).start()
    try:
        host, port = server.address
        with pytest.raises(QueryFailed) as info:
            query_store(host, port, _fill(sql, world), timeout=30)
        assert SECRET not in str(info.value)
    finally:
        server.stop()
    _unchanged(world)


def test_refusals_say_why(world: dict[str, Any]) -> None:
    q = ReadOnlyQueries(world["q"], LIMITS)
    reasons = {
        "SELECT * FROM file('x')": "function file is not allowed",
        "SELECT 1 INTO OUTFILE 'x'": "INTO OUTFILE is not allowed",
        "SELECT 1 SETTINGS max_threads = 1": "SETTINGS clauses are not allowed",
        "SELECT 1; SELECT 2": "Multi-statements are not allowed",
        "DROP TABLE series": "only SELECT, SHOW",
    }
    for sql, reason in reasons.items():
        with pytest.raises(NotReadOnly, match=reason):
            q.canonical(sql)


def test_engine_limits_hold(world: dict[str, Any]) -> None:
    q = ReadOnlyQueries(world["q"], LIMITS)
    with pytest.raises(Exception, match="Limit for result exceeded"):
        q.run("SELECT number FROM numbers(5000)")
    with pytest.raises(Exception, match="Timeout exceeded"):
        q.run("SELECT sum(cityHash64(number)) FROM numbers(100000000000)")
    with pytest.raises(Exception, match="Limit for result exceeded"):
        q.run("SELECT repeat('x', 10000) FROM numbers(1000)")


def test_query_queue_is_bounded(world: dict[str, Any]) -> None:
    """With every slot and queue place taken, a query is answered 503 at once."""
    limits = LIMITS.model_copy(update={"concurrency": 1, "queue": 0})
    server = QueryServer(world["q"], CollectorRegistry(), "127.0.0.1", 0, limits=limits)
    server.slots.acquire()  # a query is running
    server.waiting = 1
    code, body = server._post_query(b'{"sql": "SELECT 1"}')
    assert code == 503 and "try again later" in body["error"]


def test_http_store_queries_use_their_own_dsn() -> None:
    """``storage.query_dsn`` (a read-only user) is what the query path opens, not ``dsn``."""
    from monitoring.cli import query as cli_query

    s = Settings.load(None)
    st = s.storage.model_copy(
        update={"dsn": "http://writer:w@127.0.0.1:9/", "query_dsn": "http://reader:r@127.0.0.1:9/"}
    )
    opened: list[str] = []

    def fake_connect(dsn: str, limits: Any = None) -> Any:
        opened.append(dsn)
        raise RuntimeError("no server here")

    import monitoring.sinks.clickhouse.connection as conn

    original = conn.connect_read_only
    conn.connect_read_only = fake_connect  # type: ignore[assignment]
    try:
        with pytest.raises(RuntimeError):
            cli_query.direct(s.model_copy(update={"storage": st}), "SELECT 1")
    finally:
        conn.connect_read_only = original  # type: ignore[assignment]
    assert opened == ["http://reader:r@127.0.0.1:9/"]


def test_jsonable_values() -> None:
    import datetime as dt

    assert jsonable({"t": dt.datetime(2024, 1, 1), "n": float("nan")}) == {
        "t": "2024-01-01T00:00:00",
        "n": None,
    }


def test_gate_parameters_bind_only_to_placeholders(world: dict[str, Any]) -> None:
    gate = ReadOnlyQueries(world["q"], LIMITS)
    evil = "'; DROP TABLE default.series; SELECT '"
    assert gate.canonical("SELECT '%(x)s'", {"x": evil}) == "SELECT '%(x)s'"
    assert gate.canonical("SELECT {x:String}", {"x": evil}) == "SELECT {x:String}"
    assert world["client"].query("SELECT count() FROM series").result_rows == [(3,)]
