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
import uuid
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

READ_ONLY = ("SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "WITH", "EXISTS")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
MAX_BODY = 1 << 20


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
    """ThreadingHTTPServer in a daemon thread; queries are serialised on one client."""

    def __init__(
        self,
        client: Client,
        registry: CollectorRegistry,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"},
    ) -> None:
        self.client = client
        self.registry = registry
        self.health = health
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="query-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> QueryServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def query(self, sql: str) -> dict[str, Any]:
        with self.lock:  # one chDB handle: one query at a time
            return run_query(self.client, sql)


def _handler(server: QueryServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode())

        def do_GET(self) -> None:
            if self.path == "/healthz":
                h = server.health()
                self._json(200 if h.get("status") == "ok" else 503, h)
            elif self.path == "/metrics":
                self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
            else:
                self._json(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/query":
                self._json(404, {"error": f"no such path {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(413, {"error": "query too large"})
                return
            sql = self.rfile.read(length).decode(errors="replace")
            try:
                self._json(200, server.query(sql))
            except NotReadOnly as e:
                self._json(403, {"error": str(e)})
            except Exception as e:
                self._json(400, {"error": str(e)})

    return Handler
