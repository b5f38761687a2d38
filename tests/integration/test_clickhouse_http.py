"""ClickHouse's HTTP interface on the store, with the clients people use: clickhouse-
connect's HTTP client (unmodified), curl, and a second store forwarding to the first
as it forwards to a ClickHouse server. A real chDB store in a temporary directory, the
QueryServer in-process; one test runs `monitoring store run` itself."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import lz4.frame
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from fixtures.agents import wait_for
from fixtures.notify import free_port
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.config import QueryLimits, Settings
from monitoring.query import clickhouse_http
from monitoring.sinks.clickhouse.connection import connect_read_only
from monitoring.sinks.clickhouse.query_server import QueryServer

TOKEN = "ch-t0ken"
# clickhouse-connect reads system.settings (about 1,900 rows) when it connects.
LIMITS = QueryLimits(timeout="3s", max_result_rows=10_000, max_result_bytes=4 << 20)
REPO = Path(__file__).resolve().parents[2]
SELECT = "SELECT series_id, toString(series) AS series FROM series ORDER BY series_id"


def serve(client: Any, limits: QueryLimits = LIMITS) -> QueryServer:
    guard = Guard.for_bind("127.0.0.1", token=TOKEN, max_body_bytes=256 * 1024)
    return QueryServer(
        client, CollectorRegistry(), "127.0.0.1", 0, limits=limits, guard=guard,
        protocols=[clickhouse_http.routes],
    ).start()  # fmt: skip


@pytest.fixture
def store(tmp_path: Path, chdb_client: Any, chdb_settings: Settings) -> Iterator[dict[str, Any]]:
    """A migrated chDB store with three series, served on a port; a secret beside it."""
    chdb_client.command(
        "INSERT INTO series (series_id, series, name, labels) "
        "SELECT number, concat('s', toString(number)), 'm', map() FROM numbers(3)"
    )
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t\n")
    q = connect_read_only(chdb_settings.storage.dsn, LIMITS)
    server = serve(q)
    host, port = server.address
    yield {"server": server, "host": host, "port": port, "url": f"http://{host}:{port}/",
           "client": chdb_client, "dir": tmp_path, "secret": secret}  # fmt: skip
    server.stop()
    q.close()


def ch_client(store: dict[str, Any], **kw: Any) -> Any:
    return clickhouse_connect.get_client(
        host=store["host"], port=store["port"], username="default", password=TOKEN, **kw
    )


def curl(store: dict[str, Any], *args: str, auth: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Run curl; (status, lower-cased headers, body)."""
    head = store["dir"] / "headers.txt"
    cmd = ["curl", "-sS", "-D", str(head), "-o", "-", *(["-u", f"default:{TOKEN}"] if auth else [])]
    out = subprocess.run([*cmd, *args], capture_output=True, timeout=60, check=True).stdout
    lines = head.read_bytes().decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    return status, headers, out


def unchanged(store: dict[str, Any]) -> None:
    c = store["client"]
    assert c.query("SELECT count() FROM series").result_rows == [(3,)]
    assert c.query("EXISTS TABLE x").result_rows == [(0,)]
    assert not (store["dir"] / "out.txt").exists()


# clickhouse-connect, unmodified


def test_clickhouse_connect_ordinary_calls(store: dict[str, Any]) -> None:
    c = ch_client(store)
    assert c.query(SELECT).result_rows == [(0, "s0"), (1, "s1"), (2, "s2")]
    assert c.query_df(SELECT)["series"].tolist() == ["s0", "s1", "s2"]
    table = c.query_arrow(SELECT)
    assert table.column("series_id").to_pylist() == [0, 1, 2]
    assert c.query_np("SELECT series_id FROM series ORDER BY series_id").tolist() == [[0], [1], [2]]
    assert c.command("SELECT count() FROM series") == 3
    assert c.server_version and c.ping()


