"""The Prometheus HTTP API (``/api/v1/...``) on the store's port.

``GET /api/v1/status/buildinfo`` answers Prometheus's shape, so clients that check
the server's version (Grafana does) accept it.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from monitoring.sinks.clickhouse.query_server import QueryServer

# The Prometheus release whose API (and PromQL) this follows; clients gate features on it.
PROMETHEUS_VERSION = "2.53.0"


def success(data: Any, warnings: list[str] | None = None) -> dict[str, Any]:
    """The API's success envelope."""
    out: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        out["warnings"] = warnings
    return out


def routes(server: QueryServer) -> list[BaseRoute]:
    """The API's routes on ``server``."""

    async def buildinfo(_request: Request) -> Response:
        return JSONResponse(
            success(
                {
                    "version": PROMETHEUS_VERSION,
                    "revision": f"monitoring-{version('monitoring')}",
                    "branch": "",
                    "buildUser": "",
                    "buildDate": "",
                    "goVersion": "",
                }
            )
        )

    return [Route("/api/v1/status/buildinfo", buildinfo, methods=["GET"])]
