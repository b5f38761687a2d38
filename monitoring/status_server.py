"""Health and self-metrics over HTTP for every long-running process.

``GET /healthz`` answers the process's health dict as JSON (200 when its ``status`` is
``ok``, else 503); ``GET /metrics`` the process's own prometheus registry; extra
``POST`` routes take the request body and extra ``GET`` routes nothing; both answer
``(status, JSON-able)``. A
``ThreadingHTTPServer`` in a daemon thread, on loopback by default.

>>> from prometheus_client import CollectorRegistry
>>> s = StatusServer(CollectorRegistry(), "127.0.0.1", 0).start()
>>> import json, urllib.request
>>> json.load(urllib.request.urlopen("http://{}:{}/healthz".format(*s.address)))
{'status': 'ok'}
>>> s.stop()
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_BODY = 1 << 20
Route = Callable[[bytes], tuple[int, Any]]
GetRoute = Callable[[], tuple[int, Any]]


class StatusServer:
    """``/healthz``, ``/metrics`` and optional POST routes, served from a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"},
        routes: Mapping[str, Route] | None = None,
        get_routes: Mapping[str, GetRoute] | None = None,
    ) -> None:
        self.registry = registry
        self.health = health
        self.routes = dict(routes or {})
        self.get_routes = dict(get_routes or {})
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="status-http",
                                       daemon=True)  # fmt: skip

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> StatusServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(server: StatusServer) -> type[BaseHTTPRequestHandler]:
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
            elif self.path in server.get_routes:
                self._json(*server.get_routes[self.path]())
            else:
                self._json(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            route = server.routes.get(self.path)
            if route is None:
                self._json(404, {"error": f"no such path {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(413, {"error": "request too large"})
                return
            self._json(*route(self.rfile.read(length)))

    return Handler
