"""ASGI middleware recording the HTTP RED metrics (``tracking.HttpMetrics``).

Usage with Starlette or FastAPI::

    mc = MetricsCollector(source="checkout")
    app = Starlette(routes=..., middleware=[
        Middleware(PerfMiddleware, metrics=HttpMetrics(mc, {"service": "checkout"}))])
    mc.start()   # collect every collection.interval

or around any ASGI application: ``PerfMiddleware(app, metrics=..., templates=[...])``.

The route is resolved before the application runs (from the Starlette application's
routes, ``templates``, or ``route_for(scope)``), so it is known even when the
application raises. The latency runs from the call to the application's return (the
whole body sent, streaming responses included). An exception raised through the
middleware counts as an error with status 500 (what Starlette's outer error handler
answers) unless a response had already started. Non-HTTP scopes pass through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from monitoring.perf.routes import Templates, starlette_route
from monitoring.perf.tracking import HttpMetrics

Scope = dict[str, Any]


class PerfMiddleware:
    """Pure ASGI middleware: one ``HttpMetrics`` observation per HTTP request."""

    def __init__(
        self,
        app: Any,
        metrics: HttpMetrics,
        templates: Sequence[str] | None = None,
        route_for: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = Templates(templates) if templates is not None else None
        self.route_for = route_for

    def route(self, scope: Scope) -> str | None:
        """The route template of a request, or None when nothing matches."""
        if self.route_for is not None:
            return self.route_for(scope)
        if self.templates is not None:
            return self.templates.match(scope.get("path", ""))
        routes = getattr(scope.get("app"), "routes", None) or getattr(self.app, "routes", None)
        return starlette_route(scope, routes) if routes else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.metrics
        t0 = time.perf_counter()
        method = m.started(str(scope.get("method", "")))
        status = 0
        error = False
        try:
            route = self.route(scope)
        except Exception:
            route = None

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException:
            error = True
            raise
        finally:
            m.finished(route, method, status or 500, time.perf_counter() - t0, error)
