"""WSGI middleware recording the HTTP RED metrics (``tracking.HttpMetrics``).

Usage::

    mc = MetricsCollector(source="legacy")
    app = WsgiPerfMiddleware(app, HttpMetrics(mc, {"service": "legacy"}),
                             templates=["/items/{id:int}", "/health"])
    mc.start()

WSGI has no routing standard: the route comes from ``templates`` (Starlette's syntax,
first match wins) or ``route_for(environ)``; anything else is ``unmatched``. The
latency runs from the call to the server's ``close()`` of the response iterable (PEP 3333
requires it), so the whole body is timed. An exception from the application, or while
its body is iterated, counts as an error with status 500 unless a status was set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from monitoring.perf.routes import Templates
from monitoring.perf.tracking import HttpMetrics

Environ = dict[str, Any]


class WsgiPerfMiddleware:
    """One ``HttpMetrics`` observation per request of a WSGI application."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        metrics: HttpMetrics,
        templates: Sequence[str] | None = None,
        route_for: Callable[[Environ], str | None] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = Templates(templates or [])
        self.route_for = route_for

    def route(self, environ: Environ) -> str | None:
        """The route template of a request, or None."""
        if self.route_for is not None:
            return self.route_for(environ)
        return self.templates.match(str(environ.get("PATH_INFO", "")))

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        t0 = time.perf_counter()
        method = self.metrics.started(str(environ.get("REQUEST_METHOD", "")))
        try:
            route = self.route(environ)
        except Exception:
            route = None
        state = _Request(self.metrics, route, method, t0)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            code = status.split(" ", 1)[0]
            state.status = int(code) if code.isascii() and code.isdigit() and len(code) == 3 else 0
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start)
        except BaseException:
            state.finish(error=True)
            raise
        return _Body(body, state)


class _Request:
    __slots__ = ("done", "method", "metrics", "route", "status", "t0")

    def __init__(self, metrics: HttpMetrics, route: str | None, method: str, t0: float) -> None:
        self.metrics = metrics
        self.route = route
        self.method = method
        self.t0 = t0
        self.status = 0
        self.done = False

    def finish(self, error: bool) -> None:
        if self.done:
            return
        self.done = True
        seconds = time.perf_counter() - self.t0
        self.metrics.finished(self.route, self.method, self.status or 500, seconds, error)


class _Body:
    """The application's body iterable; the request is recorded at ``close()``."""

    def __init__(self, body: Iterable[bytes], state: _Request) -> None:
        self.body = body
        self.state = state
        self.error = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.body
        except BaseException:
            self.error = True
            raise

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.state.finish(self.error)
