"""The store's HTTP endpoint: read-only SQL, health and self-metrics.

chDB lets one process hold its directory, so the store (which holds it) answers
queries for everyone else: ``POST /query`` (SQL in the body) -> ``{"columns",
"types", "rows"}``; ``GET /healthz``; ``GET /metrics`` (Prometheus text format).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry

from monitoring.status_server import StatusServer

READ_ONLY = ("SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "WITH", "EXISTS")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


class NotReadOnly(ValueError):
    """The statement is not a single read-only query."""


def check_read_only(sql: str) -> str:
    """The statement without comments and trailing ``;``; raises NotReadOnly otherwise.

    >>> check_read_only("select 1;")
    'select 1'
    """
    stmt = _COMMENTS.sub(" ", sql).strip().rstrip(";").strip()
    if not stmt:
        raise NotReadOnly("empty query")
    if ";" in _strip_strings(stmt):
        raise NotReadOnly("one statement per request")
    first = stmt.split(None, 1)[0].upper().lstrip("(")
    if first not in READ_ONLY:
        raise NotReadOnly(f"{first} is not allowed: only {', '.join(READ_ONLY)} statements")
    return stmt


def _strip_strings(sql: str) -> str:
    return re.sub(r"'(?:[^'\\]|\\.)*'|`[^`]*`|\"[^\"]*\"", "''", sql)


def jsonable(value: Any) -> Any:
    """A JSON-friendly form of a ClickHouse value."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID | IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def run_query(client: Client, sql: str) -> dict[str, Any]:
    """Run a read-only query; the result as ``{columns, types, rows}``."""
    result = client.query(check_read_only(sql))
    return {
        "columns": list(result.column_names),
        "types": [t.name for t in result.column_types],
        "rows": [[jsonable(v) for v in row] for row in result.result_rows],
    }


class QueryServer:
    """The store's status server plus ``POST /query``, serialised on one client."""

    def __init__(
        self,
        client: Client,
        registry: CollectorRegistry,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"},
    ) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.server = StatusServer(registry, host, port, health, {"/query": self._post_query})

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def start(self) -> QueryServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def query(self, sql: str) -> dict[str, Any]:
        with self.lock:  # one chDB handle: one query at a time
            return run_query(self.client, sql)

    def _post_query(self, body: bytes) -> tuple[int, Any]:
        try:
            return 200, self.query(body.decode(errors="replace"))
        except NotReadOnly as e:
            return 403, {"error": str(e)}
        except Exception as e:
            return 400, {"error": str(e)}


class QueryFailed(RuntimeError):
    """The query was refused or failed; the message is for the user."""


def query_store(host: str, port: int, sql: str, timeout: float = 30.0) -> dict[str, Any] | None:
    """Ask a running store's ``POST /query``; None if no store answers there.

    Raises QueryFailed with the store's message when it refuses or fails the query.
    """
    req = urllib.request.Request(
        f"http://{host}:{port}/query",
        data=sql.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", str(e))
        except ValueError:
            msg = str(e)
        raise QueryFailed(msg) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
