"""ClickHouse's HTTP interface on the store's port, as a ClickHouse server answers it.

``GET /ping`` answers ``Ok.`` (what clients and load balancers probe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from monitoring.sinks.clickhouse.query_server import QueryServer


def routes(server: QueryServer) -> list[BaseRoute]:
    """The interface's routes on ``server``."""

    async def ping(_request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    return [Route("/ping", ping, methods=["GET", "HEAD"])]
