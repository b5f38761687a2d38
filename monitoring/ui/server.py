"""``monitoring ui``'s server: the UI's routes on the project's :class:`ApiServer`,
behind its :class:`Guard`, with security headers on every answer.

Every answer carries a strict Content-Security-Policy (``script-src 'self'``, no
inline script, no eval), so even a label value that got into the page as markup could
not run; a 401 asks the browser for basic auth (the token as password).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.api.server import ApiServer
from monitoring.config import Settings
from monitoring.ui.app import UiApp
from monitoring.ui.dashboards import SHIPPED_DIR, DashboardStore
from monitoring.ui.store import StoreClient

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class _Headers:
    """Pure ASGI middleware: security headers on every answer; a 401 asks the browser
    for basic auth (the token as password), so a person can open a guarded UI."""

    def __init__(self, app: Any, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["monitoring.guard"] = self.guard

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if message["status"] == 401:
                    headers.append((b"www-authenticate", b'Basic realm="monitoring ui"'))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class UiServer:
    """The UI on an :class:`ApiServer`: ``start()``, ``address``, ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        host: str | None = None,
        port: int | None = None,
        store: StoreClient | None = None,
        shipped_dir: Path | None = SHIPPED_DIR,
        guard: Guard | None = None,
    ) -> None:
        ui = settings.ui
        host = ui.host if host is None else host
        port = ui.port if port is None else port
        registry = registry or CollectorRegistry()
        self.store = store or store_client(settings)
        self.ui = UiApp(
            settings, registry, self.store, DashboardStore(ui.dashboards_dir, shipped_dir)
        )
        guard = guard or Guard.from_settings(settings.api, host)
        self.server = ApiServer(
            registry, host, port, guard=guard, max_connections=settings.api.max_connections,
            mounts=self.ui.routes(),
        )  # fmt: skip
        self.server.app.add_middleware(_Headers, guard=guard)
        self.app = self.server.app

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> UiServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.ui.feed.closed = True  # live streams end within one poll
        self.server.stop()


def store_client(settings: Settings) -> StoreClient:
    """A client of the store the settings name (``ui.store_url``, else the store's
    query host and port), with ``api.token``."""
    st, ui = settings.storage, settings.ui
    url = ui.store_url or f"http://{st.query_host}:{st.query_port}"
    return StoreClient(
        url,
        settings.api.token.get_secret_value(),
        timeout_s=st.query.timeout.total_seconds() * 2 + 5,
        concurrency=ui.store_concurrency,
        max_response_bytes=ui.max_response_bytes,
    )
