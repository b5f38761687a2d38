"""The store's HTTP endpoint: read-only SQL, health and self-metrics.

chDB lets one process hold its directory, so the store (which holds it) answers
queries for everyone else: ``POST /query`` with ``{"sql": "..."}`` (JSON, so that a
cross-site form cannot send it) -> ``{"columns", "types", "rows"}``; ``GET /healthz``;
``GET /metrics``. Statements go through :class:`ReadOnlyQueries`; at most
``storage.query.concurrency`` run at once and ``storage.query.queue`` more wait, the
rest are answered 503 at once. Each of ``protocols`` adds the routes of a standard
query protocol (``monitoring.query``) served from the same port, on the same queue.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry, Counter
from starlette.routing import BaseRoute

from monitoring.api.guard import Guard
from monitoring.api.server import ApiServer
from monitoring.config import QueryLimits
from monitoring.sinks.clickhouse.read_only import NotReadOnly, ReadOnlyQueries

T = TypeVar("T")


class Busy(RuntimeError):
    """Every query slot and queue place is taken."""


Protocol = Callable[["QueryServer"], list[BaseRoute]]


class QueryServer:
    """The store's API server plus ``POST /query`` over a bounded queue."""

    def __init__(
        self,
        client: Client,
        registry: CollectorRegistry,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"},
        limits: QueryLimits | None = None,
        guard: Guard | None = None,
        protocols: Sequence[Protocol] = (),
    ) -> None:
        self.client = client
        self.limits = limits or QueryLimits()
        self.queries = ReadOnlyQueries(client, self.limits)
        self.slots = threading.BoundedSemaphore(self.limits.concurrency)
        self.lock = threading.Lock()
        self.waiting = 0
        self.outcomes = Counter(
            "monitoring_store_queries", "Read-only queries by outcome", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.server = ApiServer(
            registry,
            host,
            port,
            health,
            {"/query": self._post_query},
            guard=guard,
            mounts=[route for protocol in protocols for route in protocol(self)],
        )

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def start(self) -> QueryServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def query(self, sql: str) -> dict[str, Any]:
        """Run one read-only statement; Busy when the queue is full."""
        return self.queued(lambda: self.queries.run(sql))

    def queued(self, fn: Callable[[], T]) -> T:
        """``fn()`` once a query slot is free; Busy when the queue is full."""
        with self.lock:
            if self.waiting >= self.limits.concurrency + self.limits.queue:
                raise Busy(f"{self.waiting} queries running or waiting: try again later")
            self.waiting += 1
        try:
            timeout = self.limits.timeout.total_seconds()
            if not self.slots.acquire(timeout=timeout):
                raise Busy(f"no query slot within {timeout:g}s: try again later")
            try:
                return fn()
            finally:
                self.slots.release()
        finally:
            with self.lock:
                self.waiting -= 1

    def _post_query(self, body: bytes) -> tuple[int, Any]:
        try:
            request = json.loads(body)
            sql = request["sql"] if isinstance(request, dict) else None
            if not isinstance(sql, str):
                raise ValueError
        except (ValueError, KeyError, RecursionError):  # RecursionError: nested too deep
            self.outcomes.labels("bad_request").inc()
            return 400, {"error": 'the body must be JSON {"sql": "<statement>"}'}
        try:
            result = 200, self.query(sql)
        except NotReadOnly as e:
            self.outcomes.labels("refused").inc()
            return 403, {"error": str(e)}
        except Busy as e:
            self.outcomes.labels("busy").inc()
            return 503, {"error": str(e)}
        except Exception as e:
            self.outcomes.labels("failed").inc()
            return 400, {"error": str(e).strip().split("\n")[0][:1000]}
        self.outcomes.labels("ok").inc()
        return result


class QueryFailed(RuntimeError):
    """The query was refused or failed; the message is for the user."""


def query_store(
    host: str, port: int, sql: str, timeout: float = 30.0, token: str = ""
) -> dict[str, Any] | None:
    """Ask a running store's ``POST /query``; None if no store answers there.

    Raises QueryFailed with the store's message when it refuses or fails the query.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.post(
            f"http://{host}:{port}/query", json={"sql": sql}, headers=headers, timeout=timeout
        )
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return None
    except httpx.HTTPError as e:
        raise QueryFailed(f"store at {host}:{port}: {e}") from None
    try:
        result: Any = resp.json()
    except ValueError:
        raise QueryFailed(f"store answered {resp.status_code}: {resp.text[:200]}") from None
    if resp.status_code != 200:
        msg = result.get("error") if isinstance(result, dict) else None
        raise QueryFailed(str(msg or f"store answered {resp.status_code}"))
    if not isinstance(result, dict):
        raise QueryFailed("store answered an unexpected shape")
    return result
