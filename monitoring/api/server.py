"""One HTTP server for every long-running process: Starlette on uvicorn, in a thread.

``GET /healthz`` answers the process's health dict (200 when its ``status`` is ``ok``,
else 503); ``GET /metrics`` the process's own prometheus registry. Extra JSON routes:
a POST route takes the request body (bytes, already checked by the :class:`Guard`),
a GET route nothing; both answer ``(status, JSON-able)`` and run in a worker thread.
``mounts`` are Starlette routes of a whole protocol (their own request parsing and
response formats), behind the same guard.

>>> from prometheus_client import CollectorRegistry
>>> s = ApiServer(CollectorRegistry(), "127.0.0.1", 0).start()
>>> import httpx
>>> httpx.get("http://{}:{}/healthz".format(*s.address)).json()
{'status': 'ok'}
>>> s.stop()
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute

from monitoring.api.guard import Guard, Refused
from monitoring.config import ApiSettings
from monitoring.log import get_logger

PostRoute = Callable[[bytes], tuple[int, Any]]
GetRoute = Callable[[], tuple[int, Any]]

log = get_logger("api")


class ApiServer:
    """``/healthz``, ``/metrics`` and the given JSON routes behind one :class:`Guard`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"},
        routes: Mapping[str, PostRoute] | None = None,
        get_routes: Mapping[str, GetRoute] | None = None,
        guard: Guard | None = None,
        max_connections: int = 64,
        mounts: Sequence[BaseRoute] = (),
    ) -> None:
        self.registry = registry
        self.health = health
        self.guard = guard or Guard.for_bind(host)
        routes_: list[BaseRoute] = [
            StarletteRoute("/healthz", self._healthz, methods=["GET"]),
            StarletteRoute("/metrics", self._metrics, methods=["GET"]),
        ]
        routes_ += [
            StarletteRoute(path, self._post(fn), methods=["POST"])
            for path, fn in (routes or {}).items()
        ]
        routes_ += [
            StarletteRoute(path, self._get(fn), methods=["GET"])
            for path, fn in (get_routes or {}).items()
        ]
        routes_ += list(mounts)
        self.app = Starlette(routes=routes_, exception_handlers={Refused: _refused})
        self.app.add_middleware(_GuardMiddleware, guard=self.guard)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            http="h11",
            ws="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level="warning",
            timeout_keep_alive=5,
            limit_concurrency=max_connections,
            h11_max_incomplete_event_size=16 * 1024,
            server_header=False,
        )
        self.sock = _bind(host, port)  # OSError here when the port is taken
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="api-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def start(self, timeout: float = 10.0) -> ApiServer:
        """Serve from a daemon thread; returns once the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"HTTP server on {self.address} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(10)
        with contextlib.suppress(OSError):
            self.sock.close()

    async def _healthz(self, _request: Request) -> Response:
        h = await run_in_threadpool(self.health)
        return JSONResponse(h, status_code=200 if h.get("status") == "ok" else 503)

    async def _metrics(self, _request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def _post(self, fn: PostRoute) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await self.guard.body(request)
            return await _answer(fn, request, body)

        return endpoint

    def _get(self, fn: GetRoute) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await _answer(fn, request)

        return endpoint


async def _answer(fn: Callable[..., tuple[int, Any]], request: Request, *args: Any) -> Response:
    try:
        code, obj = await run_in_threadpool(fn, *args)
    except Exception as e:
        log.error("api_route_failed", path=request.url.path, error=repr(e)[:500])
        return JSONResponse({"error": "internal error"}, status_code=500)
    return JSONResponse(obj, status_code=code)


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket (uvicorn's own binder exits the process on failure).

    Created with ``IPPROTO_TCP`` so that asyncio sets ``TCP_NODELAY`` on every accepted
    connection (it checks the socket's protocol): without it a response written in two
    parts (headers, then body) waits for the client's delayed ACK, 40 ms on Linux, on
    every request of a kept-alive connection.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


class _GuardMiddleware:
    """Pure ASGI middleware: the guard's host, origin and token checks on every request."""

    def __init__(self, app: Any, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            try:
                self.guard.check(Request(scope))
            except Refused as e:
                await _refused(Request(scope), e)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refused(_request: Request, exc: Exception) -> Response:
    if isinstance(exc, Refused):
        return exc.response()
    return JSONResponse({"error": str(exc)}, status_code=400)


def serve(
    api: ApiSettings,
    registry: CollectorRegistry,
    host: str,
    port: int,
    health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"},
    routes: Mapping[str, PostRoute] | None = None,
    get_routes: Mapping[str, GetRoute] | None = None,
) -> ApiServer:
    """Start an :class:`ApiServer` guarded by the ``api`` settings.

    Raises ConfigError (off loopback without a token) or OSError (port taken).
    """
    guard = Guard.from_settings(api, host)
    return ApiServer(
        registry, host, port, health, routes, get_routes, guard, api.max_connections
    ).start()