def test_clickhouse_connect_parameters_are_bound_by_the_engine(store: dict[str, Any]) -> None:
    c = ch_client(store)
    hostile = "s1' OR 1=1 --"
    sql = "SELECT series FROM series WHERE series = {s:String} OR series_id = {n:UInt64}"
    assert c.query(sql, parameters={"s": hostile, "n": 2}).result_rows == [("s2",)]
    assert c.query("SELECT {s:String}", parameters={"s": hostile}).result_rows == [(hostile,)]
    got = c.query("SELECT {a:Array(String)}", parameters={"a": ["x'y", "z"]}).result_rows
    assert got == [(["x'y", "z"],)]


@pytest.mark.parametrize(
    "sql", ["INSERT INTO series (series_id) VALUES (9)", "CREATE TABLE x (a UInt8) ENGINE = Memory",
            "DROP TABLE series", "SET readonly = 0", "ALTER TABLE series DELETE WHERE 1"],
)  # fmt: skip
def test_clickhouse_connect_command_is_refused_as_read_only(
    store: dict[str, Any], sql: str
) -> None:
    with pytest.raises(DatabaseError) as info:
        ch_client(store).command(sql)
    assert "Code: 164" in str(info.value) and "(READONLY)" in str(info.value)
    unchanged(store)


@pytest.mark.parametrize("compress", [True, "gzip", "lz4"])
def test_clickhouse_connect_with_compression(store: dict[str, Any], compress: Any) -> None:
    c = ch_client(store, compress=compress)
    assert c.query(SELECT).result_rows[2] == (2, "s2")
    assert len(c.query("SELECT number FROM numbers(5000)").result_rows) == 5000


