"""StoreClient against small in-process ASGI apps answering what a store, or a proxy in
front of one, may answer: odd shapes, oversized bodies, the error envelopes. (Against the
real store: tests/integration/test_query_client.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from urllib.parse import parse_qsl

import pytest
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from monitoring.api.server import ApiServer
from monitoring.query.client import StoreClient, StoreError, seconds, unix_s

SEEN: list[dict[str, str]] = []
MALFORMED = {
    "no values": [{"metric": {}}],
    "not a point": [{"metric": {}, "values": [["x", "1"]]}],
    "not an item": [1],
    "bad labels": [{"metric": [1], "values": []}],
}


async def query_range(request: Request) -> Response:
    form = dict(parse_qsl((await request.body()).decode()))
    SEEN.append(form | {"auth": request.headers.get("authorization", "")})
    if form["query"] == "proxy":
        return PlainTextResponse("<html>502 Bad Gateway</html>", 502)
    if form["query"] == "list":
        return JSONResponse([1, 2])
    if form["query"] == "string":
        return JSONResponse(
            {"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}
        )
    if form["query"] == "trickle":  # a byte at a time, each well inside the read timeout

        async def trickle() -> AsyncIterator[bytes]:
            for _ in range(150):
                yield b" "
                await asyncio.sleep(0.1)

        return StreamingResponse(trickle())
    if form["query"] in MALFORMED:
        return JSONResponse(
            {
                "status": "success",
                "data": {"resultType": "matrix", "result": MALFORMED[form["query"]]},
            }
        )
    if form["query"] == "long error":
        return JSONResponse(
            {"status": "error", "errorType": "bad_data", "error": "x" * 50_000}, 400
        )
    if form["query"] == "timeout":
        return JSONResponse(
            {"status": "error", "errorType": "timeout", "error": "query timed out"}, 503
        )
    return JSONResponse(
        {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"__name__": "up", "job": "a"}, "values": [[1.5, "1"], [2.5, "NaN"]]},
        ]}}
    )  # fmt: skip


async def sql(request: Request) -> Response:
    body = (await request.body()).decode()
    if body == "endless":

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(1000):
                yield b"x" * 1024

        return StreamingResponse(chunks())
    if body == "declared":
        return Response(b"{}", headers={"content-length": str(1 << 30)})
    if body == "broken":
        return PlainTextResponse("not json", 200)
    SEEN.append(dict(request.query_params))
    return JSONResponse({"meta": [{"name": "n", "type": "UInt64"}], "data": [[7]], "rows": 1})


ROUTES = [
    Route("/api/v1/query_range", query_range, methods=["POST"]),
    Route("/api/v1/query", query_range, methods=["POST"]),
    Route("/", sql, methods=["POST"]),
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    api = ApiServer(CollectorRegistry(), "127.0.0.1", 0, mounts=ROUTES).start()
    try:
        yield "http://{}:{}".format(*api.address)
    finally:
        api.stop()


@pytest.fixture
def client(server: str) -> Iterator[StoreClient]:
    SEEN.clear()
    with StoreClient(server, "tok", max_response_bytes=64 * 1024) as c:
        yield c


def test_matrix_and_request(client: StoreClient) -> None:
    (s,) = client.query_range("up", datetime.fromisoformat("2026-01-01T00:00:00+00:00"), 1.0e9,
                              timedelta(seconds=15))  # fmt: skip
    assert s.labels == {"__name__": "up", "job": "a"} and s.legend() == 'up{job="a"}'
    assert s.t_ms.tolist() == [1500, 2500] and s.values[0] == 1.0 and s.values[1] != s.values[1]
    assert SEEN[0] == {
        "query": "up", "start": "1767225600.000", "end": "1000000000.000", "step": "15.000",
        "auth": "Bearer tok",
    }  # fmt: skip


def test_error_shapes(client: StoreClient) -> None:
    with pytest.raises(StoreError, match="store answered 502") as e:
        client.query("proxy")
    assert e.value.status == 502
    with pytest.raises(StoreError, match="unexpected shape"):
        client.query("list")
    with pytest.raises(StoreError, match="a string"):
        client.query("string")
    with pytest.raises(StoreError, match="timed out") as e:
        client.query("timeout")
    assert e.value.error_type == "timeout" and e.value.status == 503


def test_sql_parameters_and_bounds(client: StoreClient) -> None:
    table = client.sql("SELECT {n:UInt8}", {"n": 7, "when": datetime(2026, 1, 2, 3, 4, 5),
                                            "names": ["a", "b"], "flag": True})  # fmt: skip
    assert table.rows == [[7]] and table.columns == ["n"]
    params = SEEN[-1]
    assert params["default_format"] == "JSONCompact"
    assert (params["param_n"], params["param_when"]) == ("7", "2026-01-02 03:04:05.000")
    assert (params["param_names"], params["param_flag"]) == ("['a', 'b']", "1")
    with pytest.raises(StoreError, match="larger than 65536 bytes"):
        client.sql("endless")
    with pytest.raises(StoreError, match="larger than 65536 bytes"):
        client.sql("declared")
    with pytest.raises(StoreError, match="unexpected shape"):
        client.sql("broken")


def test_times_and_steps_are_checked() -> None:
    with pytest.raises(ValueError, match="time zone"):
        unix_s(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        unix_s(float("nan"))
    with pytest.raises(ValueError, match="positive"):
        seconds(0)
    assert seconds(timedelta(minutes=1)) == 60.0


def test_malformed_answers_and_long_errors_are_store_errors(client: StoreClient) -> None:
    for query in MALFORMED:
        with pytest.raises(StoreError, match="unexpected"):
            client.query_range(query, 0, 60, 15)
    with pytest.raises(StoreError) as e:
        client.query("long error")
    assert e.value.error_type == "bad_data" and len(str(e.value)) <= 2000


def test_a_trickling_answer_is_cut_at_the_timeout(server: str) -> None:
    """Each byte arrives well inside the read timeout; the whole answer does not."""
    with StoreClient(server, "tok", timeout_s=1.0) as c:
        started = time.monotonic()
        with pytest.raises(StoreError, match="timed out") as e:
            c.query("trickle")
    assert e.value.error_type == "timeout" and time.monotonic() - started < 10


def test_a_shared_http_client_does_not_get_the_token(server: str) -> None:
    """The token goes with the store's requests only: a connection pool handed in (and
    used for other hosts too) is not given an Authorization header."""
    import httpx

    SEEN.clear()
    with httpx.Client() as shared:
        store = StoreClient(server, "tok", http=shared)
        store.query("up")
        assert "authorization" not in shared.headers
        assert SEEN[-1]["auth"] == "Bearer tok"
