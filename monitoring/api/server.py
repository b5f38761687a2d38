"""One HTTP server for every long-running process: Starlette on uvicorn, in a thread.

``GET /healthz`` answers the process's health dict (200 when its ``status`` is ``ok``,
else 503); ``GET /metrics`` the process's own prometheus registry. ``GET /-/healthy``
(liveness) and ``GET /-/ready`` (readiness) answer as Prometheus' do, 200 or 503, with
a small JSON body (``monitoring.api.health``): readiness is the health dict's
conventional fields plus the ``readiness`` callable's reasons (a broker that does not
answer, a lag over its bound: ``monitoring.ops.heartbeat``); ``?verbose`` adds the
whole health dict, and wants the token like any other route when one is set.

Extra JSON routes: a POST route takes the request body (bytes, already checked by the
:class:`Guard`), a GET route nothing; both answer ``(status, JSON-able)`` and run in a
worker thread. ``mounts`` are Starlette routes of a whole protocol (their own request parsing and
response formats), behind the same guard.

>>> from prometheus_client import CollectorRegistry
>>> s = ApiServer(CollectorRegistry(), "127.0.0.1", 0).start()
>>> import httpx
>>> httpx.get("http://{}:{}/healthz".format(*s.address)).json()
{'status': 'ok'}
>>> httpx.get("http://{}:{}/-/ready".format(*s.address)).json()
{'ready': True, 'reasons': []}
>>> s.stop()
"""

from __future__ import annotations

import contextlib
import hmac
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

from monitoring.api.guard import Guard, Refused, credential
from monitoring.api.health import bounded_reasons, is_alive, readiness_reasons
from monitoring.api.protocol import with_head_timeout
from monitoring.config import ApiSettings
from monitoring.log import get_logger

PostRoute = Callable[[bytes], tuple[int, Any]]
GetRoute = Callable[[], tuple[int, Any]]
Readiness = Callable[[], Sequence[str]]
"""Reasons the process is not ready beyond its health dict's (empty: none)."""

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
        readiness: Readiness | None = None,
    ) -> None:
        self.registry = registry
        self.health = health
        self.readiness = readiness  # may be set once the process's status runs
        self.guard = guard or Guard.for_bind(host)
        routes_: list[BaseRoute] = [
            StarletteRoute("/healthz", self._healthz, methods=["GET"]),
            StarletteRoute("/-/healthy", self._healthy, methods=["GET"]),
            StarletteRoute("/-/ready", self._ready, methods=["GET"]),
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
            http=with_head_timeout(self.guard.read_timeout_s),  # slow-loris
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

    async def _healthy(self, request: Request) -> Response:
        h = await run_in_threadpool(self.health)
        alive = is_alive(h)
        body: dict[str, Any] = {"status": "healthy" if alive else "unhealthy"}
        if not alive:
            body["reasons"] = readiness_reasons({"status": h.get("status")})
        return self._detailed(request, body, h, 200 if alive else 503)

    async def _ready(self, request: Request) -> Response:
        h, reasons = await run_in_threadpool(self.ready)
        body = {"ready": not reasons, "reasons": reasons}
        return self._detailed(request, body, h, 503 if reasons else 200)

    def ready(self) -> tuple[dict[str, Any], list[str]]:
        """The health dict and every reason the process is not ready (empty: ready)."""
        h = self.health()
        reasons = readiness_reasons(h)
        if self.readiness is not None:
            reasons = bounded_reasons(reasons + list(self.readiness()))
        return h, reasons

    def _detailed(
        self, request: Request, body: dict[str, Any], health: dict[str, Any], code: int
    ) -> Response:
        """``body``; with ``?verbose``, the health dict too (only with the token, if set:
        probes carry none, and the detail is for operators)."""
        if "verbose" in request.query_params:
            given = credential(request)
            token = self.guard.token
            if token and (given is None or not hmac.compare_digest(given.encode(), token.encode())):
                return JSONResponse({"error": "?verbose wants the token"}, status_code=401)
            body = {**body, "health": health}
        return JSONResponse(body, status_code=code)

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
    readiness: Readiness | None = None,
) -> ApiServer:
    """Start an :class:`ApiServer` guarded by the ``api`` settings.

    Raises ConfigError (off loopback without a token) or OSError (port taken).
    """
    guard = Guard.from_settings(api, host)
    return ApiServer(
        registry,
        host,
        port,
        health,
        routes,
        get_routes,
        guard,
        api.max_connections,
        readiness=readiness,
    ).start()