def test_responses_are_compressed_when_asked(store: dict[str, Any]) -> None:
    auth = (("default", TOKEN),)
    q = {"query": "SELECT number FROM numbers(1000) FORMAT TSV"}
    plain = httpx.get(store["url"], params=q, auth=auth[0]).content
    r = httpx.get(store["url"], params=q, auth=auth[0], headers={"Accept-Encoding": "lz4"})
    assert r.headers["content-encoding"] == "lz4"
    assert lz4.frame.decompress(r.content) == plain
    r = httpx.get(store["url"], params=q, auth=auth[0], headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.content == plain  # httpx inflates
    off = httpx.get(store["url"], params={**q, "enable_http_compression": "0"}, auth=auth[0],
                    headers={"Accept-Encoding": "gzip"})  # fmt: skip
    assert "content-encoding" not in off.headers and off.content == plain
    body = gzip.compress(b"SELECT count() FROM series")
    r = httpx.post(store["url"], content=body, auth=auth[0], headers={"Content-Encoding": "gzip"})
    assert (r.status_code, r.text) == (200, "3\n")


# curl with each format


def _rowbinary(data: bytes, with_header: bool) -> list[tuple[int, str]]:
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    def string() -> str:
        nonlocal pos
        n = varint()
        pos += n
        return data[pos - n : pos].decode()

    if with_header:
        n = varint()
        header = [string() for _ in range(2 * n)]
        assert header == ["series_id", "series", "UInt64", "String"]
    out = []
    while pos < len(data):
        (sid,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        out.append((sid, string()))
    return out


ROWS = [(0, "s0"), (1, "s1"), (2, "s2")]
PARSERS = {
    "Native": lambda b: b.startswith(b"\x02\x03\x09series_id\x06UInt64"),
    "RowBinary": lambda b: _rowbinary(b, False) == ROWS,
    "RowBinaryWithNamesAndTypes": lambda b: _rowbinary(b, True) == ROWS,
    "JSON": lambda b: [(int(r["series_id"]), r["series"]) for r in json.loads(b)["data"]] == ROWS,
    "JSONCompact": lambda b: [(int(i), s) for i, s in json.loads(b)["data"]] == ROWS,
    "JSONEachRow": lambda b: (
        [(int(r["series_id"]), r["series"]) for r in map(json.loads, b.splitlines())] == ROWS
    ),
    "JSONCompactEachRow": lambda b: (
        [tuple(json.loads(x)) for x in b.splitlines()]
        in ([(0, "s0"), (1, "s1"), (2, "s2")], [("0", "s0"), ("1", "s1"), ("2", "s2")])
    ),
    "JSONCompactEachRowWithNamesAndTypes": lambda b: (
        json.loads(b.splitlines()[0]) == ["series_id", "series"]
    ),
    "TabSeparated": lambda b: (
        list(csv.reader(io.StringIO(b.decode()), delimiter="\t"))
        == [["0", "s0"], ["1", "s1"], ["2", "s2"]]
    ),
    "TabSeparatedWithNames": lambda b: (
        b.decode().splitlines()[0].split("\t") == ["series_id", "series"]
    ),
    "TSVWithNamesAndTypes": lambda b: b.decode().splitlines()[1] == "UInt64\tString",
    "CSV": lambda b: (
        list(csv.reader(io.StringIO(b.decode()))) == [["0", "s0"], ["1", "s1"], ["2", "s2"]]
    ),
    "CSVWithNames": lambda b: (
        list(csv.DictReader(io.StringIO(b.decode())))[2] == {"series_id": "2", "series": "s2"}
    ),
    "Parquet": lambda b: (
        pq.read_table(io.BytesIO(b)).column("series").to_pylist() == ["s0", "s1", "s2"]
    ),
    "Arrow": lambda b: (
        pa.ipc.open_file(io.BytesIO(b)).read_all().column("series_id").to_pylist() == [0, 1, 2]
    ),
    "ArrowStream": lambda b: pa.ipc.open_stream(io.BytesIO(b)).read_all().num_rows == 3,
}


@pytest.mark.parametrize("fmt", list(PARSERS))
def test_curl_each_format(store: dict[str, Any], fmt: str) -> None:
    status, headers, body = curl(
        store, "--get", store["url"], "--data-urlencode", f"query={SELECT} FORMAT {fmt}"
    )
    assert status == 200, body
    assert headers.get("x-clickhouse-format") == fmt, headers
    assert PARSERS[fmt](body), body[:300]
    summary = json.loads(headers["x-clickhouse-summary"])
    assert int(summary["read_rows"]) >= 3
    assert headers["x-clickhouse-timezone"] and headers["x-clickhouse-server-display-name"]
    assert headers["x-clickhouse-query-id"]
    binary = fmt in ("Native", "RowBinary", "RowBinaryWithNamesAndTypes", "Parquet", "Arrow",
                     "ArrowStream")  # fmt: skip
    assert ("octet-stream" in headers["content-type"]) == binary


def test_curl_query_in_body_default_format_database_and_query_id(store: dict[str, Any]) -> None:
    url = store["url"]
    status, headers, body = curl(
        store, f"{url}?default_format=JSONEachRow&database=default&query_id=q-1",
        "--data-binary", SELECT,
    )  # fmt: skip
    assert status == 200 and headers["x-clickhouse-query-id"] == "q-1"
    assert json.loads(body.splitlines()[0]) == {"series_id": 0, "series": "s0"}
    # the query in the URL and the rest in the body, as ClickHouse concatenates them
    _, _, body = curl(store, f"{url}?query=SELECT+count()", "--data-binary", "FROM series")
    assert body == b"3\n"
    assert curl(store, url)[2] == b"Ok.\n"
    assert curl(store, url.rstrip("/") + "/ping", auth=False)[2] == b"Ok.\n"  # a probe
    assert curl(store, url.rstrip("/") + "/ping")[2] == b"Ok.\n"
    status, headers, body = curl(store, f"{url}?database=system", "--data-binary", "SELECT 1")
    assert (status, headers["x-clickhouse-exception-code"]) == (403, "497")


def test_curl_query_parameters_cannot_inject(store: dict[str, Any]) -> None:
    url = store["url"]
    status, _, body = curl(
        store, "--get", url, "--data-urlencode", "query=SELECT {s:String} AS v FORMAT TSVRaw",
        "--data-urlencode", "param_s=x' UNION ALL SELECT file('/etc/passwd') --",
    )  # fmt: skip
    assert status == 200 and body == b"x' UNION ALL SELECT file('/etc/passwd') --\n"
    status, headers, body = curl(
        store, "--get", url, "--data-urlencode", "query=SELECT {n:UInt8}",
        "--data-urlencode", "param_n=1; DROP TABLE series",
    )  # fmt: skip
    assert (status, headers["x-clickhouse-exception-code"]) == (500, "457")  # as a server
    assert body.startswith(b"Code: 457. DB::Exception: Value 1; DROP TABLE series cannot be")
    status, _, body = curl(
        store, "--get", url, "--data-urlencode", "query=SELECT count() FROM {t:Identifier}",
        "--data-urlencode", "param_t=series",
    )  # fmt: skip
    assert body == b"3\n"
    unchanged(store)


# auth


def test_auth_the_way_clickhouse_clients_send_it(store: dict[str, Any]) -> None:
    url, q = store["url"], {"query": "SELECT 1"}
    r = httpx.get(url, params=q)
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (401, "194")
    assert r.text.startswith("Code: 194. DB::Exception:")
    r = httpx.get(url, params=q, auth=("default", "wrong"))
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (403, "516")
    assert httpx.get(url, params=q, auth=("default", TOKEN)).text == "1\n"
    assert httpx.get(url, params=q, auth=("grafana", TOKEN)).text == "1\n"
    key = {"X-ClickHouse-User": "default", "X-ClickHouse-Key": TOKEN}
    assert httpx.get(url, params=q, headers=key).text == "1\n"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(url, params=q, headers=bearer).text == "1\n"
    r = httpx.get(url, params={**q, "user": "default", "password": TOKEN})
    assert r.status_code == 401 and "not accepted in the URL" in r.text
    assert httpx.get(url.rstrip("/") + "/healthz").status_code == 200
    with pytest.raises(DatabaseError, match="516"):
        clickhouse_connect.get_client(
            host=store["host"], port=store["port"], username="default", password="nope"
        )


# hostile input

HOSTILE = [
    ("file()", "SELECT * FROM file('{secret}', 'LineAsString')", 497),
    ("url()", "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')", 497),
    ("remote()", "SELECT * FROM remote('127.0.0.1:9000', system.one)", 497),
    ("INTO OUTFILE", "SELECT 1 INTO OUTFILE '{out}'", 497),
    ("multi-statement", "SELECT 1; DROP TABLE series", 62),
    ("SETTINGS readonly=0", "SELECT 1 SETTINGS readonly = 0", 164),
    ("insert", "INSERT INTO series (series_id) VALUES (9)", 164),
    ("oversize", "SELECT '" + "x" * 70_000 + "'", 229),
]


@pytest.mark.parametrize(("what", "sql", "code"), HOSTILE, ids=[w for w, _, _ in HOSTILE])
def test_hostile_statements_are_refused(
    store: dict[str, Any], what: str, sql: str, code: int
) -> None:
    sql = sql.replace("{secret}", str(store["secret"])).replace(
        "{out}", str(store["dir"] / "out.txt")
    )
    status, headers, body = curl(store, store["url"], "--data-binary", sql)
    assert headers["x-clickhouse-exception-code"] == str(code), body
    assert status == {497: 403, 62: 400, 164: 500, 229: 413}[code]
    assert body.startswith(f"Code: {code}. DB::Exception:".encode()) and b"s3cr3t" not in body
    unchanged(store)


@pytest.mark.parametrize(
    ("param", "code"),
    [("readonly=0", 164), ("max_threads=64", 164), ("output_format_schema=/tmp/x.capnp", 164),
     ("allow_ddl=1", 164), ("compress=1", 48)],
)  # fmt: skip
def test_url_settings_cannot_loosen_anything(store: dict[str, Any], param: str, code: int) -> None:
    status, headers, _ = curl(store, f"{store['url']}?{param}", "--data-binary", "SELECT 1")
    assert headers["x-clickhouse-exception-code"] == str(code)
    assert status == (501 if code == 48 else 500)


def test_limits_hold_whatever_the_url_asks(store: dict[str, Any]) -> None:
    url = store["url"]
    many = "SELECT number FROM numbers(20000)"
    status, headers, body = curl(store, f"{url}?max_result_rows=100000000", "--data-binary", many)
    assert headers["x-clickhouse-exception-code"] == "396" and b"max rows" in body
    # a lower limit is the user's to choose
    status, headers, _ = curl(
        store, f"{url}?max_result_rows=10", "--data-binary", "SELECT number FROM numbers(11)"
    )
    assert headers["x-clickhouse-exception-code"] == "396"
    big = "SELECT repeat('x', 100000) FROM numbers(60)"  # 6 MB in one block
    status, headers, body = curl(store, url, "--data-binary", big)
    assert headers["x-clickhouse-exception-code"] == "396", body[:200]
    slow = "SELECT sum(cityHash64(number)) FROM numbers(100000000000)"
    status, headers, _ = curl(store, f"{url}?max_execution_time=100000", "--data-binary", slow)
    assert (status, headers["x-clickhouse-exception-code"]) == (408, "159")
    # allowed output settings take effect
    fmt = "output_format_json_quote_64bit_integers=1&default_format=JSONEachRow"
    _, _, body = curl(store, f"{url}?{fmt}", "--data-binary", "SELECT toUInt64(7) AS n")
    assert json.loads(body) == {"n": "7"}
    (store["dir"] / "big.sql").write_text("x" * 300_000)
    status, headers, body = curl(store, url, "--data-binary", f"@{store['dir'] / 'big.sql'}")
    assert status == 413 and headers["x-clickhouse-exception-code"] == "229"


def test_a_full_queue_answers_503(
    tmp_path: Path, chdb_client: Any, chdb_settings: Settings
) -> None:
    limits = LIMITS.model_copy(update={"concurrency": 1, "queue": 0})
    q = connect_read_only(chdb_settings.storage.dsn, limits)
    server = serve(q, limits)
    url = "http://{}:{}/".format(*server.address)
    slow: dict[str, Any] = {}

    def run_slow() -> None:
        slow["r"] = httpx.post(url, content="SELECT sleepEachRow(0.5) FROM numbers(4)",
                               auth=("default", TOKEN), timeout=30)  # fmt: skip

    t = threading.Thread(target=run_slow)
    try:
        t.start()
        wait_for(lambda: server.waiting >= 1, 10, "the slow query to hold the slot")
        r = httpx.post(url, content="SELECT 1", auth=("default", TOKEN))
        assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (503, "202")
        t.join(30)
        assert slow["r"].status_code == 200
    finally:
        t.join(30)
        server.stop()
        q.close()


# an http ClickHouse DSN: statements forwarded to the server, its bytes passed through


def test_forwarding_to_a_clickhouse_server(store: dict[str, Any]) -> None:
    """The first store plays the ClickHouse server; the second store's read-only client
    is clickhouse-connect's HTTP client to it, as with ``storage.query_dsn = http://``."""
    upstream = ch_client(store)
    front = serve(upstream)
    try:
        host, port = front.address
        c = clickhouse_connect.get_client(host=host, port=port, username="u", password=TOKEN)
        assert c.query(SELECT).result_rows == ROWS
        assert c.query("SELECT {s:String}", parameters={"s": "a'b"}).result_rows == [("a'b",)]
        assert c.query_arrow(SELECT).num_rows == 3
        with pytest.raises(DatabaseError, match="Code: 164"):
            c.command("DROP TABLE series")
        r = httpx.get(f"http://{host}:{port}/", auth=("u", TOKEN),
                      params={"query": f"{SELECT} FORMAT Parquet"})  # fmt: skip
        assert pq.read_table(io.BytesIO(r.content)).num_rows == 3
        sql = f"SELECT * FROM file('{store['secret']}', 'LineAsString')"
        r = httpx.post(f"http://{host}:{port}/", content=sql, auth=("u", TOKEN))
        assert r.headers["x-clickhouse-exception-code"] == "497"
    finally:
        front.stop()
        upstream.close()
    unchanged(store)


# the store process itself


def test_store_run_answers_clickhouse_connect(
    chdb_client: Any, chdb_settings: Settings, tmp_path: Path
) -> None:
    chdb_client.command(
        "INSERT INTO series (series_id, series, name, labels) VALUES (7, 's7', 'm', map())"
    )
    chdb_client.close()  # hand the directory over to the store process
    port = free_port()
    env = {**os.environ, "MONITORING_STORAGE__DSN": chdb_settings.storage.dsn,
           "MONITORING_STORAGE__QUERY_PORT": str(port), "MONITORING_API__TOKEN": TOKEN,
           "MONITORING_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",  # no broker: still serves
           "PYTHONPATH": str(REPO)}  # fmt: skip
    env.pop("MONITORING_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from monitoring.cli import main; main()", "store", "run"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            return httpx.get(f"http://127.0.0.1:{port}/ping", auth=("d", TOKEN)).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 60, "the store's query port")
        c = clickhouse_connect.get_client(host="127.0.0.1", port=port, password=TOKEN)
        assert c.query("SELECT series FROM series WHERE series_id = 7").result_rows == [("s7",)]
        with pytest.raises(DatabaseError, match="READONLY"):
            c.command("DROP TABLE series")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_engine_itself_runs_read_only(store: dict[str, Any], chdb_settings: Settings) -> None:
    """Past the gate, the handle's settings still forbid writes and setting changes."""
    from monitoring.query.clickhouse_exec import (
        ChdbEngine,
        ChRequest,
        ClickHouseError,
        query_settings,
    )

    engine = ChdbEngine(str(chdb_settings.storage.dsn).removeprefix("chdb://"))
    settings = query_settings({}, LIMITS)
    writes = ["CREATE TABLE x (a UInt8) ENGINE = Memory", "SET max_result_rows = 0",
              "INSERT INTO series (series_id) VALUES (9)"]  # fmt: skip
    for sql in writes:
        with pytest.raises(ClickHouseError) as info:
            engine.run(sql, settings, "TabSeparated", ChRequest())
        assert info.value.code == 164
    got = engine.run("SELECT getSetting('max_result_rows'), getSetting('readonly')", settings,
                     "TSV", ChRequest())  # fmt: skip
    assert got.body == b"10000\t1\n"
    unchanged(store)


def test_a_setting_name_cannot_carry_statements(store: dict[str, Any]) -> None:
    """A URL key goes into SET's text: one that is not a plain known name is refused (it
    once ran the statements after its `;` before readonly=1)."""
    out = store["dir"] / "out.txt"
    key = (
        "output_format_json_quote_64bit_integers = '1'; CREATE TABLE default.x ENGINE=Memory "
        f"AS SELECT * FROM file('{store['secret']}', 'LineAsString'); INSERT INTO FUNCTION "
        f"file('{out}', 'LineAsString') SELECT 'pwned'; DROP TABLE default.series; "
        "SET output_format_json_quote_denormals"
    )
    for k in (key, "output_format_schema ", "output_format_some_future_file_setting"):
        url = f"{store['url']}?{urllib.parse.urlencode({k: '1', 'query': 'SELECT 1'})}"
        status, headers, _ = curl(store, url)
        assert headers["x-clickhouse-exception-code"] in ("36", "164"), k
        assert status in (400, 500)
    unchanged(store)


def test_parameters_are_never_spliced_into_the_text(store: dict[str, Any]) -> None:
    """Without a {name:Type} placeholder, a param_ value once went into the gate's own
    EXPLAIN by clickhouse-connect's %(name)s formatting, and ran."""
    evil = "'; DROP TABLE default.series; SELECT '"
    url = f"{store['url']}?{urllib.parse.urlencode({'param_x': evil})}"
    status, _, body = curl(store, url, "--data-binary", "SELECT '%(x)s', 5 % 2")
    assert (status, body) == (200, b"%(x)s\t1\n")
    unchanged(store)
