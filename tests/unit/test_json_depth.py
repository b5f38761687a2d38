"""JSON nested past the parser's recursion limit: ``json.loads`` raises RecursionError,
not ValueError, so each parser of a body or an answer that caught only ValueError
answered 500 (a body sent to the store's ``POST /query``) or failed with a traceback (a
store's answer read by the UI or the query client). Each is a clean refusal now."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.query.client import StoreClient as QueryClient
from monitoring.query.client import StoreError as QueryError
from monitoring.sinks.clickhouse.query_server import QueryServer
from monitoring.ui.store import StoreClient, StoreError

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def query_server() -> Iterator[str]:
    server = QueryServer(
        client=Any,  # type: ignore[arg-type]  # the body is refused before the engine
        registry=CollectorRegistry(),
        host="127.0.0.1",
        port=0,
        guard=Guard.for_bind("127.0.0.1"),
    ).start()
    yield "http://{}:{}".format(*server.address)
    server.stop()


def test_the_store_s_query_route_refuses_a_deep_body_with_a_400(query_server: str) -> None:
    r = httpx.post(f"{query_server}/query", content=DEEP,
                   headers={"content-type": "application/json"}, timeout=30)  # fmt: skip
    assert r.status_code == 400, (r.status_code, r.text)
    assert "JSON" in r.json()["error"]


def test_a_deep_store_answer_is_a_store_error_in_the_ui() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=DEEP))
    client = StoreClient("http://store", transport=transport)

    async def main() -> None:
        with pytest.raises(StoreError):
            await client.prometheus("query", {"query": "up"})
        with pytest.raises(StoreError):
            await client.sql("SELECT 1", {}, 10)
        assert (await client.health())["status"] == "unreachable"

    asyncio.run(main())


def test_a_deep_store_answer_is_a_store_error_in_the_query_client() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=DEEP))
    http = httpx.Client(base_url="http://store", transport=transport)
    with QueryClient("http://store", http=http) as client:
        with pytest.raises(QueryError):
            client.query("up", 0)
        with pytest.raises(QueryError):
            client.sql("SELECT 1")


def test_the_notifier_api_refuses_a_deep_body_as_a_bad_request() -> None:
    from monitoring.agents.notifier import _json_object

    with pytest.raises(ValueError, match="nested too deep"):
        _json_object(DEEP)


def test_a_deep_ledger_entry_is_unreadable_not_a_crash() -> None:
    """4 KB of ``[`` on the replay ledger (anyone who can write the topic) raised
    RecursionError out of every ``dlq replay``'s ledger read."""
    from monitoring.ops.dlq_kafka import _entry

    class Message:
        def value(self) -> bytes:
            return b"[" * 4096

    assert _entry(Message()) == {"state": "unreadable"}
