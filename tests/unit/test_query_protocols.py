"""The store's query protocols mounted on its API server, in-process: ClickHouse's
``/ping`` and Prometheus's build info, behind the same guard as ``POST /query``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.query import clickhouse_http, prometheus_api
from monitoring.sinks.clickhouse.query_server import QueryServer

TOKEN = "t0ken-for-tests"


@pytest.fixture
def base() -> Iterator[str]:
    server = QueryServer(
        client=Any,  # type: ignore[arg-type]  # these routes never reach the engine
        registry=CollectorRegistry(),
        host="127.0.0.1",
        port=0,
        guard=Guard.for_bind("127.0.0.1", token=TOKEN),
        protocols=[clickhouse_http.routes, prometheus_api.routes],
    ).start()
    yield "http://{}:{}".format(*server.address)
    server.stop()


def test_ping_answers_as_a_clickhouse_server_without_credentials(base: str) -> None:
    r = httpx.get(f"{base}/ping")  # load balancers probe it as they probe ClickHouse's
    assert (r.status_code, r.text) == (200, "Ok.\n")
    assert httpx.get(f"{base}/ping", headers={"Host": "evil.example"}).status_code == 421


def test_buildinfo_has_prometheus_shape(base: str) -> None:
    r = httpx.get(f"{base}/api/v1/status/buildinfo", headers={"Authorization": f"Bearer {TOKEN}"})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success"
    assert body["data"]["version"] == prometheus_api.PROMETHEUS_VERSION


@pytest.mark.parametrize("path", ["/api/v1/status/buildinfo", "/?query=SELECT+1"])
def test_mounted_routes_are_behind_the_guard(base: str, path: str) -> None:
    assert httpx.get(f"{base}{path}").status_code == 401
    assert httpx.get(f"{base}{path}", headers={"Host": "evil.example"}).status_code == 421
